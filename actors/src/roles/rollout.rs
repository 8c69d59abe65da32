//! The rollout role: generates responses for batches of prompts with the current policy, and
//! takes new weights (all of them, or a shard at a time) stamped with a version.

use super::weight_sync::{SyncSide, WeightSync};
use super::{ModelSource, WeightSet};
use crate::error::Result;
use crate::generate::{generate, Generation, SamplingConfig};
use crate::model::Decoder;

/// A generation engine holding one copy of the policy.
pub struct Rollout {
    model: Decoder,
    pad_id: u32,
    version: u64,
    weight_sync: Option<WeightSync>,
}

impl Rollout {
    pub fn from_model(model: Decoder, pad_id: u32) -> Self {
        Rollout {
            model,
            pad_id,
            version: 0,
            weight_sync: None,
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

    /// The weights it serves, with their version.
    pub fn weights(&self) -> Result<WeightSet> {
        WeightSet::from_model(&self.model, self.version)
    }

    /// Joins a weight-sync group as destination `index` of `destinations` rollouts fed by
    /// `sources` trainers (see `Trainer::join_weight_sync`).
    pub async fn join_weight_sync(
        &mut self,
        group: String,
        index: usize,
        sources: usize,
        destinations: usize,
    ) -> Result<()> {
        let sync = WeightSync::join(
            &group,
            SyncSide::Destination(index),
            sources,
            destinations,
            &self.model,
            std::time::Duration::from_secs(120),
        )
        .await?;
        self.weight_sync = Some(sync);
        Ok(())
    }

    /// Receives the weights the trainers push (they call `push_weights` at the same time),
    /// stamps them `version`, and returns it.
    pub async fn pull_weights(&mut self, version: u64) -> Result<u64> {
        let sync = self.weight_sync.as_ref().ok_or_else(|| {
            crate::error::ModelError::Input("pull_weights before join_weight_sync".to_string())
        })?;
        sync.receive(&self.model).await?;
        self.version = version;
        Ok(version)
    }
}
