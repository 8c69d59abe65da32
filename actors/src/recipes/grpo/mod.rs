//! GRPO on three-digit addition: a ~1.3M-parameter decoder is warm-started with a short
//! supervised phase, then trained with group-relative policy optimisation through a troupe
//! pipeline: two rollout actors, a reference, a rule-based reward (exact answer plus a small
//! format reward) and two data-parallel trainers whose weights are resharded to the rollouts
//! after every step (or with bounded staleness).

mod figures;
pub mod stages;

pub use figures::StepFigures;

use super::metrics::{summary_table, MetricsLog};
use super::plot::{self, Panel, Series};
use super::progress::Progress;
use super::record::{first_and_last, mean, observer, RunRecord};
use super::setup::{
    arithmetic_model, check_checkpoint, run_id, start_cluster, weight_sync_edge, PolicyActors,
    RecipeError, Result,
};
use super::warm_start::{warm_start, WarmStartConfig, WarmStartOutcome};
use crate::roles::reference::Reference;
use crate::roles::reward::{RuleReward, VerifierSpec};
use crate::roles::trainer::{PolicyConfig, StepStats, TrainerConfig};
use crate::roles::ModelSource;
use crate::tasks::arithmetic::{AdditionTask, Problem};
use crate::tokenizer::BuiltinTokenizer;
use crate::train::losses::{Aggregation, KlEstimator};
use crate::train::optim::{AdamWConfig, Decay, LrSchedule};
use serde::Serialize;
use stages::{GrpoActors, StageSettings};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use troupe::pipeline::StepReport;
use troupe::{Cluster, SpawnOptions};

/// Everything a GRPO run is made from; `Default` is the recipe's tuned setting.
#[derive(Debug, Clone, Serialize)]
pub struct GrpoConfig {
    /// GRPO steps after the warm start.
    pub steps: usize,
    /// Samples per prompt.
    pub group_size: usize,
    /// Prompts per step.
    pub batch: usize,
    /// Peak learning rate (cosine decay over the steps).
    pub lr: f64,
    /// Weight of the KL penalty to the reference (k3 estimator).
    pub kl_coef: f64,
    /// Rollouts may be made with weights up to this many steps old (0: synchronous).
    pub max_staleness: usize,
    pub seed: u64,
    /// Run on the cluster at this address instead of an embedded one.
    pub cluster: Option<String>,
    /// Where metrics, the plot and the checkpoint go.
    pub out: PathBuf,
    pub temperature: f32,
    pub clip: f64,
    /// Reward for a well-formed (digits only) answer, on top of 1 for the exact one.
    pub format_reward: f32,
    /// Held-out problems (never trained on) and how often they are evaluated.
    pub held_out: usize,
    pub eval_every: usize,
    pub trainers: usize,
    pub rollouts: usize,
    pub warm_start: WarmStartConfig,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        GrpoConfig {
            steps: 200,
            group_size: 8,
            batch: 32,
            lr: 2e-4,
            kl_coef: 0.01,
            max_staleness: 0,
            seed: 0,
            cluster: None,
            out: PathBuf::from("runs/grpo_arithmetic"),
            temperature: 1.0,
            clip: 0.2,
            format_reward: 0.1,
            held_out: 500,
            eval_every: 10,
            trainers: 2,
            rollouts: 2,
            warm_start: WarmStartConfig::default(),
        }
    }
}

impl GrpoConfig {
    fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(RecipeError::Config(why));
        if self.steps == 0 {
            return bad("--steps must be at least 1".into());
        }
        if self.group_size < 2 {
            return bad(format!(
                "--group-size {}: GRPO needs at least 2",
                self.group_size
            ));
        }
        if self.batch == 0 {
            return bad("--batch must be at least 1".into());
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
        if !(self.kl_coef >= 0.0 && self.kl_coef.is_finite()) {
            return bad(format!("--kl-coef {} must be >= 0", self.kl_coef));
        }
        if self.eval_every == 0 || self.held_out < 200 {
            return bad(format!(
                "held-out evaluation needs eval_every >= 1 and at least 200 problems ({} given)",
                self.held_out
            ));
        }
        if self.warm_start.batch < self.trainers {
            return bad(format!(
                "warm-start batch {} is smaller than the {} trainers",
                self.warm_start.batch, self.trainers
            ));
        }
        Ok(())
    }
}

