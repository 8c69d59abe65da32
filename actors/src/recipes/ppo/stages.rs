//! The PPO dataflow graph: `prompts` (the prompt source) makes the step's prompts; `generate`
//! (rollouts, rows split) samples responses; `score` (the reward model), `reference` (the frozen
//! policy) and `values` (the critic) read them at the same time; `advantages` (on the critic)
//! turns scores, the per-token KL to the reference and the values into GAE advantages and
//! returns; then `train_critic` and `train` (trainers, rows split, gradients all-reduced) learn
//! side by side, and weights flow back to the rollouts over the policy's weight-sync edge.

use super::super::policy::PolicyActors;
use crate::generate::SamplingConfig;
use crate::roles::columns::{
    ADVANTAGE, OLD_LOGPROB, PROBLEM, PROMPT, REF_LOGPROB, RESPONSE, RETURN, RM_SCORE, VALUE,
};
use crate::roles::critic::{CriticHandle, GaeSettings};
use crate::roles::prompts::PromptSourceHandle;
use crate::roles::reference::ReferenceHandle;
use crate::roles::reward_model::RewardModelHandle;
use troupe::pipeline::{Dispatch, Pipeline, PipelineBuilder, PipelineError};
use troupe::ActorGroup;

/// The actors of the graph besides the policy's.
#[derive(Clone)]
pub struct PpoActors {
    pub source: PromptSourceHandle,
    pub reference: ReferenceHandle,
    pub reward_model: RewardModelHandle,
    pub critic: CriticHandle,
}

/// Builds the graph.
pub fn build(
    policy: &PolicyActors,
    actors: &PpoActors,
    sampling: SamplingConfig,
    shaping: GaeSettings,
) -> Result<Pipeline, PipelineError> {
    let source = ActorGroup::from_handles(vec![actors.source.clone()]).named("source");
    let reward_model =
        ActorGroup::from_handles(vec![actors.reward_model.clone()]).named("reward_model");
    let reference = ActorGroup::from_handles(vec![actors.reference.clone()]).named("reference");
    let critic = ActorGroup::from_handles(vec![actors.critic.clone()]).named("critic");
    PipelineBuilder::new()
        .stage(
            "prompts",
            &source,
            Dispatch::RankZero,
            &[],
            &[PROMPT, PROBLEM],
            |source, call| async move { source.prompts(call).await },
        )
        .stage(
            "generate",
            &policy.rollouts,
            Dispatch::Split,
            &[PROMPT],
            &[RESPONSE, OLD_LOGPROB],
            move |rollout, call| {
                let sampling = sampling.clone();
                async move { rollout.generate(call, sampling).await }
            },
        )
        .stage(
            "score",
            &reward_model,
            Dispatch::RankZero,
            &[PROMPT, RESPONSE],
            &[RM_SCORE],
            |model, call| async move { model.score_responses(call).await },
        )
        .stage(
            "reference",
            &reference,
            Dispatch::RankZero,
            &[PROMPT, RESPONSE],
            &[REF_LOGPROB],
            |reference, call| async move { reference.logprobs(call).await },
        )
        .stage(
            "values",
            &critic,
            Dispatch::RankZero,
            &[PROMPT, RESPONSE],
            &[VALUE],
            |critic, call| async move { critic.values(call).await },
        )
        .stage(
            "advantages",
            &critic,
            Dispatch::RankZero,
            &[RM_SCORE, OLD_LOGPROB, REF_LOGPROB, VALUE],
            &[ADVANTAGE, RETURN],
            move |critic, call| async move { critic.advantages(call, shaping).await },
        )
        .stage(
            "train_critic",
            &critic,
            Dispatch::RankZero,
            &[PROMPT, RESPONSE, RETURN, VALUE],
            &[],
            |critic, call| async move { critic.train_values(call).await },
        )
        .stage(
            "train",
            &policy.trainers,
            Dispatch::Split,
            &[PROMPT, RESPONSE, OLD_LOGPROB, REF_LOGPROB, ADVANTAGE],
            &[],
            |trainer, call| async move { trainer.train(call).await },
        )
        .weight_sync(policy.weight_sync())
        .build()
}
