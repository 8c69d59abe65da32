//! The RL roles as troupe actors: rollout (generation), reference (frozen log-probs), reward
//! (rule-based verifiers and a learned reward model), trainer (policy optimisation, SFT,
//! checkpoints) and critic (values for PPO), plus the weight sync from trainers to rollouts.
//! Each is also a plain Rust type usable in-process.

pub mod batch;
pub mod critic;
mod data_parallel;
mod head;
mod optimizer;
pub mod reference;
pub mod reward;
pub mod reward_model;
pub mod rollout;
mod source;
pub mod trainer;
pub mod weight_sync;

pub use batch::{NamedTensor, ResponseBatch, WeightSet};
pub use source::ModelSource;
