//! `StepMeta`: what a whole batch shares, as verl's `meta_info`: the step it belongs to, the
//! weight version that made it, and named per-step figures that stages report to the driver
//! without a per-row column or a side channel: scalars (a loss, a mean reward: where several
//! members report one, the first, rank 0's, is kept) and counts (tokens generated: summed over
//! the members that report them).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Step-level metadata of a batch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepMeta {
    /// The step's index in its run.
    pub step: u64,
    /// The version of the policy weights the batch's samples were made with.
    pub weight_version: u64,
    /// Named figures of the step (say `loss`, `reward_mean`); merging keeps the first.
    pub scalars: BTreeMap<String, f64>,
    /// Named counts of the step (say `response_tokens`); merging sums them.
    #[serde(default)]
    pub counts: BTreeMap<String, f64>,
}

impl StepMeta {
    pub fn new(step: u64, weight_version: u64) -> Self {
        StepMeta {
            step,
            weight_version,
            scalars: BTreeMap::new(),
            counts: BTreeMap::new(),
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

    /// Adds to one count.
    pub fn add_count(&mut self, name: &str, value: f64) {
        *self.counts.entry(name.to_string()).or_insert(0.0) += value;
    }

    /// A count, if present.
    pub fn count(&self, name: &str) -> Option<f64> {
        self.counts.get(name).copied()
    }

    /// Adds `other`'s figures where `self` has none of that name, scalars and counts alike
    /// (what `Batch::merge` and `Batch::concat` do: pieces of one step carry copies of its
    /// figures, which must not add up).
    pub fn fill_from(&mut self, other: &StepMeta) {
        for (name, value) in &other.scalars {
            self.scalars.entry(name.clone()).or_insert(*value);
        }
        for (name, value) in &other.counts {
            self.counts.entry(name.clone()).or_insert(*value);
        }
    }

    /// Adds the figures another member reported for the same step: scalars where `self` has
    /// none of that name (the first reporter wins, as rank 0's figures do for a data-parallel
    /// group), counts summed.
    pub fn absorb(&mut self, other: &StepMeta) {
        for (name, value) in &other.scalars {
            self.scalars.entry(name.clone()).or_insert(*value);
        }
        for (name, value) in &other.counts {
            self.add_count(name, *value);
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
        mine.add_count("tokens", 3.0);
        theirs.add_count("tokens", 4.0);
        mine.absorb(&theirs);
        assert_eq!(mine.count("tokens"), Some(7.0));
        assert_eq!(mine.get("loss"), Some(1.0));
        assert_eq!(mine.get("kl"), Some(0.5));
        assert_eq!(mine.get("absent"), None);
    }
}
