//! The trainer role: policy optimisation (PPO-clip with GRPO / Dr.GRPO / RLOO / REINFORCE++
//! advantages computed by the caller, KL penalty to a reference with the k1 or k3 estimator, an
//! optional entropy bonus, the policy's entropy measured every step),
//! supervised fine-tuning for warm starts, AdamW with clipping, accumulation over micro-batches
//! and a warm-up schedule, checkpoints (model, optimizer, step), and its weights by name.

use super::optimizer::Updater;
pub use super::policy_batch::{Advantages, PolicyBatch};
pub use super::policy_objective::PolicyConfig;
pub use super::trainer_state::{TrainingPhase, TrainingState};
use super::weight_sync::{SyncSide, WeightSync};
use super::{ModelSource, ResponseBatch, WeightSet};
use crate::error::{ModelError, Result};
use crate::generate::{sequence_logprobs, sequence_logprobs_and_entropy};
use crate::model::Decoder;
use crate::train::engine_mismatch::{engine_mismatch, EngineMismatch};
use crate::train::losses::{aggregate, cross_entropy, kl, ppo_clip, Aggregation, PolicyStats};
use crate::train::optim::{accumulate, AdamW, AdamWConfig, Gradients, LrSchedule};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use troupe::data::Batch;
use troupe::pipeline::{StageCall, StageReceipt};

/// Everything a trainer is built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerConfig {
    pub source: ModelSource,
    pub pad_id: u32,
    pub optimizer: AdamWConfig,
    pub schedule: LrSchedule,
    /// Global gradient-norm clip (0 turns it off).
    pub max_grad_norm: f64,
    /// Rows per micro-batch for gradient accumulation (0: the whole batch at once).
    pub micro_batch: usize,
    pub policy: PolicyConfig,
}

impl TrainerConfig {
    /// A policy trainer from `source`: AdamW with its defaults at the constant rate `lr` (a
    /// phase sets its own schedule), the global gradient norm clipped at 1, no micro-batches.
    pub fn for_policy(source: ModelSource, pad_id: u32, lr: f64, policy: PolicyConfig) -> Self {
        TrainerConfig {
            source,
            pad_id,
            optimizer: AdamWConfig::default(),
            schedule: LrSchedule::constant(lr),
            max_grad_norm: 1.0,
            micro_batch: 0,
            policy,
        }
    }
}

/// One micro-batch's share of the policy loss and its figures.
struct PolicyLoss {
    /// Weighted by the micro-batch's share of the step's tokens (or rows).
    loss: Tensor,
    policy: PolicyStats,
    mean_kl: f64,
    mean_entropy: f64,
    mismatch: EngineMismatch,
    tokens: usize,
}

/// What one optimisation step did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepStats {
    pub step: u64,
    pub lr: f64,
    pub loss: f64,
    pub policy: PolicyStats,
    /// Mean per-token KL to the reference (estimator of the config).
    pub kl: f64,
    /// Mean per-token entropy of the policy over the trained responses (nats); with
    /// `skip_zero_advantage`, over the rows with signal only.
    #[serde(default)]
    pub entropy: f64,
    /// No rank had a row to train on (every group was flat): `entropy` measured nothing.
    #[serde(default)]
    pub nothing_trained: bool,
    /// The rollout engine's log-probabilities of the sampled tokens against the trainer's
    /// before the update (with synchronous rollouts, the same weights), and the TIS clipping.
    #[serde(default)]
    pub mismatch: EngineMismatch,
    pub grad_norm: f64,
    pub tokens: usize,
    /// The weight version after this step (updates applied since the model was built).
    pub version: u64,
}

pub struct Trainer {
    pub(super) model: Decoder,
    pub(super) updater: Updater,
    pub(super) config: TrainerConfig,
    /// The data-parallel group this trainer averages gradients with, once joined.
    data_parallel: Option<troupe::collective::TcpCommunicator>,
    /// The group it sends weights to rollouts through, once joined.
    weight_sync: Option<WeightSync>,
    /// Updates applied since the model was built, over every phase: the weights' version.
    pub(super) version: u64,
}