/// What a run measured; `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct GrpoReport {
    pub heldout_accuracy_sft: f64,
    pub heldout_accuracy_final: f64,
    pub improvement_points: f64,
    pub steps: usize,
    pub sft_steps: usize,
    pub wall_s: f64,
    pub sft_s: f64,
    pub grpo_s: f64,
    pub weight_sync_ms_mean: f64,
    pub rollout_tokens_per_s: f64,
    pub reward_mean_first_10: f64,
    pub reward_mean_last_10: f64,
    pub kl_final: f64,
    pub max_staleness: usize,
    pub parameters: usize,
    pub heldout_problems: usize,
    pub checkpoint: PathBuf,
    /// Held-out accuracy of a rollout actor loaded from the saved checkpoint.
    pub checkpoint_heldout_accuracy: Option<f64>,
    pub metrics: PathBuf,
    pub plot: PathBuf,
}

/// Runs the recipe: cluster, actors, warm start, GRPO, checkpoint, plot.
pub async fn run(config: &GrpoConfig) -> Result<GrpoReport> {
    config.validate()?;
    let started = Instant::now();
    std::fs::create_dir_all(&config.out)
        .map_err(|err| RecipeError::io(format!("creating {}", config.out.display()), err))?;
    let cluster = start_cluster(config.cluster.as_deref(), 8.0).await?;
    let result = run_on(&cluster, config, started).await;
    if config.cluster.is_none() {
        cluster.shutdown().await;
    }
    result
}

async fn run_on(cluster: &Cluster, config: &GrpoConfig, started: Instant) -> Result<GrpoReport> {
    let run = run_id("grpo");
    let model = arithmetic_model();
    let source = ModelSource::fresh(model.clone(), config.seed);
    let trainer_config = TrainerConfig {
        source: source.clone(),
        pad_id: BuiltinTokenizer::PAD,
        optimizer: AdamWConfig::default(),
        schedule: LrSchedule::constant(config.lr),
        max_grad_norm: 1.0,
        micro_batch: 0,
        policy: PolicyConfig {
            clip: config.clip,
            aggregation: Aggregation::TokenMean,
            kl_coef: config.kl_coef,
            kl_estimator: KlEstimator::K3,
        },
    };
    let mut policy = PolicyActors::spawn(
        cluster,
        &run,
        trainer_config,
        config.trainers,
        config.rollouts,
    )
    .await?;
    let reference = Reference::spawn(
        cluster,
        SpawnOptions::new()
            .num_cpus(2.0)
            .name(format!("{run}/reference")),
        source,
        BuiltinTokenizer::PAD,
    )
    .await?;
    let reward = RuleReward::spawn(
        cluster,
        SpawnOptions::new()
            .num_cpus(0.5)
            .name(format!("{run}/reward")),
        vec![
            VerifierSpec::ExactMatch { weight: 1.0 },
            VerifierSpec::DigitsOnly {
                weight: config.format_reward,
            },
        ],
    )
    .await?;
    let actors = GrpoActors {
        rollouts: policy.rollouts.clone(),
        trainers: policy.trainers.clone(),
        reference,
        reward,
    };
    let outcome = train(cluster, config, &mut policy, &actors, started).await;
    figures::stop(&actors, cluster).await;
    outcome
}

