//! What RL recipes are made of, as library code the examples and tests share: the policy's
//! trainer and rollout groups and the weight-sync edge between them (`policy`), the supervised
//! warm start (`warm_start`) and its copy on disk that runs can start from (`saved_warm_start`),
//! the record of a run, from its first step to its plot (`run_log`,
//! with `metrics`, `progress`, `plot`), GRPO's settings and report (`grpo`; the algorithm reads
//! top to bottom in `examples/grpo_arithmetic.rs`), and PPO against a learned reward model
//! (`ppo`).

pub mod error;
pub mod faults;
pub mod glyphs;
pub mod grpo;
pub mod metrics;
pub mod plot;
pub mod policy;
pub mod ppo;
pub mod progress;
pub mod recovery;
pub mod resilient;
pub mod run_log;
pub mod saved_warm_start;
pub mod warm_start;

pub use error::{RecipeError, Result};
