//! The GRPO dataflow graph: `generate` (rollout group, rows split over its members) makes
//! responses and their sampling log-probabilities; `score` (reward actor) rewards them and turns
//! the rewards into group-relative advantages; `reference` (reference actor) gives the frozen
//! policy's log-probabilities; `train` (trainer group, rows split, gradients all-reduced) takes
//! one PPO-clip step. Weights then flow from the trainers to the rollouts over the weight-sync
//! edge. Columns are ragged token and log-probability rows; each row's answer travels in its
//! metadata.

use super::super::shared_stages::{generate, reference_logprobs, STEP_KEY};
use crate::roles::reference::ReferenceHandle;
use crate::roles::reward::RuleRewardHandle;
use crate::roles::rollout::RolloutHandle;
use crate::roles::trainer::{Advantages, PolicyBatch, StepStats, TrainerHandle};
use crate::tasks::arithmetic::Problem;
use crate::train::advantages::grpo;
use std::sync::{Arc, Mutex};
use troupe::data::Batch;
use troupe::pipeline::{Dispatch, Pipeline, PipelineBuilder, PipelineError};
use troupe::ActorGroup;

/// Width of the prompt column: `<bos>` and `ddd+ddd=`, with room to spare.
pub const PROMPT_TOKENS: usize = 12;

/// Metadata key of each row's answer.
pub const ANSWER_KEY: &str = "answer";

/// What the stages need besides their actors.
#[derive(Debug, Clone)]
pub struct StageSettings {
    pub group_size: usize,
    pub temperature: f32,
    pub seed: u64,
}

/// The actors of the graph.
#[derive(Clone)]
pub struct GrpoActors {
    pub rollouts: ActorGroup<RolloutHandle>,
    pub trainers: ActorGroup<TrainerHandle>,
    pub reference: ReferenceHandle,
    pub reward: RuleRewardHandle,
}

/// The source batch of one step: each problem's prompt `group_size` times, the answer in the
/// row metadata along with the step.
pub fn step_input(
    problems: &[Problem],
    group_size: usize,
    step: usize,
) -> Result<Batch, PipelineError> {
    let mut prompts = Vec::with_capacity(problems.len() * group_size);
    let mut answers = Vec::with_capacity(problems.len() * group_size);
    for problem in problems {
        for _ in 0..group_size {
            prompts.push(problem.prompt_tokens());
            answers.push(problem.answer_text());
        }
    }
    let mut batch = Batch::new(prompts.len())
        .with_ragged_u32("prompt", &prompts, PROMPT_TOKENS)
        .map_err(|err| run_error("(input)", err))?;
    for (meta, answer) in batch.meta_mut().iter_mut().zip(answers) {
        meta.insert(ANSWER_KEY.to_string(), answer);
        meta.insert(STEP_KEY.to_string(), step.to_string());
    }
    Ok(batch)
}

fn run_error(stage: &str, err: impl std::fmt::Display) -> PipelineError {
    PipelineError::Run {
        stage: stage.to_string(),
        why: err.to_string(),
    }
}

fn invalid(err: impl std::fmt::Display) -> troupe::Error {
    troupe::Error::Invalid {
        what: "GRPO batch".to_string(),
        why: err.to_string(),
    }
}

/// Builds the graph. The train stage leaves rank 0's step figures in `stats`.
pub fn build(
    actors: &GrpoActors,
    settings: &StageSettings,
    stats: Arc<Mutex<Option<StepStats>>>,
) -> Result<Pipeline, PipelineError> {
    let trainers = actors.trainers.clone();
    let reward = actors.reward.clone();
    let group_size = settings.group_size;
    PipelineBuilder::new()
        .group("rollout", actors.rollouts.world_size())
        .group("reward", 1)
        .group("reference", 1)
        .group("trainer", actors.trainers.world_size())
        .source(&["prompt"])
        .stage(
            "generate",
            "rollout",
            Dispatch::Split,
            &["prompt"],
            &["response", "old_logprob"],
            generate(actors.rollouts.clone(), settings.temperature, settings.seed),
        )
        .stage(
            "score",
            "reward",
            Dispatch::RankZero,
            &["response"],
            &["reward", "advantage"],
            move |_, batch| {
                let reward = reward.clone();
                Box::pin(async move {
                    let responses = batch.ragged_u32("response")?;
                    let answers: Vec<String> = batch
                        .meta()
                        .iter()
                        .map(|meta| meta.get(ANSWER_KEY).cloned().unwrap_or_default())
                        .collect();
                    let rewards = reward.score_tokens(responses, answers).await?;
                    let advantages = grpo(&rewards, group_size, true, 1e-6).map_err(invalid)?;
                    Ok(Batch::new(batch.rows())
                        .with_f32("reward", &[], &rewards)?
                        .with_f32("advantage", &[], &advantages)?)
                })
            },
        )
        .stage(
            "reference",
            "reference",
            Dispatch::RankZero,
            &["prompt", "response"],
            &["ref_logprob"],
            reference_logprobs(actors.reference.clone()),
        )
        .stage(
            "train",
            "trainer",
            Dispatch::Split,
            &[
                "prompt",
                "response",
                "old_logprob",
                "ref_logprob",
                "advantage",
            ],
            &["policy_loss"],
            move |rank, batch| {
                let member = trainers.rank(rank).cloned();
                let stats = stats.clone();
                Box::pin(async move {
                    let member =
                        member.ok_or_else(|| invalid(format!("no trainer rank {rank}")))?;
                    let policy_batch = PolicyBatch {
                        prompts: batch.ragged_u32("prompt")?,
                        responses: batch.ragged_u32("response")?,
                        old_logprobs: batch.ragged_f32("old_logprob")?,
                        ref_logprobs: Some(batch.ragged_f32("ref_logprob")?),
                        advantages: Advantages::PerSequence(batch.f32_values("advantage")?),
                    };
                    let step = member.policy_step(policy_batch).await?;
                    let loss = step.loss as f32;
                    if rank == 0 {
                        if let Ok(mut slot) = stats.lock() {
                            *slot = Some(step);
                        }
                    }
                    Ok(Batch::new(batch.rows()).with_f32(
                        "policy_loss",
                        &[],
                        &vec![loss; batch.rows()],
                    )?)
                })
            },
        )
        .weight_sync("trainer", "rollout")
        .build()
}