async fn train(
    cluster: &Cluster,
    config: &GrpoConfig,
    policy: &mut PolicyActors,
    actors: &GrpoActors,
    started: Instant,
) -> Result<GrpoReport> {
    let mut task = AdditionTask::new(config.held_out, config.seed)?;
    let held_out: Vec<Problem> = task.held_out().to_vec();
    let sft_path = config.out.join("sft_metrics.jsonl");
    let mut sft_log = MetricsLog::create(&sft_path)
        .map_err(|err| RecipeError::io(format!("creating {}", sft_path.display()), err))?;
    let sft: WarmStartOutcome =
        warm_start(policy, &mut task, &config.warm_start, &mut sft_log).await?;
    eprintln!(
        "warm start: {} steps, {:.1} s, held-out accuracy {:.1}%",
        sft.steps,
        sft.seconds,
        sft.heldout_accuracy * 100.0
    );
    let weights = policy
        .trainers
        .rank_zero(|trainer| async move { trainer.weights().await })
        .await?;
    actors.reference.load_weights(weights).await?;
    let schedule = LrSchedule {
        peak: config.lr,
        warmup_steps: 0,
        total_steps: config.steps as u64,
        min_ratio: 0.05,
        decay: Decay::Cosine,
    };
    policy
        .trainers
        .broadcast(|trainer| async move {
            trainer
                .start_phase(AdamWConfig::default(), schedule, 1.0)
                .await
        })
        .await?;

    let stats: Arc<Mutex<Option<StepStats>>> = Arc::new(Mutex::new(None));
    let settings = StageSettings {
        group_size: config.group_size,
        temperature: config.temperature,
        seed: config.seed,
    };
    let pipeline = stages::build(actors, &settings, stats.clone())?;
    let dot_path = config.out.join("pipeline.dot");
    std::fs::write(&dot_path, pipeline.to_dot())
        .map_err(|err| RecipeError::io(format!("writing {}", dot_path.display()), err))?;
    let inputs = (0..config.steps)
        .map(|step| stages::step_input(&task.sample(config.batch), config.group_size, step))
        .collect::<std::result::Result<Vec<_>, _>>()?;

    let metrics_path = config.out.join("metrics.jsonl");
    let log = MetricsLog::create(&metrics_path)
        .map_err(|err| RecipeError::io(format!("creating {}", metrics_path.display()), err))?;
    let progress = Progress::new("grpo", config.steps as u64, config.eval_every as u64);
    let record = Arc::new(Mutex::new(RunRecord::new(
        log,
        progress,
        sft.heldout_accuracy,
    )));
    let sync_ms: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let grpo_started = Instant::now();
    let sync = weight_sync_edge(&policy.trainers, &policy.rollouts, sync_ms.clone());
    let read_figures = {
        let (stats, sync_ms, group_size) = (stats.clone(), sync_ms.clone(), config.group_size);
        move |report: &StepReport| -> Result<StepFigures> {
            let step_stats = stats.lock().ok().and_then(|mut slot| slot.take());
            let mut figures = StepFigures::from_report(report, group_size, step_stats.as_ref())?;
            figures.weight_sync_ms = sync_ms
                .lock()
                .ok()
                .and_then(|all| all.last().copied())
                .unwrap_or(0.0);
            Ok(figures)
        }
    };
    let observe = observer(
        record.clone(),
        policy.rollouts.clone(),
        held_out.clone(),
        (config.eval_every, config.steps),
        started,
        read_figures,
    );
    pipeline
        .run_observed(
            config.steps,
            config.max_staleness,
            policy.version,
            |step| inputs[step].clone(),
            sync,
            observe,
        )
        .await?;
    let grpo_s = grpo_started.elapsed().as_secs_f64();
    let (figures, accuracy_curve) = {
        let record = record.lock().map_err(|_| {
            RecipeError::Config("the run's record was poisoned by a panic".to_string())
        })?;
        record.progress.finish();
        (record.figures.clone(), record.accuracy.clone())
    };

    let final_accuracy = accuracy_curve
        .last()
        .map(|(_, accuracy)| *accuracy)
        .unwrap_or(sft.heldout_accuracy);
    let checkpoint = policy
        .save_checkpoint(&config.out.join("checkpoint"))
        .await?;
    let checkpoint_heldout_accuracy = check_checkpoint(cluster, &checkpoint, &held_out).await;

    let plot_path = config.out.join("curves.png");
    write_plot(&plot_path, &figures, &accuracy_curve, config)?;
    let sync_all = sync_ms.lock().map(|all| all.clone()).unwrap_or_default();
    let rewards: Vec<f64> = figures.iter().map(|f| f.reward_mean).collect();
    let (reward_mean_first_10, reward_mean_last_10) = first_and_last(&rewards, 10);
    let tokens: usize = figures.iter().map(|f| f.rollout_tokens).sum();
    let generate_s: f64 = figures.iter().map(|f| f.generate_s).sum();
    let report = GrpoReport {
        heldout_accuracy_sft: sft.heldout_accuracy,
        heldout_accuracy_final: final_accuracy,
        improvement_points: (final_accuracy - sft.heldout_accuracy) * 100.0,
        steps: figures.len(),
        sft_steps: sft.steps,
        wall_s: started.elapsed().as_secs_f64(),
        sft_s: sft.seconds,
        grpo_s,
        weight_sync_ms_mean: mean(&sync_all),
        rollout_tokens_per_s: tokens as f64 / generate_s.max(1e-9),
        reward_mean_first_10,
        reward_mean_last_10,
        kl_final: figures.last().map(|f| f.kl).unwrap_or(0.0),
        max_staleness: config.max_staleness,
        parameters: arithmetic_model().num_parameters(),
        heldout_problems: held_out.len(),
        checkpoint,
        checkpoint_heldout_accuracy,
        metrics: metrics_path,
        plot: plot_path,
    };
    println!("{}", summary(&report));
    Ok(report)
}

