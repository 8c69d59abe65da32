//! The critic role for PPO: the decoder with a scalar value head, giving a value before each
//! response token (stage `values`), turning the reward model's scores, the KL to the reference
//! and the values into GAE advantages and returns (stage `advantages`), and trained on the
//! returns with the clipped value loss (stage `train_critic`).

use super::columns::{
    ADVANTAGE, OLD_LOGPROB, PROMPT, REF_LOGPROB, RESPONSE, RETURN, RM_SCORE, VALUE,
};
use super::head::{head_with_updater, ScalarHead};
use super::optimizer::Updater;
use super::{ModelSource, ResponseBatch};
use crate::error::{ModelError, Result};
use crate::model::Decoder;
use crate::train::advantages::{gae, kl_shaped_rewards, whiten};
use crate::train::losses::value_loss;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use troupe::data::Batch;
use troupe::pipeline::{StageCall, StageReceipt};

/// How PPO's rewards and advantages are made from a step's scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaeSettings {
    /// Weight of the per-token KL penalty folded into the rewards.
    pub kl_coef: f32,
    pub gamma: f32,
    pub lambda: f32,
}

fn response_width(batch: &Batch) -> usize {
    batch
        .column(RESPONSE)
        .and_then(|c| c.row_shape.first())
        .map_or(0, |w| w.saturating_sub(1))
}

pub struct Critic {
    model: Decoder,
    head: ScalarHead,
    updater: Updater,
    pad_id: u32,
    value_clip: Option<f64>,
}

impl Critic {
    pub fn from_model(
        model: Decoder,
        pad_id: u32,
        lr: f64,
        value_clip: Option<f64>,
    ) -> Result<Self> {
        let (head, updater) = head_with_updater(&model, lr)?;
        Ok(Critic {
            model,
            head,
            updater,
            pad_id,
            value_clip,
        })
    }

    /// Values (b, t-1), column j being the value of the state that emits token j + 1.
    fn value_matrix(&self, shaped: &ResponseBatch) -> Result<Tensor> {
        let hidden = self.model.hidden_batch(&shaped.padded)?;
        let width = shaped.padded.width();
        self.head.forward(&hidden.narrow(1, 0, width - 1)?)
    }
}

#[troupe::actor]
impl Critic {
    pub fn new(source: ModelSource, pad_id: u32, lr: f64, value_clip: Option<f64>) -> Result<Self> {
        Critic::from_model(source.build()?, pad_id, lr, value_clip)
    }

    /// The value before each response token.
    pub fn token_values(
        &self,
        prompts: Vec<Vec<u32>>,
        responses: Vec<Vec<u32>>,
    ) -> Result<Vec<Vec<f32>>> {
        let shaped = ResponseBatch::new(&prompts, &responses, self.pad_id)?;
        shaped.gather(&self.value_matrix(&shaped)?)
    }

    /// Stage `values`: `prompt`, `response` -> `value`.
    pub async fn values(&self, mut call: StageCall) -> Result<StageReceipt> {
        let batch = call.inputs().await?;
        let values = self.token_values(batch.ragged_u32(PROMPT)?, batch.ragged_u32(RESPONSE)?)?;
        let width = response_width(&batch);
        let out = Batch::new(batch.rows()).with_ragged_f32(VALUE, &values, width.max(1))?;
        Ok(call.finish(out)?)
    }

