//! GRPO's settings and what a run reports. The algorithm itself reads top to bottom in
//! `examples/grpo_arithmetic.rs` (spawn the roles, build the graph, run, report); a task and its
//! rewards are configuration here, so `examples/grpo_countdown.rs` runs the same file on another
//! task.

use super::error::{RecipeError, Result};
use super::metrics::summary_table;
use super::run_log::{HeldoutPoint, PhaseFigures, RunLog};
use super::warm_start::{WarmStartConfig, WarmStartOutcome};
use crate::engines::vllm::EngineStats;
use crate::roles::reward::RewardSpec;
use crate::roles::rollout::RolloutEngine;
use crate::tasks::TaskSpec;
use serde::Serialize;
use std::path::PathBuf;

/// Everything a GRPO run is made from.
#[derive(Debug, Clone, Serialize)]
pub struct GrpoConfig {
    /// What to learn (its held-out size is the evaluation set).
    pub task: TaskSpec,
    /// The reward: registered reward functions with their weights.
    pub rewards: Vec<RewardSpec>,
    /// GRPO steps after the warm start.
    pub steps: usize,
    /// Samples per prompt.
    pub group_size: usize,
    /// Prompts per step.
    pub batch: usize,
    /// Decoder layers of the policy (the recipes' small model otherwise: hidden size 256).
    pub layers: usize,
    /// Peak learning rate (cosine decay over the steps).
    pub lr: f64,
    /// The learning rate at the last step, as a share of `lr` (1: constant).
    pub lr_floor: f64,
    /// Steps over which the learning rate rises linearly to `lr` first (0: none). Fresh AdamW
    /// moments make the first updates about `lr` per parameter whatever the gradient's size.
    pub lr_warmup: u64,
    /// Weight of the KL penalty to the reference (k3 estimator).
    pub kl_coef: f64,
    /// Weight of the entropy bonus (0: none). It keeps the sampled answers diverse, so that
    /// groups keep scoring differently and GRPO keeps a signal.
    pub entropy_coef: f64,
    /// Train only on groups whose samples scored differently (the others have zero
    /// advantages): the loss is the mean over rows with signal.
    pub skip_flat_groups: bool,
    /// Rollouts may be made with weights up to this many steps old (0: synchronous).
    pub max_staleness: usize,
    /// Run on the cluster at this address instead of an embedded one.
    pub cluster: Option<String>,
    /// Where metrics, the plot and the checkpoint go.
    pub out: PathBuf,
    pub temperature: f32,
    pub clip: f64,
    /// How often held-out success is measured (steps).
    pub eval_every: usize,
    pub trainers: usize,
    pub rollouts: usize,
    pub warm_start: WarmStartConfig,
    /// Start from the warm start a run saved here (`<out>/warm_start`) instead of running one;
    /// it must have been made for the same task and depth.
    pub warm_start_from: Option<PathBuf>,
    /// What the rollouts generate with: their own decoder, or a vLLM engine each.
    pub rollout_engine: RolloutEngine,
    /// Truncated importance sampling against the engine, capped here (None: off). `new`
    /// leaves it None; `with_rollout_engine` turns it on for vLLM.
    pub tis_cap: Option<f64>,
    /// The trainers' whole state is written every this many steps (0: never), for a run whose
    /// trainers all restart to go back to; a single restarted trainer takes a peer's state.
    pub checkpoint_every: usize,
    /// Actors the run kills while given steps run, to show it survives them.
    pub faults: Vec<super::faults::Fault>,
}

impl GrpoConfig {
    /// The recipe's tuned setting for `task` and `rewards`.
    pub fn new(task: TaskSpec, rewards: Vec<RewardSpec>) -> Self {
        GrpoConfig {
            out: PathBuf::from(format!("runs/grpo_{}", task.name)),
            task,
            rewards,
            steps: 200,
            group_size: 8,
            batch: 32,
            layers: 2,
            lr: 2e-4,
            lr_floor: 0.05,
            lr_warmup: 0,
            kl_coef: 0.01,
            entropy_coef: 0.0,
            skip_flat_groups: false,
            max_staleness: 0,
            cluster: None,
            temperature: 1.0,
            clip: 0.2,
            eval_every: 10,
            trainers: 2,
            rollouts: 2,
            warm_start: WarmStartConfig::default(),
            warm_start_from: None,
            rollout_engine: RolloutEngine::Candle,
            tis_cap: None,
            checkpoint_every: 20,
            faults: Vec::new(),
        }
    }

