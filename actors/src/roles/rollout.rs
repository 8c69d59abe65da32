//! The rollout role: generates responses for batches of prompts with the current policy (the
//! pipeline's `generate` stage), measures held-out success of a task on its own node, and takes
//! new weights (all of them, or a shard at a time) stamped with a version.

use super::columns::{OLD_LOGPROB, PROMPT, RESPONSE};
use super::weight_sync::{SyncSide, WeightSync};
use super::{ModelSource, WeightSet};
use crate::error::Result;
use crate::generate::{generate, Generation, SamplingConfig};
use crate::model::Decoder;
use crate::tasks::{Task, TaskSpec};
use troupe::data::Batch;
use troupe::pipeline::{StageCall, StageReceipt};

/// A generation engine holding one copy of the policy.
pub struct Rollout {
    model: Decoder,
    pad_id: u32,
    version: u64,
    weight_sync: Option<WeightSync>,
    /// The task of the last evaluation, kept so each one does not rebuild it.
    evaluated: Option<(TaskSpec, Box<dyn Task>)>,
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
    pub fn generate_tokens(
        &self,
        prompts: Vec<Vec<u32>>,
        sampling: SamplingConfig,
    ) -> Result<Generation> {
        generate(&self.model, &prompts, self.pad_id, &sampling, self.version)
    }

    /// Stage `generate`: `prompt` -> `response`, `old_logprob`, sampled with `sampling` (its
    /// seed mixed with the step and this member's rank, so every call draws afresh); step
    /// count `response_tokens` (tokens generated, summed over the rollouts).
    pub async fn generate(
        &self,
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
        let made = generate(
            &self.model,
            &batch.ragged_u32(PROMPT)?,
            self.pad_id,
            &sampling,
            self.version,
        )?;
        let tokens: usize = made.tokens.iter().map(Vec::len).sum();
        let mut out = Batch::new(batch.rows())
            .with_ragged_u32(RESPONSE, &made.tokens, width)?
            .with_ragged_f32(OLD_LOGPROB, &made.logprobs, width)?;
        let meta = out.step_meta_mut();
        meta.add_count("response_tokens", tokens as f64);
        // The version that really made the samples (a sync may land after the step began).
        meta.set("rollout_version", self.version as f64);
        Ok(call.finish(out)?)
    }

    /// How many of the task's held-out problems `from..to` this rollout answers right, greedily,
    /// and how many it judged: the problems, the answers and the judging stay on this node.
    pub fn evaluate(&mut self, task: TaskSpec, from: usize, to: usize) -> Result<(usize, usize)> {
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
        let problems = task
            .held_out()
            .get(from..to.min(task.held_out().len()))
            .unwrap_or(&[]);
        if problems.is_empty() {
            return Ok((0, 0));
        }
        let prompts = problems
            .iter()
            .map(|problem| task.prompt_ids(problem))
            .collect::<Result<Vec<_>>>()?;
        let sampling = greedy(task.answer_tokens(), task.tokenizer().eos_id());
        let made = generate(&self.model, &prompts, self.pad_id, &sampling, self.version)?;
        let mut correct = 0;
        for (problem, tokens) in problems.iter().zip(&made.tokens) {
            if task.is_correct(&task.tokenizer().decode(tokens)?, problem) {
                correct += 1;
            }
        }
        Ok((correct, problems.len()))
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
