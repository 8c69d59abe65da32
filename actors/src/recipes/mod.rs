//! The recipes the examples run, as library code so tests can drive them: GRPO on three-digit
//! addition (`grpo`) and PPO against a learned reward model (`ppo`), with what they share: the
//! cluster and actor set-up, the supervised warm start, held-out evaluation, weight sync
//! (`setup`, `warm_start`), and how a run is shown and recorded (`progress`, `record`, `metrics`,
//! `plot`).

pub mod glyphs;
pub mod grpo;
pub mod metrics;
pub mod plot;
pub mod ppo;
pub mod progress;
pub mod record;
pub mod setup;
pub mod shared_stages;
pub mod warm_start;

pub use setup::RecipeError;