impl StepStats {
    /// The step's figures as step scalars (`loss`, `kl`, `clip_fraction`, ...).
    pub fn write_to(&self, meta: &mut troupe::data::StepMeta) {
        meta.set("loss", self.loss);
        meta.set("kl", self.kl);
        if !self.nothing_trained {
            meta.set("entropy", self.entropy);
        }
        meta.set("clip_fraction", self.policy.clip_fraction);
        if !self.nothing_trained {
            meta.set("logprob_abs_diff", self.mismatch.logprob_abs_diff);
            meta.set("engine_trainer_kl", self.mismatch.kl);
            meta.set("tis_clipped_share", self.mismatch.tis_clipped_share);
        }
        meta.set("approx_kl", self.policy.approx_kl);
        meta.set("grad_norm", self.grad_norm);
        meta.set("lr", self.lr);
        meta.add_count("trained_tokens", self.tokens as f64);
        meta.set("trained_version", self.version as f64);
    }
}

/// What a policy loss's sums are divided by: token counts for a token mean, row counts for
/// the others.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossDenominator {
    pub tokens: f64,
    pub rows: f64,
}

impl LossDenominator {
    /// A mean over ranks may be below 1 (2 rows over 3 ranks): only an empty count is replaced.
    fn tokens(&self) -> f64 {
        if self.tokens > 0.0 {
            self.tokens
        } else {
            1.0
        }
    }

    fn rows(&self) -> f64 {
        if self.rows > 0.0 {
            self.rows
        } else {
            1.0
        }
    }
}

