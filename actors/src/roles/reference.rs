//! The reference role: a frozen copy of the initial policy whose per-token log-probabilities
//! anchor the KL penalty.

use super::{ModelSource, ResponseBatch, WeightSet};
use crate::error::Result;
use crate::generate::sequence_logprobs;
use crate::model::Decoder;

/// A frozen policy.
pub struct Reference {
    model: Decoder,
    pad_id: u32,
}

impl Reference {
    pub fn from_model(model: Decoder, pad_id: u32) -> Self {
        Reference { model, pad_id }
    }

    /// log p_ref of each response token.
    pub fn response_logprobs(
        &self,
        prompts: &[Vec<u32>],
        responses: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>> {
        let batch = ResponseBatch::new(prompts, responses, self.pad_id)?;
        let logprobs = sequence_logprobs(&self.model, &batch.padded)?;
        batch.gather(&logprobs)
    }
}

#[troupe::actor]
impl Reference {
    pub fn new(source: ModelSource, pad_id: u32) -> Result<Self> {
        Ok(Reference::from_model(source.build()?, pad_id))
    }

    /// Per-token log-probabilities of `responses` given `prompts` under the frozen model.
    pub fn logprobs(
        &self,
        prompts: Vec<Vec<u32>>,
        responses: Vec<Vec<u32>>,
    ) -> Result<Vec<Vec<f32>>> {
        self.response_logprobs(&prompts, &responses)
    }

    /// Replaces the frozen weights (say, to re-anchor on the current policy).
    pub fn load_weights(&mut self, weights: WeightSet) -> Result<()> {
        weights.apply_to(&self.model)
    }
}
