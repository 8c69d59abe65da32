//! The rollout role: generates responses for batches of prompts with the current policy (the
//! pipeline's `generate` stage), measures held-out success of a task on its own node, and takes
//! new weights (all of them, or a shard at a time) stamped with a version. It generates with its
//! own candle decoder or with a vLLM engine it supervises (`RolloutEngine`); with vLLM the
//! decoder stays as the copy the weight sync writes into and the engine is checked against.

use super::columns::{OLD_LOGPROB, PROMPT, RESPONSE};
use super::weight_sync::{SyncSide, WeightSync};
use super::{ModelSource, WeightSet};
use crate::engines::vllm::{EngineStats, VllmConfig, VllmEngine};
use crate::error::Result;
use crate::generate::{generate, Generation, SamplingConfig};
use crate::model::Decoder;
use crate::tasks::{Task, TaskSpec};
use troupe::data::Batch;
use troupe::pipeline::{StageCall, StageReceipt};

/// What generates the rollout's samples.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub enum RolloutEngine {
    /// The rollout's own candle decoder, in the actor's process.
    #[default]
    Candle,
    /// A vLLM engine in a child process of the actor.
    Vllm(VllmConfig),
}

impl RolloutEngine {
    pub fn name(&self) -> &'static str {
        match self {
            RolloutEngine::Candle => "candle",
            RolloutEngine::Vllm(_) => "vllm",
        }
    }
}

/// A generation engine holding one copy of the policy.
pub struct Rollout {
    model: Decoder,
    pad_id: u32,
    version: u64,
    weight_sync: Option<WeightSync>,
    /// The task of the last evaluation, kept so each one does not rebuild it.
    evaluated: Option<(TaskSpec, Box<dyn Task>)>,
    /// The vLLM engine generating in place of `model`, when there is one.
    engine: Option<VllmEngine>,
}

/// Greedy decoding for answers of at most `max_new_tokens` tokens, stopping at `eos`.
pub fn greedy(max_new_tokens: usize, eos: Option<u32>) -> SamplingConfig {
    SamplingConfig {
        max_new_tokens,
        temperature: 0.0,
        stop_tokens: eos.into_iter().collect(),
        ..SamplingConfig::default()
    }
}

impl Rollout {
    pub fn from_model(model: Decoder, pad_id: u32) -> Self {
        Rollout {
            model,
            pad_id,
            version: 0,
            weight_sync: None,
            evaluated: None,
            engine: None,
        }
    }

    /// Applies weights; partial sets update only the parameters they name. An engine is given
    /// the result once the set is applied.
    pub async fn apply_weights(&mut self, weights: &WeightSet) -> Result<u64> {
        weights.apply_to(&self.model)?;
        self.version = weights.version;
        self.weights_changed().await?;
        Ok(self.version)
    }

    /// Hands the decoder's weights (as they now are) to the engine, if there is one.
    async fn weights_changed(&mut self) -> Result<()> {
        if let Some(engine) = self.engine.as_mut() {
            engine.load_weights(&self.model, self.version).await?;
        }
        Ok(())
    }

    /// Samples with the engine, or the decoder.
    async fn sample(
        &mut self,
        prompts: &[Vec<u32>],
        sampling: &SamplingConfig,
    ) -> Result<Generation> {
        match self.engine.as_mut() {
            Some(engine) => engine.generate(prompts, sampling).await,
            None => generate(&self.model, prompts, self.pad_id, sampling, self.version),
        }
    }

    pub fn model(&self) -> &Decoder {
        &self.model
    }
}

#[troupe::actor]
impl Rollout {
    /// A rollout of `source`'s policy generating with `engine` (started here: for vLLM this
    /// returns once the engine is ready).
    pub async fn new(source: ModelSource, pad_id: u32, engine: RolloutEngine) -> Result<Self> {
        let mut rollout = Rollout::from_model(source.build()?, pad_id);
        if let RolloutEngine::Vllm(config) = engine {
            rollout.engine = Some(VllmEngine::start(&rollout.model, 0, 0, config).await?);
        }
        Ok(rollout)
    }

    /// Responses, their per-token log-probabilities, and the weight version used.
    pub async fn generate_tokens(
        &mut self,
        prompts: Vec<Vec<u32>>,
        sampling: SamplingConfig,
    ) -> Result<Generation> {
        self.sample(&prompts, &sampling).await
    }