fn scalar(x: &Tensor) -> Result<f64> {
    Ok(x.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl Trainer {
    pub fn from_model(model: Decoder, config: TrainerConfig) -> Self {
        let updater = Updater {
            vars: model.named_vars(),
            adam: AdamW::new(config.optimizer),
            schedule: config.schedule,
            max_grad_norm: config.max_grad_norm,
        };
        Trainer {
            model,
            updater,
            config,
            data_parallel: None,
            weight_sync: None,
            version: 0,
        }
    }

    pub fn model(&self) -> &Decoder {
        &self.model
    }

    /// Rows split into micro-batches.
    fn chunks(&self, rows: usize) -> Vec<std::ops::Range<usize>> {
        let size = if self.config.micro_batch == 0 {
            rows
        } else {
            self.config.micro_batch
        };
        (0..rows)
            .step_by(size.max(1))
            .map(|start| start..(start + size).min(rows))
            .collect()
    }

    /// One micro-batch's loss, weighted so that summing over micro-batches gives exactly the
    /// full batch's loss: token means weigh by the chunk's share of tokens, the other
    /// aggregations by its share of rows. The KL penalty and the entropy bonus are token means
    /// weighed the same way. Computing the entropy costs one pass over the vocabulary's
    /// log-probabilities (small for the recipes' 25-token vocabulary).
    fn policy_loss(
        &self,
        batch: &PolicyBatch,
        rows: std::ops::Range<usize>,
        over: LossDenominator,
    ) -> Result<PolicyLoss> {
        let pick = |values: &[Vec<u32>]| values[rows.clone()].to_vec();
        let (prompts, responses) = (pick(&batch.prompts), pick(&batch.responses));
        let tokens: usize = responses.iter().map(Vec::len).sum();
        let token_share = tokens as f64 / over.tokens();
        let row_share = rows.len() as f64 / over.rows();
        let shaped = ResponseBatch::new(&prompts, &responses, self.config.pad_id)?;
        let (dtype, device) = (self.model.dtype(), self.model.device().clone());
        let mask = shaped.mask(dtype, &device)?;
        let policy = &self.config.policy;
        let (logp, entropy) =
            sequence_logprobs_and_entropy(&self.model, &shaped.padded, policy.entropy_coef > 0.0)?;
        let engine = shaped.scatter(&batch.old_logprobs[rows.clone()], dtype, &device)?;
        // With TIS the PPO ratio is taken against the trainer's own log-probabilities and the
        // engine's enter only through the truncated weights.
        let current = logp.detach();
        let (mismatch, tis_weights) = engine_mismatch(&current, &engine, &mask, policy.tis_cap)?;
        let old = if tis_weights.is_some() {
            current
        } else {
            engine
        };
        let advantages = match &batch.advantages {
            Advantages::PerSequence(values) => {
                shaped.per_sequence(&values[rows.clone()], dtype, &device)?
            }
            Advantages::PerToken(values) => {
                Self::check_token_rows(&values[rows.clone()], &responses)?;
                shaped.scatter(&values[rows.clone()], dtype, &device)?
            }
        };
        let (loss, stats) = ppo_clip(
            &logp,
            &old,
            &advantages,
            &mask,
            policy.clip,
            policy.aggregation,
            tis_weights.as_ref(),
        )?;
        let policy_share = match policy.aggregation {
            Aggregation::TokenMean => token_share,
            Aggregation::SequenceMean | Aggregation::SumOverConstant(_) => row_share,
        };
        let mut weighted = (loss * policy_share)?;
        let mut mean_kl = 0.0;
        if let Some(reference) = &batch.ref_logprobs {
            let reference = shaped.scatter(&reference[rows.clone()], dtype, &device)?;
            let per_token = kl(&logp, &reference, policy.kl_estimator)?;
            let kl_term = aggregate(&per_token, &mask, Aggregation::TokenMean)?;
            mean_kl = scalar(&kl_term)?;
            if policy.kl_coef > 0.0 {
                weighted = (weighted + (kl_term * (policy.kl_coef * token_share))?)?;
            }
        }
        let entropy_term = aggregate(&entropy, &mask, Aggregation::TokenMean)?;
        let mean_entropy = scalar(&entropy_term)?;
        if policy.entropy_coef > 0.0 {
            weighted = (weighted - (entropy_term * (policy.entropy_coef * token_share))?)?;
        }
        Ok(PolicyLoss {
            loss: weighted,
            policy: stats,
            mean_kl,
            mean_entropy,
            mismatch,
            tokens,
        })
    }

    /// Per-token values must match their responses' lengths.
    fn check_token_rows(values: &[Vec<f32>], responses: &[Vec<u32>]) -> Result<()> {
        for (row, (values, response)) in values.iter().zip(responses).enumerate() {
            if values.len() != response.len() {
                return Err(ModelError::Input(format!(
                    "row {row}: {} per-token advantages for {} response tokens",
                    values.len(),
                    response.len()
                )));
            }
        }
        Ok(())
    }

    fn check_policy_batch(batch: &PolicyBatch) -> Result<()> {
        let rows = batch.prompts.len();
        let lengths = [
            batch.responses.len(),
            batch.old_logprobs.len(),
            batch.advantages.rows(),
        ];
        if rows == 0 || lengths.iter().any(|len| *len != rows) {
            return Err(ModelError::Input(format!(
                "policy batch: {rows} prompts, {} responses, {} log-prob rows, {} advantages",
                lengths[0], lengths[1], lengths[2]
            )));
        }
        if let Some(reference) = &batch.ref_logprobs {
            if reference.len() != rows {
                return Err(ModelError::Input(format!(
                    "{} reference rows for {rows} prompts",
                    reference.len()
                )));
            }
        }
        Ok(())
    }

    /// Gradients of the policy loss over the whole batch (accumulated over micro-batches,
    /// each weighted by its share of the batch's tokens or rows), without updating. Averaged
    /// over data-parallel ranks these are the whole step's only when every rank has the same
    /// counts; `policy_step` divides by the ranks' mean counts instead
    /// (`policy_gradients_over`), which is exact.
    pub fn policy_gradients(&self, batch: &PolicyBatch) -> Result<(Gradients, StepStats)> {
        let over = LossDenominator {
            tokens: batch.tokens() as f64,
            rows: batch.rows() as f64,
        };
        self.policy_gradients_over(batch, over)
    }

    /// Gradients of the policy loss of `batch`, its sums divided by `over` (this batch's own
    /// counts, or the mean counts of the data-parallel ranks' batches).
    pub fn policy_gradients_over(
        &self,
        batch: &PolicyBatch,
        over: LossDenominator,
    ) -> Result<(Gradients, StepStats)> {
        Self::check_policy_batch(batch)?;
        let mut total = Gradients::new();
        let mut stats = StepStats::default();
        for range in self.chunks(batch.rows()) {
            let PolicyLoss {
                loss,
                policy,
                mean_kl,
                mean_entropy,
                mismatch,
                tokens,
            } = self.policy_loss(batch, range, over)?;
            let token_share = tokens as f64 / over.tokens();
            accumulate(&mut total, self.updater.gradients(&loss)?)?;
            stats.loss += scalar(&loss)?;
            stats.kl += mean_kl * token_share;
            stats.entropy += mean_entropy * token_share;
            stats.policy.clip_fraction += policy.clip_fraction * token_share;
            stats.policy.approx_kl += policy.approx_kl * token_share;
            stats.mismatch.logprob_abs_diff += mismatch.logprob_abs_diff * token_share;
            stats.mismatch.kl += mismatch.kl * token_share;
            stats.mismatch.tis_clipped_share += mismatch.tis_clipped_share * token_share;
            stats.tokens += tokens;
        }
        stats.policy.loss = stats.loss;
        Ok((total, stats))
    }

    /// Applies gradients (from `policy_gradients`, possibly averaged across ranks).
    pub fn apply_gradients(&mut self, grads: Gradients) -> Result<(f64, f64)> {
        let update = self.updater.apply(grads)?;
        Ok((update.lr, update.grad_norm))
    }

    async fn policy_step_inner(&mut self, batch: PolicyBatch) -> Result<StepStats> {
        let batch = if self.config.policy.skip_zero_advantage {
            batch.without_zero_advantages()
        } else {
            batch
        };
        // The loss is a mean over all ranks' rows: each rank divides its sums by the ranks'
        // mean counts, so the average of the ranks' gradients is that of the whole step.
        let mut counts = [batch.tokens() as f64, batch.rows() as f64];
        if let Some(comm) = &self.data_parallel {
            super::data_parallel::average_values(comm, &mut counts).await?;
        }
        let over = LossDenominator {
            tokens: counts[0],
            rows: counts[1],
        };
        let (grads, stats) = if batch.rows() == 0 {
            (self.updater.zero_gradients()?, StepStats::default())
        } else {
            self.policy_gradients_over(&batch, over)?
        };
        let mut stats = self.step_with(grads, stats).await?;
        stats.nothing_trained = over.tokens == 0.0;
        Ok(stats)
    }

    /// After a step failed part-way (an input could not be fetched, a peer vanished), this rank
    /// leaves its data-parallel group, so the other ranks stop waiting for it at once instead
    /// of at their deadline; the group must then be formed again (`join_data_parallel`).
    fn leave_group_on_failure<T>(&self, outcome: Result<T>) -> Result<T> {
        if let (Err(err), Some(comm)) = (&outcome, &self.data_parallel) {
            comm.abort(&format!("this trainer's step failed: {err}"));
        }
        outcome
    }

    /// Averages gradients and step figures over the data-parallel group, if any, then steps.
    async fn step_with(&mut self, mut grads: Gradients, mut stats: StepStats) -> Result<StepStats> {
        if let Some(comm) = &self.data_parallel {
            super::data_parallel::average_gradients(comm, &mut grads).await?;
            let mut figures = [
                stats.loss,
                stats.kl,
                stats.entropy,
                stats.policy.clip_fraction,
                stats.policy.approx_kl,
                stats.mismatch.logprob_abs_diff,
                stats.mismatch.kl,
                stats.mismatch.tis_clipped_share,
            ];
            super::data_parallel::average_values(comm, &mut figures).await?;
            [
                stats.loss,
                stats.kl,
                stats.entropy,
                stats.policy.clip_fraction,
                stats.policy.approx_kl,
                stats.mismatch.logprob_abs_diff,
                stats.mismatch.kl,
                stats.mismatch.tis_clipped_share,
            ] = figures;
            stats.policy.loss = stats.loss;
        }
        let (lr, grad_norm) = self.apply_gradients(grads)?;
        self.version += 1;
        stats.lr = lr;
        stats.grad_norm = grad_norm;
        stats.step = self.updater.adam.step;
        stats.version = self.version;
        Ok(stats)
    }

    /// Gradients of the supervised loss over the whole batch (micro-batches weighted by tokens).
    pub fn sft_gradients(
        &self,
        prompts: &[Vec<u32>],
        targets: &[Vec<u32>],
    ) -> Result<(Gradients, StepStats)> {
        let rows = prompts.len();
        if rows == 0 || targets.len() != rows {
            return Err(ModelError::Input(format!(
                "{rows} prompts but {} targets",
                targets.len()
            )));
        }
        let total_tokens: usize = targets.iter().map(Vec::len).sum();
        let mut total = Gradients::new();
        let mut stats = StepStats::default();
        for range in self.chunks(rows) {
            // Cross-entropy is a token mean: weigh each micro-batch by its share of tokens.
            let tokens = targets[range.clone()].iter().map(Vec::len).sum::<usize>();
            let share = tokens as f64 / total_tokens.max(1) as f64;
            let shaped =
                ResponseBatch::new(&prompts[range.clone()], &targets[range], self.config.pad_id)?;
            let mask = shaped.mask(self.model.dtype(), self.model.device())?;
            let logp = sequence_logprobs(&self.model, &shaped.padded)?;
            let loss = cross_entropy(&logp, &mask)?;
            stats.loss += scalar(&loss)? * share;
            stats.tokens += tokens;
            accumulate(&mut total, self.updater.gradients(&(loss * share)?)?)?;
        }
        Ok((total, stats))
    }
}

#[troupe::actor]
impl Trainer {
    pub fn new(config: TrainerConfig) -> Result<Self> {
        config.policy.validate()?;
        Ok(Trainer::from_model(config.source.build()?, config))
    }

    /// Joins a data-parallel group of `world` trainers holding the same model: from now on each
    /// step averages gradients with the others (TCP all-reduce), so all take the same step.
    pub async fn join_data_parallel(
        &mut self,
        group: String,
        rank: usize,
        world: usize,
    ) -> Result<()> {
        let cluster = troupe::Cluster::current()?;
        let comm = troupe::collective::TcpCommunicator::rendezvous(
            &cluster,
            &group,
            rank,
            world,
            std::time::Duration::from_secs(120),
        )
        .await
        .map_err(|source| ModelError::Collective {
            context: format!("joining data-parallel group `{group}`"),
            source,
        })?;
        self.data_parallel = Some(comm);
        Ok(())
    }

    /// Joins a weight-sync group as source `index` of `sources` trainers sending to
    /// `destinations` rollouts (see `Rollout::join_weight_sync`).
    pub async fn join_weight_sync(
        &mut self,
        group: String,
        index: usize,
        sources: usize,
        destinations: usize,
    ) -> Result<()> {
        let sync = WeightSync::join(
            &group,
            SyncSide::Source(index),
            sources,
            destinations,
            &self.model,
            std::time::Duration::from_secs(120),
        )
        .await?;
        self.weight_sync = Some(sync);
        Ok(())
    }

    /// Sends this trainer's share of the current weights to the rollouts of its weight-sync
    /// group (they call `pull_weights` at the same time); returns the version sent.
    pub async fn push_weights(&self) -> Result<u64> {
        let sync = self
            .weight_sync
            .as_ref()
            .ok_or_else(|| ModelError::Input("push_weights before join_weight_sync".to_string()))?;
        sync.send(&self.model).await?;
        Ok(self.version)
    }

    /// Starts a new training phase (say, RL after a supervised warm start): fresh optimizer
    /// moments, step count and schedule. The weight version keeps counting.
    pub fn start_phase(
        &mut self,
        optimizer: AdamWConfig,
        schedule: LrSchedule,
        max_grad_norm: f64,
    ) {
        self.set_phase(TrainingPhase {
            optimizer,
            schedule,
            max_grad_norm,
        });
    }

    /// Sets the policy objective (clip, aggregation, KL, entropy bonus) for the steps that
    /// follow; an objective `PolicyConfig::validate` refuses leaves the current one in place.
    pub fn set_policy(&mut self, policy: PolicyConfig) -> Result<()> {
        policy.validate()?;
        self.config.policy = policy;
        Ok(())
    }

    /// One PPO-clip step on a batch of scored responses (this rank's share of the batch when
    /// data-parallel). With `skip_zero_advantage`, rows whose advantage is zero (every row of
    /// a group whose samples scored the same) are left out, their KL penalty and entropy bonus
    /// with them, so the step's `kl` and `entropy` are measured over the rows trained on (the
    /// bonus keeps diverse the groups that still teach); a step where no rank has a row left
    /// still updates (AdamW's momentum moves the weights) so that versions advance in step.
    pub async fn policy_step(&mut self, batch: PolicyBatch) -> Result<StepStats> {
        let outcome = self.policy_step_inner(batch).await;
        self.leave_group_on_failure(outcome)
    }

    /// Stage `train`: one PPO-clip step on this member's rows of the step (`prompt`, `response`,
    /// `old_logprob`, `advantage`, and `ref_logprob` for the KL penalty); the step's figures
    /// leave as step scalars, nothing per row.
    pub async fn train(&mut self, mut call: StageCall) -> Result<StageReceipt> {
        let batch = match call.inputs().await {
            Ok(batch) => batch,
            Err(err) => return self.leave_group_on_failure(Err(err.into())),
        };
        let stats = self.policy_step(PolicyBatch::from_columns(&batch)?).await?;
        let mut out = Batch::new(batch.rows());
        stats.write_to(out.step_meta_mut());
        Ok(call.finish(out)?)
    }

    /// One supervised step: maximise the likelihood of `targets` after `prompts`.
    pub async fn sft_step(
        &mut self,
        prompts: Vec<Vec<u32>>,
        targets: Vec<Vec<u32>>,
    ) -> Result<StepStats> {
        let (grads, stats) = self.sft_gradients(&prompts, &targets)?;
        let outcome = self.step_with(grads, stats).await;
        self.leave_group_on_failure(outcome)
    }

    /// Per-token log-probabilities of responses under the current policy.
    pub fn logprobs(
        &self,
        prompts: Vec<Vec<u32>>,
        responses: Vec<Vec<u32>>,
    ) -> Result<Vec<Vec<f32>>> {
        let shaped = ResponseBatch::new(&prompts, &responses, self.config.pad_id)?;
        shaped.gather(&sequence_logprobs(&self.model, &shaped.padded)?)
    }

    /// The policy's weights by name, with their version.
    pub fn weights(&self) -> Result<WeightSet> {
        WeightSet::from_model(&self.model, self.version)
    }

    /// Updates applied since the model was built.
    pub fn weight_version(&self) -> u64 {
        self.version
    }

    pub fn step(&self) -> u64 {
        self.updater.adam.step
    }

    /// Writes the model (Hugging Face layout), the optimizer state, the step, the version and
    /// the training phase to `dir`.
    pub fn save_checkpoint(&self, dir: PathBuf) -> Result<()> {
        self.write_checkpoint(&dir)
    }

    /// Restores what `save_checkpoint` wrote (weights, moments, step, version, phase); returns
    /// the optimizer step.
    pub fn load_checkpoint(&mut self, dir: PathBuf) -> Result<u64> {
        self.read_checkpoint(&dir)
    }

    /// Everything this trainer is (weights, optimizer moments, step, version, phase,
    /// objective), for a restarted data-parallel peer to take over.
    pub fn training_state(&self) -> Result<TrainingState> {
        self.export_state()
    }

    /// Becomes the trainer `state` was taken from; returns the weight version.
    pub fn restore_training_state(&mut self, state: TrainingState) -> Result<u64> {
        self.import_state(state)
    }
}
