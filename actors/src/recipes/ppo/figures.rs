//! One PPO step's figures, read off the pipeline's step report and the learning stages' results.

use super::super::record::StepRow;
use super::stages::LearnedFigures;
use crate::tokenizer::{BuiltinTokenizer, TextTokenizer};
use serde::Serialize;
use troupe::pipeline::StepReport;

/// What one step did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PpoStepFigures {
    pub step: usize,
    pub made_with_version: u64,
    /// Mean reward-model score of the sampled responses.
    pub rm_score_mean: f64,
    /// Mean per-token log p_old - log p_ref over sampled tokens (the KL the rewards pay).
    pub kl_sampled: f64,
    /// The trainer's k3 estimate of the same KL under the updated policy.
    pub kl: f64,
    /// Share of samples that are exactly right (the reward model never sees this).
    pub sampled_accuracy: f64,
    pub policy_loss: f64,
    pub value_loss: f64,
    pub clip_fraction: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub rollout_tokens: usize,
    pub generate_s: f64,
    pub rollout_tokens_per_s: f64,
    pub weight_sync_ms: f64,
    pub heldout_accuracy: Option<f64>,
    pub elapsed_s: f64,
}

impl PpoStepFigures {
    pub fn from_report(
        report: &StepReport,
        learned: &LearnedFigures,
    ) -> Result<Self, troupe::data::BatchError> {
        let output = &report.output;
        let scores = output.f32_values("rm_score")?;
        let responses = output.ragged_u32("response")?;
        let old = output.ragged_f32("old_logprob")?;
        let reference = output.ragged_f32("ref_logprob")?;
        let (mut kl_sum, mut kl_tokens) = (0.0_f64, 0_usize);
        for (o, r) in old.iter().zip(&reference) {
            for (a, b) in o.iter().zip(r) {
                kl_sum += (a - b) as f64;
                kl_tokens += 1;
            }
        }
        let tokenizer = BuiltinTokenizer::new();
        let correct = responses
            .iter()
            .zip(output.meta())
            .filter(|(tokens, meta)| {
                let answer = meta.get("answer").map(String::as_str).unwrap_or("");
                tokenizer
                    .decode(tokens)
                    .map(|text| text == answer)
                    .unwrap_or(false)
            })
            .count();
        let rows = scores.len().max(1) as f64;
        let tokens: usize = responses.iter().map(Vec::len).sum();
        let generate_s: f64 = report
            .timings
            .iter()
            .filter(|t| t.stage == "generate")
            .map(|t| t.seconds)
            .sum();
        let mut figures = PpoStepFigures {
            step: report.step + 1,
            made_with_version: report.weight_version,
            rm_score_mean: scores.iter().map(|s| *s as f64).sum::<f64>() / rows,
            kl_sampled: kl_sum / kl_tokens.max(1) as f64,
            sampled_accuracy: correct as f64 / rows,
            value_loss: learned.value_loss.unwrap_or(f64::NAN),
            rollout_tokens: tokens,
            generate_s,
            rollout_tokens_per_s: tokens as f64 / generate_s.max(1e-9),
            ..PpoStepFigures::default()
        };
        if let Some(policy) = &learned.policy {
            figures.kl = policy.kl;
            figures.policy_loss = policy.loss;
            figures.clip_fraction = policy.policy.clip_fraction;
            figures.grad_norm = policy.grad_norm;
            figures.lr = policy.lr;
        }
        Ok(figures)
    }
}

impl StepRow for PpoStepFigures {
    fn step(&self) -> usize {
        self.step
    }

    fn set_heldout_accuracy(&mut self, accuracy: f64) {
        self.heldout_accuracy = Some(accuracy);
    }

    fn set_elapsed(&mut self, seconds: f64) {
        self.elapsed_s = seconds;
    }

    fn message(&self, last_accuracy: Option<f64>) -> String {
        let accuracy = last_accuracy
            .map(|a| format!("{:.1}%", a * 100.0))
            .unwrap_or_else(|| "-".to_string());
        format!(
            "RM score {:.3} | KL {:.4} | held-out {accuracy} | value loss {:.3} | {:.0} tok/s | sync {:.0} ms",
            self.rm_score_mean, self.kl_sampled, self.value_loss, self.rollout_tokens_per_s, self.weight_sync_ms
        )
    }
}
