//! Training: policy-gradient and value losses, advantage estimators, KL estimators, AdamW with
//! gradient clipping and accumulation, learning-rate schedules, and the rollout engine's
//! mismatch with the trainer and its correction.

pub mod advantages;
pub mod engine_mismatch;
pub mod losses;
pub mod optim;