    /// Which engine generates (`candle` or `vllm`).
    pub fn engine_name(&self) -> String {
        match self.engine {
            Some(_) => "vllm".to_string(),
            None => "candle".to_string(),
        }
    }

    /// The engine's start time, restarts, last weight update and probe check (None with the
    /// candle decoder).
    pub fn engine_stats(&self) -> Option<EngineStats> {
        self.engine.as_ref().map(VllmEngine::stats)
    }

    /// Asks the engine (if any) whether it answers; starts it again if it does not. Returns
    /// the weight version served.
    pub async fn engine_health(&mut self) -> Result<u64> {
        match self.engine.as_mut() {
            Some(engine) => engine.health().await,
            None => Ok(self.version),
        }
    }

    /// The engine's log p(tokens[j] | tokens[..j]) for j >= 1 (the decoder's without one).
    pub async fn sequence_logprobs(&mut self, tokens: Vec<u32>) -> Result<Vec<f32>> {
        match self.engine.as_mut() {
            Some(engine) => engine.prompt_logprobs(&tokens).await,
            None => {
                let batch = crate::model::PaddedBatch::left_padded(&[tokens], self.pad_id)?;
                Ok(crate::generate::sequence_logprobs(&self.model, &batch)?
                    .to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?)
            }
        }
    }

    /// Stage `generate`: `prompt` -> `response`, `old_logprob`, sampled with `sampling` (its
    /// seed mixed with the step and this member's rank, so every call draws afresh); step
    /// count `response_tokens` (tokens generated, summed over the rollouts).
    pub async fn generate(
        &mut self,
        mut call: StageCall,
        sampling: SamplingConfig,
    ) -> Result<StageReceipt> {
        let batch = call.inputs().await?;
        let mut sampling = sampling;
        sampling.seed = sampling
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(call.step() * 64 + call.rank() as u64);
        let width = sampling.max_new_tokens;
        let made = self.sample(&batch.ragged_u32(PROMPT)?, &sampling).await?;
        let tokens: usize = made.tokens.iter().map(Vec::len).sum();
        let mut out = Batch::new(batch.rows())
            .with_ragged_u32(RESPONSE, &made.tokens, width)?
            .with_ragged_f32(OLD_LOGPROB, &made.logprobs, width)?;
        let meta = out.step_meta_mut();
        meta.add_count("response_tokens", tokens as f64);
        // The version that really made the samples (a sync may land after the step began).
        meta.set("rollout_version", self.version as f64);
        if let Some(stats) = self.engine_stats() {
            meta.set("engine_weight_update_ms", stats.weight_update_ms);
            meta.set("engine_probe_abs_diff", stats.probe_abs_diff);
            meta.set("engine_restarts", f64::from(stats.restarts));
        }
        Ok(call.finish(out)?)
    }

    /// How many of the task's held-out problems `from..to` this rollout answers right, greedily,
    /// and how many it judged: the problems, the answers and the judging stay on this node.
    pub async fn evaluate(
        &mut self,
        task: TaskSpec,
        from: usize,
        to: usize,
    ) -> Result<(usize, usize)> {
        if self
            .evaluated
            .as_ref()
            .is_none_or(|(spec, _)| *spec != task)
        {
            let built = task.build()?;
            self.evaluated = Some((task, built));
        }
        let Some((_, task)) = &self.evaluated else {
            return Ok((0, 0));
        };
        let end = to.min(task.held_out().len());
        let range = from.min(end)..end;
        if range.is_empty() {
            return Ok((0, 0));
        }
        let prompts = task.held_out()[range.clone()]
            .iter()
            .map(|problem| task.prompt_ids(problem))
            .collect::<Result<Vec<_>>>()?;
        let sampling = greedy(task.answer_tokens(), task.tokenizer().eos_id());
        let made = self.sample(&prompts, &sampling).await?;
        let Some((_, task)) = &self.evaluated else {
            return Ok((0, 0));
        };
        let mut correct = 0;
        for (problem, tokens) in task.held_out()[range.clone()].iter().zip(&made.tokens) {
            if task.is_correct(&task.tokenizer().decode(tokens)?, problem) {
                correct += 1;
            }
        }
        Ok((correct, range.len()))
    }

    /// Takes new weights; returns the version now served.
    pub async fn load_weights(&mut self, weights: WeightSet) -> Result<u64> {
        self.apply_weights(&weights).await
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
        self.weights_changed().await?;
        Ok(version)
    }
}
