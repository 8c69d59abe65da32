//! A learned reward model: the decoder with a scalar head read at each sequence's last token,
//! trained with the Bradley-Terry loss on preference pairs.

use super::columns::{PROMPT, RESPONSE, RM_SCORE};
use super::head::{head_with_updater, ScalarHead};
use super::optimizer::Updater;
use super::ModelSource;
use crate::error::{ModelError, Result};
use crate::model::{Decoder, PaddedBatch};
use crate::train::losses::bradley_terry;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use troupe::data::Batch;
use troupe::pipeline::{StageCall, StageReceipt};

/// One preference-training step's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreferenceStats {
    pub loss: f64,
    /// Share of pairs where the chosen sequence already scores higher.
    pub accuracy: f64,
    pub grad_norm: f64,
}

pub struct RewardModel {
    model: Decoder,
    head: ScalarHead,
    updater: Updater,
    pad_id: u32,
}

impl RewardModel {
    pub fn from_model(model: Decoder, pad_id: u32, lr: f64) -> Result<Self> {
        let (head, updater) = head_with_updater(&model, lr)?;
        Ok(RewardModel {
            model,
            head,
            updater,
            pad_id,
        })
    }

    /// Scores (b) at each sequence's last token (sequences are left-padded, so the last column).
    fn scores(&self, sequences: &[Vec<u32>]) -> Result<Tensor> {
        let batch = PaddedBatch::left_padded(sequences, self.pad_id)?;
        let hidden = self.model.hidden_batch(&batch)?;
        let last = hidden.narrow(1, batch.width() - 1, 1)?;
        Ok(self.head.forward(&last)?.squeeze(1)?)
    }
}

#[troupe::actor]
impl RewardModel {
    pub fn new(source: ModelSource, pad_id: u32, lr: f64) -> Result<Self> {
        RewardModel::from_model(source.build()?, pad_id, lr)
    }

    /// One scalar reward per sequence (prompt + response tokens).
    pub fn score(&self, sequences: Vec<Vec<u32>>) -> Result<Vec<f32>> {
        Ok(self
            .scores(&sequences)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?)
    }

    /// Stage `score`: `prompt`, `response` -> `rm_score`; step scalar `rm_score_mean`.
    pub async fn score_responses(&self, mut call: StageCall) -> Result<StageReceipt> {
        let batch = call.inputs().await?;
        let sequences: Vec<Vec<u32>> = batch
            .ragged_u32(PROMPT)?
            .into_iter()
            .zip(batch.ragged_u32(RESPONSE)?)
            .map(|(mut prompt, response)| {
                prompt.extend(response);
                prompt
            })
            .collect();
        let scores = self.score(sequences)?;
        let mean = scores.iter().map(|s| f64::from(*s)).sum::<f64>() / scores.len().max(1) as f64;
        let mut out = Batch::new(batch.rows()).with_f32(RM_SCORE, &[], &scores)?;
        out.step_meta_mut().set("rm_score_mean", mean);
        Ok(call.finish(out)?)
    }

    /// Takes the policy's decoder weights (the scalar head keeps its own).
    pub fn load_decoder_weights(&mut self, weights: super::WeightSet) -> Result<()> {
        weights.apply_to(&self.model)
    }

    /// Everything it learned (decoder, score head, optimizer), for a restart to take back.
    pub fn state(&self) -> Result<super::headed_state::HeadedState> {
        super::headed_state::export(&self.updater)
    }

    /// Becomes the reward model `state` was taken from.
    pub fn restore_state(&mut self, state: super::headed_state::HeadedState) -> Result<()> {
        super::headed_state::import(&mut self.updater, state)
    }

    /// One Bradley-Terry step on pairs (chosen[i] preferred over rejected[i]).
    pub fn train_pairs(
        &mut self,
        chosen: Vec<Vec<u32>>,
        rejected: Vec<Vec<u32>>,
    ) -> Result<PreferenceStats> {
        if chosen.len() != rejected.len() || chosen.is_empty() {
            return Err(ModelError::Input(format!(
                "{} chosen but {} rejected sequences",
                chosen.len(),
                rejected.len()
            )));
        }
        let good = self.scores(&chosen)?;
        let bad = self.scores(&rejected)?;
        let loss = bradley_terry(&good, &bad)?;
        let wins = good
            .gt(&bad)?
            .to_dtype(candle_core::DType::F32)?
            .mean_all()?
            .to_scalar::<f32>()? as f64;
        let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        let update = self.updater.step(&loss)?;
        Ok(PreferenceStats {
            loss: value,
            accuracy: wins,
            grad_norm: update.grad_norm,
        })
    }
}
