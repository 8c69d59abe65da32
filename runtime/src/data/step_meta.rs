//! `StepMeta`: what a whole batch shares, as verl's `meta_info`: the step it belongs to, the
//! weight version that made it, and named per-step scalars (a loss, a mean reward, a token
//! count) that stages report to the driver without a per-row column or a side channel.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Step-level metadata of a batch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepMeta {
    /// The step's index in its run.
    pub step: u64,
    /// The version of the policy weights the batch's samples were made with.
    pub weight_version: u64,
    /// Named figures of the step (say `loss`, `reward_mean`).
    pub scalars: BTreeMap<String, f64>,
}

impl StepMeta {
    pub fn new(step: u64, weight_version: u64) -> Self {
        StepMeta {
            step,
            weight_version,
            scalars: BTreeMap::new(),
        }
    }

    /// Sets (or replaces) one scalar.
    pub fn set(&mut self, name: &str, value: f64) {
        self.scalars.insert(name.to_string(), value);
    }

    /// A scalar, if present.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.scalars.get(name).copied()
    }

    /// Adds `other`'s scalars; where both hold a name, `self`'s value stays (the first
    /// reporter wins, as rank 0's figures do for a data-parallel group).
    pub fn absorb(&mut self, other: &StepMeta) {
        for (name, value) in &other.scalars {
            self.scalars.entry(name.clone()).or_insert(*value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reporter_wins_and_new_names_are_added() {
        let mut mine = StepMeta::new(3, 7);
        mine.set("loss", 1.0);
        let mut theirs = StepMeta::new(3, 7);
        theirs.set("loss", 2.0);
        theirs.set("kl", 0.5);
        mine.absorb(&theirs);
        assert_eq!(mine.get("loss"), Some(1.0));
        assert_eq!(mine.get("kl"), Some(0.5));
        assert_eq!(mine.get("absent"), None);
    }
}
