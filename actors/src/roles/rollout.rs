//! The rollout role: generates responses for batches of prompts with the current policy, and
//! takes new weights (all of them, or a shard at a time) stamped with a version.

use super::{ModelSource, WeightSet};
use crate::error::Result;
use crate::generate::{generate, Generation, SamplingConfig};
use crate::model::Decoder;

/// A generation engine holding one copy of the policy.
pub struct Rollout {
    model: Decoder,
    pad_id: u32,
    version: u64,
}

impl Rollout {
    pub fn from_model(model: Decoder, pad_id: u32) -> Self {
        Rollout {
            model,
            pad_id,
            version: 0,
        }
    }

    /// Applies weights; partial sets update only the parameters they name.
    pub fn apply_weights(&mut self, weights: &WeightSet) -> Result<u64> {
        weights.apply_to(&self.model)?;
        self.version = weights.version;
        Ok(self.version)
    }

    pub fn model(&self) -> &Decoder {
        &self.model
    }
}

#[troupe::actor]
impl Rollout {
    pub fn new(source: ModelSource, pad_id: u32) -> Result<Self> {
        Ok(Rollout::from_model(source.build()?, pad_id))
    }

    /// Responses, their per-token log-probabilities, and the weight version used.
    pub fn generate(&self, prompts: Vec<Vec<u32>>, sampling: SamplingConfig) -> Result<Generation> {
        generate(&self.model, &prompts, self.pad_id, &sampling, self.version)
    }

    /// Takes new weights; returns the version now served.
    pub fn load_weights(&mut self, weights: WeightSet) -> Result<u64> {
        self.apply_weights(&weights)
    }

    pub fn weight_version(&self) -> u64 {
        self.version
    }
}