fn write_plot(
    path: &std::path::Path,
    figures: &[StepFigures],
    accuracy: &[(usize, f64)],
    config: &GrpoConfig,
) -> Result<()> {
    let points = |value: &dyn Fn(&StepFigures) -> Option<f64>| -> Vec<(f64, f64)> {
        figures
            .iter()
            .filter_map(|f| Some((f.step as f64, value(f)?)))
            .collect()
    };
    let accuracy: Vec<(f64, f64)> = accuracy.iter().map(|(s, a)| (*s as f64, *a)).collect();
    let panels = [
        Panel {
            title: format!(
                "GRPO on 3-digit addition: reward and held-out accuracy ({} problems)",
                config.held_out
            ),
            x_label: "GRPO step".into(),
            series: vec![
                Series {
                    name: "mean reward".into(),
                    color: plot::BLUE,
                    points: points(&|f| Some(f.reward_mean)),
                },
                Series {
                    name: "held-out accuracy".into(),
                    color: plot::ORANGE,
                    points: accuracy,
                },
            ],
            y_range: Some((0.0, 1.1 + config.format_reward as f64 - 0.1)),
        },
        Panel {
            title: "KL to the reference (k3, per token)".into(),
            x_label: "GRPO step".into(),
            series: vec![Series {
                name: "KL".into(),
                color: plot::GREEN,
                points: points(&|f| Some(f.kl)),
            }],
            y_range: None,
        },
    ];
    plot::write_png(path, &panels, 1000, 420)
        .map_err(|err| RecipeError::io(format!("writing {}", path.display()), err))
}

/// The table printed at the end of a run.
pub fn summary(report: &GrpoReport) -> String {
    let percent = |value: f64| format!("{:.1}%", value * 100.0);
    summary_table(
        "GRPO on three-digit addition",
        &[
            ("parameters", report.parameters.to_string()),
            ("warm-start steps", report.sft_steps.to_string()),
            (
                "held-out accuracy after warm start",
                percent(report.heldout_accuracy_sft),
            ),
            ("GRPO steps", report.steps.to_string()),
            (
                "held-out accuracy after GRPO",
                percent(report.heldout_accuracy_final),
            ),
            (
                "improvement (points)",
                format!("{:+.1}", report.improvement_points),
            ),
            (
                "checkpoint reloaded, held-out accuracy",
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
                "rollout tokens/s",
                format!("{:.0}", report.rollout_tokens_per_s),
            ),
            (
                "weight sync, mean",
                format!("{:.1} ms", report.weight_sync_ms_mean),
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
            ("checkpoint", report.checkpoint.display().to_string()),
        ],
    )
}
