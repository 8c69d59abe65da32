//! Pipeline stages both recipes use: sampling responses on the rollout group, and the frozen
//! reference's log-probabilities of them.

use super::setup::ANSWER_TOKENS;
use crate::generate::SamplingConfig;
use crate::roles::reference::ReferenceHandle;
use crate::roles::rollout::RolloutHandle;
use crate::tokenizer::BuiltinTokenizer;
use troupe::data::Batch;
use troupe::{ActorGroup, BoxFuture};

/// Row metadata key of the step a row belongs to.
pub const STEP_KEY: &str = "step";

fn step_of(batch: &Batch) -> u64 {
    batch
        .meta()
        .first()
        .and_then(|meta| meta.get(STEP_KEY))
        .and_then(|step| step.parse().ok())
        .unwrap_or(0)
}

/// `generate` (rows split over the rollouts): `prompt` -> `response`, `old_logprob`, sampled at
/// `temperature` with a seed made of `seed`, the step and the rank.
pub fn generate(
    rollouts: ActorGroup<RolloutHandle>,
    temperature: f32,
    seed: u64,
) -> impl Fn(usize, Batch) -> BoxFuture<troupe::Result<Batch>> + Send + Sync + 'static {
    move |rank, batch| {
        let member = rollouts.rank(rank).cloned();
        Box::pin(async move {
            let member = member.ok_or_else(|| troupe::Error::Invalid {
                what: "generate stage".to_string(),
                why: format!("no rollout of rank {rank}"),
            })?;
            let config = SamplingConfig {
                max_new_tokens: ANSWER_TOKENS,
                temperature,
                stop_tokens: vec![BuiltinTokenizer::EOS],
                seed: seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(step_of(&batch) * 64 + rank as u64),
                ..SamplingConfig::default()
            };
            let made = member.generate(batch.ragged_u32("prompt")?, config).await?;
            Ok(Batch::new(batch.rows())
                .with_ragged_u32("response", &made.tokens, ANSWER_TOKENS)?
                .with_ragged_f32("old_logprob", &made.logprobs, ANSWER_TOKENS)?)
        })
    }
}

/// `reference` (rank 0): `prompt`, `response` -> `ref_logprob`.
pub fn reference_logprobs(
    reference: ReferenceHandle,
) -> impl Fn(usize, Batch) -> BoxFuture<troupe::Result<Batch>> + Send + Sync + 'static {
    move |_, batch| {
        let reference = reference.clone();
        Box::pin(async move {
            let logprobs = reference
                .logprobs(batch.ragged_u32("prompt")?, batch.ragged_u32("response")?)
                .await?;
            Ok(
                Batch::new(batch.rows()).with_ragged_f32(
                    "ref_logprob",
                    &logprobs,
                    ANSWER_TOKENS,
                )?,
            )
        })
    }
}