    /// Generates with `engine`; an engine that is not the trainer's own code (vLLM) gets TIS
    /// with a cap of 2 (as verl's default), which `tis_cap` may change afterwards.
    pub fn with_rollout_engine(mut self, engine: RolloutEngine) -> Self {
        self.tis_cap = match engine {
            RolloutEngine::Candle => None,
            RolloutEngine::Vllm(_) => Some(DEFAULT_TIS_CAP),
        };
        self.rollout_engine = engine;
        self
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(RecipeError::Config(why));
        if self.steps == 0 || self.batch == 0 {
            return bad(format!(
                "--steps {} and --batch {} must be at least 1",
                self.steps, self.batch
            ));
        }
        if self.group_size < 2 {
            return bad(format!(
                "--group-size {}: GRPO needs at least 2",
                self.group_size
            ));
        }
        let rows = self.batch * self.group_size;
        if rows < self.trainers.max(self.rollouts) {
            return bad(format!(
                "{rows} samples per step cannot be split over {} trainers and {} rollouts",
                self.trainers, self.rollouts
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("--lr {} must be positive", self.lr));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "sampling temperature {} must be positive",
                self.temperature
            ));
        }
        if self.layers == 0 {
            return bad("--layers 0: the policy needs at least one layer".to_string());
        }
        if self.lr_warmup >= self.steps as u64 {
            return bad(format!(
                "--lr-warmup {} must be shorter than --steps {}",
                self.lr_warmup, self.steps
            ));
        }
        if !(0.0..=1.0).contains(&self.lr_floor) {
            return bad(format!(
                "--lr-floor {} must be a share of the peak, in [0, 1]",
                self.lr_floor
            ));
        }
        if !(self.kl_coef >= 0.0 && self.kl_coef.is_finite()) {
            return bad(format!("--kl-coef {} must be >= 0", self.kl_coef));
        }
        if !(self.entropy_coef >= 0.0 && self.entropy_coef.is_finite()) {
            return bad(format!("--entropy-coef {} must be >= 0", self.entropy_coef));
        }
        if let Some(cap) = self.tis_cap {
            if !(cap >= 1.0 && cap.is_finite()) {
                return bad(format!("--tis-cap {cap} must be at least 1 (or 0 for off)"));
            }
            // TIS takes the PPO ratio against the trainer's own log-probabilities, which are the
            // behaviour policy's only with synchronous rollouts, and compares them with the
            // engine's, which are of the tempered distribution.
            if self.max_staleness > 0 {
                return bad(format!(
                    "--tis-cap {cap} needs synchronous rollouts: --max-staleness {} would leave \
                     stale samples without a trust region (give --tis-cap 0 to run stale)",
                    self.max_staleness
                ));
            }
            if self.temperature != 1.0 {
                return bad(format!(
                    "--tis-cap {cap} compares the engine's log-probabilities at temperature {} \
                     with the trainer's at 1 (give --tis-cap 0)",
                    self.temperature
                ));
            }
        }
        if self.eval_every == 0 || self.task.held_out < 200 {
            return bad(format!(
                "held-out evaluation needs eval_every >= 1 and at least 200 problems ({} given)",
                self.task.held_out
            ));
        }
        if self.warm_start.batch < self.trainers {
            return bad(format!(
                "warm-start batch {} is smaller than the {} trainers",
                self.warm_start.batch, self.trainers
            ));
        }
        if self.rewards.is_empty() {
            return bad("at least one reward function is needed".to_string());
        }
        if let Some(late) = self.faults.iter().find(|fault| fault.step > self.steps) {
            return bad(format!(
                "--inject-fault {}@{}: the run has {} steps",
                late.role, late.step, self.steps
            ));
        }
        // The task's parameters are checked here, before any cluster or actor starts.
        self.task.build()?;
        Ok(())
    }
}

/// The TIS cap for engines other than the trainer's own code.
pub const DEFAULT_TIS_CAP: f64 = 2.0;

