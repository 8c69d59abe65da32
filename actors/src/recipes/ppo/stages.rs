//! The PPO dataflow graph: `generate` (rollouts, rows split) samples responses; `score` (the
//! reward model), `reference` (the frozen policy) and `values` (the critic) read them at the same
//! time; `advantages` turns scores, the per-token KL to the reference and the values into GAE
//! advantages and returns; then `train_critic` and `train_policy` (trainers, rows split,
//! gradients all-reduced) learn side by side, and weights flow back to the rollouts.

use super::super::setup::ANSWER_TOKENS;
use super::super::shared_stages::{generate, reference_logprobs};
use crate::roles::critic::CriticHandle;
use crate::roles::reference::ReferenceHandle;
use crate::roles::reward_model::RewardModelHandle;
use crate::roles::rollout::RolloutHandle;
use crate::roles::trainer::{Advantages, PolicyBatch, StepStats, TrainerHandle};
use crate::train::advantages::{gae, kl_shaped_rewards, whiten};
use std::sync::{Arc, Mutex};
use troupe::data::Batch;
use troupe::pipeline::{Dispatch, Pipeline, PipelineBuilder, PipelineError};
use troupe::ActorGroup;

/// The actors of the graph.
#[derive(Clone)]
pub struct PpoActors {
    pub rollouts: ActorGroup<RolloutHandle>,
    pub trainers: ActorGroup<TrainerHandle>,
    pub reference: ReferenceHandle,
    pub reward_model: RewardModelHandle,
    pub critic: CriticHandle,
}

/// What the stages need besides their actors.
#[derive(Debug, Clone)]
pub struct PpoSettings {
    pub temperature: f32,
    pub seed: u64,
    /// Rewards are (score - score_mean) / score_std, the reward model's scores standardised.
    pub score_mean: f32,
    pub score_std: f32,
    /// Weight of the per-token KL penalty folded into the rewards.
    pub kl_coef: f32,
    pub gamma: f32,
    pub lambda: f32,
}

/// Figures the learning stages leave for the observer.
#[derive(Debug, Clone, Default)]
pub struct LearnedFigures {
    pub policy: Option<StepStats>,
    pub value_loss: Option<f64>,
}

fn invalid(err: impl std::fmt::Display) -> troupe::Error {
    troupe::Error::Invalid {
        what: "PPO batch".to_string(),
        why: err.to_string(),
    }
}

/// Builds the graph; the learning stages leave their figures in `learned`.
pub fn build(
    actors: &PpoActors,
    settings: &PpoSettings,
    learned: Arc<Mutex<LearnedFigures>>,
) -> Result<Pipeline, PipelineError> {
    let trainers = actors.trainers.clone();
    let reward_model = actors.reward_model.clone();
    let (critic_values, critic_train) = (actors.critic.clone(), actors.critic.clone());
    let shaping = settings.clone();
    let learned_policy = learned.clone();
    PipelineBuilder::new()
        .group("rollout", actors.rollouts.world_size())
        .group("reward_model", 1)
        .group("reference", 1)
        .group("critic", 1)
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
            "reward_model",
            Dispatch::RankZero,
            &["prompt", "response"],
            &["rm_score"],
            move |_, batch| {
                let reward_model = reward_model.clone();
                Box::pin(async move {
                    let sequences: Vec<Vec<u32>> = batch
                        .ragged_u32("prompt")?
                        .into_iter()
                        .zip(batch.ragged_u32("response")?)
                        .map(|(mut prompt, response)| {
                            prompt.extend(response);
                            prompt
                        })
                        .collect();
                    let scores = reward_model.score(sequences).await?;
                    Ok(Batch::new(batch.rows()).with_f32("rm_score", &[], &scores)?)
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
            "values",
            "critic",
            Dispatch::RankZero,
            &["prompt", "response"],
            &["value"],
            move |_, batch| {
                let critic = critic_values.clone();
                Box::pin(async move {
                    let values = critic
                        .values(batch.ragged_u32("prompt")?, batch.ragged_u32("response")?)
                        .await?;
                    Ok(
                        Batch::new(batch.rows()).with_ragged_f32(
                            "value",
                            &values,
                            ANSWER_TOKENS,
                        )?,
                    )
                })
            },
        )
        .stage(
            "advantages",
            "critic",
            Dispatch::RankZero,
            &["rm_score", "old_logprob", "ref_logprob", "value"],
            &["advantage", "return"],
            move |_, batch| {
                let settings = shaping.clone();
                Box::pin(async move {
                    let scores: Vec<f32> = batch
                        .f32_values("rm_score")?
                        .iter()
                        .map(|score| (score - settings.score_mean) / settings.score_std)
                        .collect();
                    let rewards = kl_shaped_rewards(
                        &scores,
                        &batch.ragged_f32("old_logprob")?,
                        &batch.ragged_f32("ref_logprob")?,
                        settings.kl_coef,
                    )
                    .map_err(invalid)?;
                    let values = batch.ragged_f32("value")?;
                    let mut advantages = Vec::with_capacity(rewards.len());
                    let mut returns = Vec::with_capacity(rewards.len());
                    for (row_rewards, row_values) in rewards.iter().zip(&values) {
                        let (advantage, ret) = gae(
                            row_rewards,
                            row_values,
                            0.0,
                            settings.gamma,
                            settings.lambda,
                        )
                        .map_err(invalid)?;
                        advantages.push(advantage);
                        returns.push(ret);
                    }
                    whiten(&mut advantages);
                    Ok(Batch::new(batch.rows())
                        .with_ragged_f32("advantage", &advantages, ANSWER_TOKENS)?
                        .with_ragged_f32("return", &returns, ANSWER_TOKENS)?)
                })
            },
        )
        .stage(
            "train_critic",
            "critic",
            Dispatch::RankZero,
            &["prompt", "response", "return", "value"],
            &["value_loss"],
            move |_, batch| {
                let (critic, learned) = (critic_train.clone(), learned.clone());
                Box::pin(async move {
                    let loss = critic
                        .train(
                            batch.ragged_u32("prompt")?,
                            batch.ragged_u32("response")?,
                            batch.ragged_f32("return")?,
                            batch.ragged_f32("value")?,
                        )
                        .await?;
                    if let Ok(mut figures) = learned.lock() {
                        figures.value_loss = Some(loss);
                    }
                    Ok(Batch::new(batch.rows()).with_f32(
                        "value_loss",
                        &[],
                        &vec![loss as f32; batch.rows()],
                    )?)
                })
            },
        )
        .stage(
            "train_policy",
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
                let learned = learned_policy.clone();
                Box::pin(async move {
                    let member =
                        member.ok_or_else(|| invalid(format!("no trainer rank {rank}")))?;
                    let step = member
                        .policy_step(PolicyBatch {
                            prompts: batch.ragged_u32("prompt")?,
                            responses: batch.ragged_u32("response")?,
                            old_logprobs: batch.ragged_f32("old_logprob")?,
                            ref_logprobs: Some(batch.ragged_f32("ref_logprob")?),
                            advantages: Advantages::PerToken(batch.ragged_f32("advantage")?),
                        })
                        .await?;
                    let loss = step.loss as f32;
                    if rank == 0 {
                        if let Ok(mut figures) = learned.lock() {
                            figures.policy = Some(step);
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
