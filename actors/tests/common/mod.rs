//! Helpers shared by the recipes' multi-process tests (`recipes.rs`, `faults.rs`).

use troupe_actors::recipes::warm_start::WarmStartConfig;

/// Three supervised steps: the recipes' tests need a warm start, not a good one.
pub fn short_warm_start() -> WarmStartConfig {
    WarmStartConfig {
        batch: 16,
        max_steps: 3,
        eval_every: 3,
        target_accuracy: 1.0,
        ..WarmStartConfig::default()
    }
}