/// What a run measured; `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct GrpoReport {
    pub task: String,
    pub heldout_accuracy_sft: f64,
    pub heldout_accuracy_final: f64,
    pub improvement_points: f64,
    /// Held-out success at every evaluation: step, seconds since the start, accuracy.
    pub heldout_curve: Vec<HeldoutPoint>,
    pub steps: usize,
    pub sft_steps: usize,
    pub wall_s: f64,
    pub sft_s: f64,
    pub grpo_s: f64,
    pub step_s_mean: f64,
    pub weight_sync_ms_mean: f64,
    /// `candle` or `vllm`.
    pub rollout_engine: String,
    /// The engines' start, spawn to ready, mean over the rollouts (None for candle).
    pub engine_start_s: Option<f64>,
    /// Engine restarts over the run, summed over the rollouts.
    pub engine_restarts: u32,
    /// Loading new weights into the rollouts: for vLLM the engine's update (write, reload,
    /// probe check) per step; for candle the whole weight sync.
    pub weight_update_ms_mean: f64,
    /// Token means, over the steps, of |log pi_trainer - log pi_engine| of the sampled tokens,
    /// of KL(engine || trainer) (k3), and of the share of tokens TIS clipped.
    pub logprob_abs_diff_mean: f64,
    pub engine_trainer_kl_mean: f64,
    pub tis_clipped_share: f64,
    pub tis_cap: Option<f64>,
    pub rollout_tokens_per_s: f64,
    /// Bytes the driver sent and received per step, everything included.
    pub driver_bytes_per_step: f64,
    /// Bytes of batch data the stages read and kept per step, moved between members directly.
    pub stage_bytes_per_step: f64,
    pub reward_mean_first_10: f64,
    pub reward_mean_last_10: f64,
    pub kl_final: f64,
    pub max_staleness: usize,
    pub seed: u64,
    pub parameters: usize,
    pub heldout_problems: usize,
    pub checkpoint: PathBuf,
    /// Held-out success of a rollout actor loaded from the saved checkpoint.
    pub checkpoint_heldout_accuracy: Option<f64>,
    /// The saved warm start the run started from; then `sft_s` is how long that warm start
    /// took when it ran, and `wall_s` leaves it out.
    pub warm_start_from: Option<PathBuf>,
    pub metrics: PathBuf,
    pub plot: PathBuf,
    /// The run's timeline (Chrome trace JSON: every stage and actor call), beside the metrics.
    pub timeline: PathBuf,
    /// Every failure the run survived: what failed, when, and what it cost.
    pub recoveries: Vec<super::recovery::RecoveryEvent>,
    /// Steps run again and seconds lost, over all recoveries.
    pub steps_redone: usize,
    pub seconds_lost: f64,
}

impl GrpoReport {
    /// The figures of a finished run (the checkpoint comes with `with_checkpoint`).
    pub fn from_run(
        config: &GrpoConfig,
        sft: &WarmStartOutcome,
        phase: PhaseFigures,
        log: &RunLog,
        parameters: usize,
        started: std::time::Instant,
    ) -> Self {
        let (reward_mean_first_10, reward_mean_last_10) = log.first_and_last("reward_mean", 10);
        let final_accuracy = phase
            .heldout_curve
            .last()
            .map_or(sft.heldout_accuracy, |point| point.accuracy);
        GrpoReport {
            task: config.task.name.clone(),
            heldout_accuracy_sft: sft.heldout_accuracy,
            heldout_accuracy_final: final_accuracy,
            improvement_points: (final_accuracy - sft.heldout_accuracy) * 100.0,
            steps: phase.steps,
            sft_steps: sft.steps,
            wall_s: started.elapsed().as_secs_f64(),
            sft_s: sft.seconds,
            grpo_s: phase.seconds,
            step_s_mean: phase.seconds / phase.steps.max(1) as f64,
            weight_sync_ms_mean: phase.weight_sync_ms_mean,
            rollout_engine: config.rollout_engine.name().to_string(),
            engine_start_s: None,
            engine_restarts: 0,
            weight_update_ms_mean: log
                .mean("engine_weight_update_ms")
                .unwrap_or(phase.weight_sync_ms_mean),
            logprob_abs_diff_mean: log.mean("logprob_abs_diff").unwrap_or(0.0),
            engine_trainer_kl_mean: log.mean("engine_trainer_kl").unwrap_or(0.0),
            tis_clipped_share: log.mean("tis_clipped_share").unwrap_or(0.0),
            tis_cap: config.tis_cap,
            rollout_tokens_per_s: phase.rollout_tokens_per_s,
            driver_bytes_per_step: phase.driver_bytes_per_step,
            stage_bytes_per_step: phase.stage_bytes_per_step,
            heldout_curve: phase.heldout_curve,
            reward_mean_first_10,
            reward_mean_last_10,
            kl_final: log.last("kl").unwrap_or(0.0),
            max_staleness: config.max_staleness,
            seed: config.task.seed,
            parameters,
            heldout_problems: config.task.held_out,
            checkpoint: PathBuf::new(),
            checkpoint_heldout_accuracy: None,
            warm_start_from: sft.loaded_from.clone(),
            metrics: log.metrics_path(),
            plot: PathBuf::new(),
            timeline: PathBuf::new(),
            recoveries: Vec::new(),
            steps_redone: 0,
            seconds_lost: 0.0,
        }
    }

