//! Weight resharding: moving a model from the layout its trainers hold it in (FSDP shards,
//! tensor-parallel pieces, replicas) to the layout its rollout engines need, with each
//! destination byte sent exactly once, the load spread over source replicas, transfers grouped
//! in bounded buckets, and the plan computed once per pair of layouts.
//!
//! Pure planning lives in `boxes`, `layout` and `plan`; `local` applies a plan between buffers in
//! one process (tests and simulations); `execute` runs it over any `Communicator`.

pub mod boxes;
pub mod execute;
pub mod layout;
pub mod local;
pub mod plan;

pub use execute::{execute, execute_from_shared, Moved, RankMap};
pub use layout::{megatron_rule, Layout, LayoutSpec, ParamSpec, Placement};
pub use plan::{plan, Bucket, Plan, PlanCache, Transfer, DEFAULT_BUCKET_BYTES};

/// A layout or plan that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReshardError {
    #[error("layout: {0}")]
    Layout(String),
    #[error("buffer: {0}")]
    Buffer(String),
}

#[cfg(test)]
mod tests;
