//! One GRPO step's figures, read off the pipeline's step report: rewards and what they say
//! about the signal (groups all wrong or all right carry none), the trainer's step, stage
//! times, throughput and the weight sync.

use super::super::record::StepRow;
use super::stages::GrpoActors;
use crate::roles::trainer::StepStats;
use serde::Serialize;
use troupe::pipeline::StepReport;

/// What one step did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepFigures {
    pub step: usize,
    /// The weight version the step's rollouts were made with.
    pub made_with_version: u64,
    pub reward_mean: f64,
    /// Share of samples answered exactly.
    pub sampled_accuracy: f64,
    /// Share of samples that were well-formed answers.
    pub well_formed: f64,
    /// Share of groups where every sample failed / every sample was exact.
    pub all_wrong_groups: f64,
    pub all_right_groups: f64,
    pub response_tokens_mean: f64,
    pub loss: f64,
    pub kl: f64,
    pub clip_fraction: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub rollout_tokens: usize,
    pub generate_s: f64,
    pub score_s: f64,
    pub reference_s: f64,
    pub train_s: f64,
    pub rollout_tokens_per_s: f64,
    pub weight_sync_ms: f64,
    /// Seconds the step's stages ran (summed; stages that overlap count twice).
    pub step_s: f64,
    pub heldout_accuracy: Option<f64>,
    pub elapsed_s: f64,
}

impl StepFigures {
    pub fn from_report(
        report: &StepReport,
        group_size: usize,
        stats: Option<&StepStats>,
    ) -> Result<Self, troupe::data::BatchError> {
        let rewards = report.output.f32_values("reward")?;
        let responses = report.output.ragged_u32("response")?;
        let exact: Vec<bool> = rewards.iter().map(|r| *r >= 1.0).collect();
        let groups = exact.chunks(group_size.max(1));
        let group_count = groups.len().max(1) as f64;
        let (mut all_wrong, mut all_right) = (0, 0);
        for group in groups {
            all_wrong += usize::from(group.iter().all(|e| !*e));
            all_right += usize::from(group.iter().all(|e| *e));
        }
        let rows = rewards.len().max(1) as f64;
        let tokens: usize = responses.iter().map(Vec::len).sum();
        let stage = |name: &str| {
            report
                .timings
                .iter()
                .filter(|t| t.stage == name)
                .map(|t| t.seconds)
                .sum::<f64>()
        };
        let generate_s = stage("generate");
        let mut figures = StepFigures {
            step: report.step + 1,
            made_with_version: report.weight_version,
            reward_mean: rewards.iter().map(|r| *r as f64).sum::<f64>() / rows,
            sampled_accuracy: exact.iter().filter(|e| **e).count() as f64 / rows,
            well_formed: rewards.iter().filter(|r| **r > 0.0).count() as f64 / rows,
            all_wrong_groups: all_wrong as f64 / group_count,
            all_right_groups: all_right as f64 / group_count,
            response_tokens_mean: tokens as f64 / rows,
            rollout_tokens: tokens,
            generate_s,
            score_s: stage("score"),
            reference_s: stage("reference"),
            train_s: stage("train"),
            rollout_tokens_per_s: tokens as f64 / generate_s.max(1e-9),
            step_s: report.timings.iter().map(|t| t.seconds).sum(),
            ..StepFigures::default()
        };
        if let Some(stats) = stats {
            figures.loss = stats.loss;
            figures.kl = stats.kl;
            figures.clip_fraction = stats.policy.clip_fraction;
            figures.grad_norm = stats.grad_norm;
            figures.lr = stats.lr;
        }
        Ok(figures)
    }
}

impl StepRow for StepFigures {
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
            "reward {:.3} | held-out {accuracy} | KL {:.4} | {:.0} tok/s | sync {:.0} ms",
            self.reward_mean, self.kl, self.rollout_tokens_per_s, self.weight_sync_ms
        )
    }
}

/// The actors a run holds, so they can be stopped together.
pub async fn stop(actors: &GrpoActors, cluster: &troupe::Cluster) {
    let _ = actors.trainers.kill(cluster).await;
    let _ = actors.rollouts.kill(cluster).await;
    let _ = cluster.kill(&actors.reference).await;
    let _ = cluster.kill(&actors.reward).await;
}