    /// Stage `advantages`: `rm_score`, `old_logprob`, `ref_logprob`, `value` -> `advantage`,
    /// `return` (GAE over KL-shaped rewards, advantages whitened). Rewards are the scores
    /// standardised by the step scalars `score_mean` and `score_std` (the driver's calibration
    /// of the reward model). Step scalar `kl_sampled`: the mean per-token log-ratio of the
    /// sampling policy to the reference.
    pub async fn advantages(
        &self,
        mut call: StageCall,
        settings: GaeSettings,
    ) -> Result<StageReceipt> {
        let batch = call.inputs().await?;
        let calibration = |name: &str| {
            call.meta().get(name).ok_or_else(|| {
                ModelError::Input(format!(
                    "the step has no `{name}` scalar to standardise scores with"
                ))
            })
        };
        let (mean, std) = (
            calibration("score_mean")? as f32,
            calibration("score_std")? as f32,
        );
        let scores: Vec<f32> = batch
            .f32_values(RM_SCORE)?
            .iter()
            .map(|score| (score - mean) / std)
            .collect();
        let old = batch.ragged_f32(OLD_LOGPROB)?;
        let reference = batch.ragged_f32(REF_LOGPROB)?;
        let rewards = kl_shaped_rewards(&scores, &old, &reference, settings.kl_coef)?;
        let values = batch.ragged_f32(VALUE)?;
        let mut advantages = Vec::with_capacity(rewards.len());
        let mut returns = Vec::with_capacity(rewards.len());
        for (row_rewards, row_values) in rewards.iter().zip(&values) {
            let (advantage, ret) = gae(
                row_rewards,
                row_values,
                0.0,
                settings.gamma,
                settings.lambda,
            )?;
            advantages.push(advantage);
            returns.push(ret);
        }
        whiten(&mut advantages);
        let (mut kl_sum, mut tokens) = (0.0_f64, 0usize);
        for (o, r) in old.iter().zip(&reference) {
            for (a, b) in o.iter().zip(r) {
                kl_sum += f64::from(a - b);
                tokens += 1;
            }
        }
        let width = batch
            .column(VALUE)
            .and_then(|c| c.row_shape.first())
            .map_or(1, |w| w.saturating_sub(1).max(1));
        let mut out = Batch::new(batch.rows())
            .with_ragged_f32(ADVANTAGE, &advantages, width)?
            .with_ragged_f32(RETURN, &returns, width)?;
        out.step_meta_mut()
            .set("kl_sampled", kl_sum / tokens.max(1) as f64);
        Ok(call.finish(out)?)
    }

    /// Stage `train_critic`: one step towards `return`, `value` anchoring the clipping; step
    /// scalar `value_loss`.
    pub async fn train_values(&mut self, mut call: StageCall) -> Result<StageReceipt> {
        let batch = call.inputs().await?;
        let loss = self.train(
            batch.ragged_u32(PROMPT)?,
            batch.ragged_u32(RESPONSE)?,
            batch.ragged_f32(RETURN)?,
            batch.ragged_f32(VALUE)?,
        )?;
        let mut out = Batch::new(batch.rows());
        out.step_meta_mut().set("value_loss", loss);
        Ok(call.finish(out)?)
    }

    /// Takes the policy's decoder weights (the value head keeps its own).
    pub fn load_decoder_weights(&mut self, weights: super::WeightSet) -> Result<()> {
        weights.apply_to(&self.model)
    }

    /// Everything it learned (decoder, value head, optimizer), for a restart to take back.
    pub fn state(&self) -> Result<super::headed_state::HeadedState> {
        super::headed_state::export(&self.updater)
    }

    /// Becomes the critic `state` was taken from.
    pub fn restore_state(&mut self, state: super::headed_state::HeadedState) -> Result<()> {
        super::headed_state::import(&mut self.updater, state)
    }

    /// One step towards `returns` (per response token); `old_values` anchor the clipping.
    pub fn train(
        &mut self,
        prompts: Vec<Vec<u32>>,
        responses: Vec<Vec<u32>>,
        returns: Vec<Vec<f32>>,
        old_values: Vec<Vec<f32>>,
    ) -> Result<f64> {
        let shaped = ResponseBatch::new(&prompts, &responses, self.pad_id)?;
        let (dtype, device) = (self.model.dtype(), self.model.device().clone());
        let mask = shaped.mask(dtype, &device)?;
        let returns = shaped.scatter(&returns, dtype, &device)?;
        let old = shaped.scatter(&old_values, dtype, &device)?;
        let values = self.value_matrix(&shaped)?;
        let loss = value_loss(&values, &old, &returns, &mask, self.value_clip)?;
        let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        self.updater.step(&loss)?;
        Ok(value)
    }
}