    /// The failures the run survived.
    pub fn with_recoveries(mut self, events: &[super::recovery::RecoveryEvent]) -> Self {
        self.steps_redone = events.iter().map(|event| event.steps_redone).sum();
        self.seconds_lost = events.iter().map(|event| event.seconds_lost).sum();
        self.recoveries = events.to_vec();
        self
    }

    /// What the rollouts' engines reported at the end of the run.
    pub fn with_engines(mut self, engines: &[EngineStats]) -> Self {
        if !engines.is_empty() {
            let starts: Vec<f64> = engines.iter().map(|stats| stats.start_s).collect();
            self.engine_start_s = Some(crate::recipes::run_log::mean(&starts));
            self.engine_restarts = engines.iter().map(|stats| stats.restarts).sum();
        }
        self
    }

    /// The saved checkpoint, its reloaded held-out success, and the plot.
    pub fn with_checkpoint(
        mut self,
        checkpoint: PathBuf,
        accuracy: Option<f64>,
        plot: PathBuf,
    ) -> Self {
        self.checkpoint = checkpoint;
        self.checkpoint_heldout_accuracy = accuracy;
        self.plot = plot;
        self
    }

    /// The timeline written beside the metrics.
    pub fn with_timeline(mut self, timeline: PathBuf) -> Self {
        self.timeline = timeline;
        self
    }
}

/// The table printed at the end of a run.
pub fn summary(report: &GrpoReport) -> String {
    let percent = |value: f64| format!("{:.1}%", value * 100.0);
    summary_table(
        &format!("GRPO on {}", report.task),
        &[
            ("parameters", report.parameters.to_string()),
            ("warm-start steps", report.sft_steps.to_string()),
            (
                "held-out success after warm start",
                percent(report.heldout_accuracy_sft),
            ),
            ("GRPO steps", report.steps.to_string()),
            (
                "held-out success after GRPO",
                percent(report.heldout_accuracy_final),
            ),
            (
                "improvement (points)",
                format!("{:+.1}", report.improvement_points),
            ),
            (
                "checkpoint reloaded, held-out success",
                report
                    .checkpoint_heldout_accuracy
                    .map(percent)
                    .unwrap_or_else(|| "not checked".into()),
            ),
            (
                "mean reward, first 10 steps",
                format!("{:.3}", report.reward_mean_first_10),
            ),
            (
                "mean reward, last 10 steps",
                format!("{:.3}", report.reward_mean_last_10),
            ),
            (
                "KL to reference, last step",
                format!("{:.4}", report.kl_final),
            ),
            (
                "seconds per GRPO step",
                format!("{:.3}", report.step_s_mean),
            ),
            (
                "rollout engine (start, restarts)",
                match report.engine_start_s {
                    Some(start) => format!(
                        "{} ({start:.1} s, {} restarts)",
                        report.rollout_engine, report.engine_restarts
                    ),
                    None => report.rollout_engine.clone(),
                },
            ),
            (
                "rollout tokens/s",
                format!("{:.0}", report.rollout_tokens_per_s),
            ),
            (
                "weight update into the rollouts, mean",
                format!("{:.1} ms", report.weight_update_ms_mean),
            ),
            (
                "engine vs trainer: |dlogp|, KL, TIS-clipped",
                format!(
                    "{:.2e} / {:.2e} / {:.2}%{}",
                    report.logprob_abs_diff_mean,
                    report.engine_trainer_kl_mean,
                    report.tis_clipped_share * 100.0,
                    report
                        .tis_cap
                        .map(|cap| format!(" (cap {cap})"))
                        .unwrap_or_else(|| " (TIS off)".to_string())
                ),
            ),
            (
                "weight sync, mean",
                format!("{:.1} ms", report.weight_sync_ms_mean),
            ),
            (
                "failures survived: steps redone, seconds lost",
                format!(
                    "{}: {} / {:.1} s",
                    report.recoveries.len(),
                    report.steps_redone,
                    report.seconds_lost
                ),
            ),
            (
                "bytes per step: driver / stages",
                format!(
                    "{:.0} / {:.0} ({:.2}%)",
                    report.driver_bytes_per_step,
                    report.stage_bytes_per_step,
                    100.0 * report.driver_bytes_per_step / report.stage_bytes_per_step.max(1.0)
                ),
            ),
            (
                "warm start / GRPO / total",
                format!(
                    "{:.0} s / {:.0} s / {:.0} s",
                    report.sft_s, report.grpo_s, report.wall_s
                ),
            ),
            ("metrics", report.metrics.display().to_string()),
            ("plot", report.plot.display().to_string()),
            ("timeline", report.timeline.display().to_string()),
            ("checkpoint", report.checkpoint.display().to_string()),
        ],
    )
}
