//! The RL roles as troupe actors: the prompt source, rollout (generation), reference (frozen
//! log-probs), reward (weighted reward functions and group advantages; a learned reward model),
//! trainer (policy optimisation, SFT, checkpoints) and critic (values for PPO), plus the weight
//! sync from trainers to rollouts. Their pipeline stages take a `StageCall` and read and write
//! the columns of `columns`. Each is also a plain Rust type usable in-process.

pub mod batch;
pub mod columns;
pub mod critic;
mod data_parallel;
mod head;
pub mod headed_state;
mod optimizer;
pub mod policy_batch;
mod policy_objective;
pub mod prompts;
pub mod reference;
pub mod reward;
pub mod reward_model;
pub mod rollout;
mod source;
pub mod trainer;
mod trainer_state;
pub mod weight_sync;

pub use batch::{NamedTensor, ResponseBatch, WeightSet};
pub use source::ModelSource;
