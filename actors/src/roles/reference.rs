//! The reference role: a frozen copy of the initial policy whose per-token log-probabilities
//! anchor the KL penalty (the pipeline's `reference` stage: for every row, or after the
//! advantages for the rows with signal only).

use super::columns::{PROMPT, REF_LOGPROB, RESPONSE};
use super::policy_batch::{kept, spread, Advantages};
use super::{ModelSource, ResponseBatch, WeightSet};
use crate::error::Result;
use crate::generate::sequence_logprobs;
use crate::model::Decoder;
use troupe::data::Batch;
use troupe::pipeline::{StageCall, StageReceipt};

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

    /// Stage `reference`: `prompt`, `response` -> `ref_logprob`; step scalar `reference_rows`
    /// (the rows scored).
    pub async fn logprobs(&self, mut call: StageCall) -> Result<StageReceipt> {
        let batch = call.inputs().await?;
        let responses = batch.ragged_u32(RESPONSE)?;
        let width = batch
            .column(RESPONSE)
            .and_then(|c| c.row_shape.first())
            .map_or(0, |w| w.saturating_sub(1));
        let logprobs = self.response_logprobs(&batch.ragged_u32(PROMPT)?, &responses)?;
        let mut out = Batch::new(batch.rows()).with_ragged_f32(REF_LOGPROB, &logprobs, width)?;
        out.step_meta_mut()
            .set("reference_rows", batch.rows() as f64);
        Ok(call.finish(out)?)
    }

    /// Stage `reference` placed after `advantages`: `prompt`, `response`, `advantage` ->
    /// `ref_logprob`, computed only for rows whose advantage is not zero; the others get an
    /// empty row. What a trainer that skips rows without signal reads: it never looks at the
    /// rows left empty, and the reference does not spend a forward pass on them. Step scalar
    /// `reference_rows`: the rows scored.
    pub async fn logprobs_with_signal(&self, mut call: StageCall) -> Result<StageReceipt> {
        let batch = call.inputs().await?;
        let keep = Advantages::from_column(&batch)?.signal_rows();
        let (prompts, responses) = (batch.ragged_u32(PROMPT)?, batch.ragged_u32(RESPONSE)?);
        let width = batch
            .column(RESPONSE)
            .and_then(|c| c.row_shape.first())
            .map_or(0, |w| w.saturating_sub(1));
        let kept_prompts = kept(prompts, &keep);
        let computed = match kept_prompts.is_empty() {
            true => Vec::new(),
            false => self.response_logprobs(&kept_prompts, &kept(responses, &keep))?,
        };
        let scored = computed.len();
        let logprobs = spread(computed, &keep);
        let mut out = Batch::new(batch.rows()).with_ragged_f32(REF_LOGPROB, &logprobs, width)?;
        out.step_meta_mut().set("reference_rows", scored as f64);
        Ok(call.finish(out)?)
    }

    /// Per-token log-probabilities of `responses` given `prompts` under the frozen model.
    pub fn token_logprobs(
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
