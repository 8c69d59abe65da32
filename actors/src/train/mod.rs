//! Training: policy-gradient and value losses, advantage estimators, KL estimators, AdamW with
//! gradient clipping and accumulation, and learning-rate schedules.

pub mod advantages;
pub mod losses;
pub mod optim;
