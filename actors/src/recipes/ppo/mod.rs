//! PPO against a learned reward model, on three-digit addition: the policy is warm-started as in
//! the GRPO recipe; a reward model (the warm-started decoder with a scalar head) learns from
//! synthetic preference pairs with the Bradley-Terry loss; then PPO trains the policy on the
//! reward model's scores, with a critic (GAE advantages) and a per-token KL penalty to the
//! reference folded into the rewards. The reward model never sees the true answers during PPO.

mod figures;
pub mod preferences;
pub mod stages;

pub use figures::PpoStepFigures;

use super::grpo::stages::step_input;
use super::metrics::{summary_table, MetricsLog};
use super::plot::{self, Panel, Series};
use super::progress::Progress;
use super::record::{first_and_last, mean, observer, RunRecord};
use super::setup::{
    arithmetic_model, check_checkpoint, run_id, start_cluster, weight_sync_edge, PolicyActors,
    RecipeError, Result,
};
use super::warm_start::{warm_start, WarmStartConfig, WarmStartOutcome};
use crate::roles::critic::Critic;
use crate::roles::reference::Reference;
use crate::roles::reward_model::RewardModel;
use crate::roles::trainer::{PolicyConfig, TrainerConfig};
use crate::roles::ModelSource;
use crate::tasks::arithmetic::{AdditionTask, Problem};
use crate::tokenizer::BuiltinTokenizer;
use crate::train::losses::{Aggregation, KlEstimator};
use crate::train::optim::{AdamWConfig, Decay, LrSchedule};
use preferences::{train_reward_model, PreferenceConfig, PreferenceOutcome};
use serde::Serialize;
use stages::{LearnedFigures, PpoActors, PpoSettings};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use troupe::pipeline::StepReport;
use troupe::{Cluster, SpawnOptions};

/// Everything a PPO run is made from; `Default` is the recipe's setting.
#[derive(Debug, Clone, Serialize)]
pub struct PpoConfig {
    pub steps: usize,
    /// Prompts per step, and samples per prompt.
    pub batch: usize,
    pub samples: usize,
    /// Peak policy learning rate (cosine decay).
    pub lr: f64,
    pub critic_lr: f64,
    /// Weight of the per-token KL penalty in the rewards.
    pub kl_coef: f64,
    pub gamma: f64,
    pub lambda: f64,
    pub clip: f64,
    pub value_clip: f64,
    pub temperature: f32,
    pub max_staleness: usize,
    pub seed: u64,
    pub cluster: Option<String>,
    pub out: PathBuf,
    pub held_out: usize,
    pub eval_every: usize,
    pub trainers: usize,
    pub rollouts: usize,
    pub warm_start: WarmStartConfig,
    pub preferences: PreferenceConfig,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            steps: 150,
            batch: 64,
            samples: 2,
            lr: 2e-4,
            critic_lr: 1e-4,
            kl_coef: 0.1,
            gamma: 1.0,
            lambda: 0.95,
            clip: 0.2,
            value_clip: 0.2,
            temperature: 1.0,
            max_staleness: 0,
            seed: 0,
            cluster: None,
            out: PathBuf::from("runs/ppo_reward_model"),
            held_out: 500,
            eval_every: 10,
            trainers: 2,
            rollouts: 2,
            warm_start: WarmStartConfig::default(),
            preferences: PreferenceConfig::default(),
        }
    }
}

impl PpoConfig {
    fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(RecipeError::Config(why));
        if self.steps == 0 || self.batch == 0 || self.samples == 0 {
            return bad("--steps, --batch and --samples must be at least 1".into());
        }
        if self.batch * self.samples < self.trainers.max(self.rollouts) {
            return bad(format!(
                "{} samples per step cannot be split over {} trainers and {} rollouts",
                self.batch * self.samples,
                self.trainers,
                self.rollouts
            ));
        }
        for (name, value) in [("--lr", self.lr), ("--critic-lr", self.critic_lr)] {
            if !(value > 0.0 && value.is_finite()) {
                return bad(format!("{name} {value} must be positive"));
            }
        }
        if !(self.kl_coef >= 0.0 && self.kl_coef.is_finite()) {
            return bad(format!("--kl-coef {} must be >= 0", self.kl_coef));
        }
        if !(0.0..=1.0).contains(&self.gamma) || !(0.0..=1.0).contains(&self.lambda) {
            return bad(format!(
                "gamma {} and lambda {} must lie in [0, 1]",
                self.gamma, self.lambda
            ));
        }
        if self.eval_every == 0 || self.held_out < 200 {
            return bad(format!(
                "held-out evaluation needs eval_every >= 1 and at least 200 problems ({} given)",
                self.held_out
            ));
        }
        Ok(())
    }
}

/// What a run measured; `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct PpoReport {
    pub reward_model_steps: usize,
    pub reward_model_pair_accuracy: f64,
    pub rm_score_first_10: f64,
    pub rm_score_last_10: f64,
    pub rm_score_gain: f64,
    pub kl_final: f64,
    pub kl_max: f64,
    pub heldout_accuracy_sft: f64,
    pub heldout_accuracy_final: f64,
    pub steps: usize,
    pub sft_steps: usize,
    pub wall_s: f64,
    pub sft_s: f64,
    pub reward_model_s: f64,
    pub ppo_s: f64,
    pub weight_sync_ms_mean: f64,
    pub rollout_tokens_per_s: f64,
    pub parameters: usize,
    pub checkpoint: PathBuf,
    pub checkpoint_heldout_accuracy: Option<f64>,
    pub metrics: PathBuf,
    pub plot: PathBuf,
}

/// Runs the recipe: cluster, policy actors, warm start, reward model, PPO, checkpoint, plot.
pub async fn run(config: &PpoConfig) -> Result<PpoReport> {
    config.validate()?;
    let started = Instant::now();
    std::fs::create_dir_all(&config.out)
        .map_err(|err| RecipeError::io(format!("creating {}", config.out.display()), err))?;
    let cluster = start_cluster(config.cluster.as_deref(), 10.0).await?;
    let result = run_on(&cluster, config, started).await;
    if config.cluster.is_none() {
        cluster.shutdown().await;
    }
    result
}

fn create_log(path: &Path) -> Result<MetricsLog> {
    MetricsLog::create(path)
        .map_err(|err| RecipeError::io(format!("creating {}", path.display()), err))
}

async fn run_on(cluster: &Cluster, config: &PpoConfig, started: Instant) -> Result<PpoReport> {
    let run = run_id("ppo");
    let source = ModelSource::fresh(arithmetic_model(), config.seed);
    let trainer_config = TrainerConfig {
        source,
        pad_id: BuiltinTokenizer::PAD,
        optimizer: AdamWConfig::default(),
        schedule: LrSchedule::constant(config.lr),
        max_grad_norm: 1.0,
        micro_batch: 0,
        policy: PolicyConfig {
            clip: config.clip,
            aggregation: Aggregation::TokenMean,
            // The KL penalty is paid in the rewards; the trainer only measures it.
            kl_coef: 0.0,
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
    let mut task = AdditionTask::new(config.held_out, config.seed)?;
    let held_out: Vec<Problem> = task.held_out().to_vec();
    let mut sft_log = create_log(&config.out.join("sft_metrics.jsonl"))?;
    let sft = warm_start(&mut policy, &mut task, &config.warm_start, &mut sft_log).await?;
    eprintln!(
        "warm start: {} steps, {:.1} s, held-out accuracy {:.1}%",
        sft.steps,
        sft.seconds,
        sft.heldout_accuracy * 100.0
    );
    let sft_dir = policy
        .save_checkpoint(&config.out.join("sft_checkpoint"))
        .await?;
    let warm = ModelSource::Checkpoint { dir: sft_dir };
    let options = |cpus: f64, role: &str| {
        SpawnOptions::new()
            .num_cpus(cpus)
            .name(format!("{run}/{role}"))
    };
    let reference = Reference::spawn(
        cluster,
        options(1.0, "reference"),
        warm.clone(),
        BuiltinTokenizer::PAD,
    )
    .await?;
    let reward_model = RewardModel::spawn(
        cluster,
        options(2.0, "reward-model"),
        warm.clone(),
        BuiltinTokenizer::PAD,
        config.preferences.lr,
    )
    .await?;
    let critic = Critic::spawn(
        cluster,
        options(1.0, "critic"),
        warm,
        BuiltinTokenizer::PAD,
        config.critic_lr,
        Some(config.value_clip),
    )
    .await?;
    let actors = PpoActors {
        rollouts: policy.rollouts.clone(),
        trainers: policy.trainers.clone(),
        reference,
        reward_model,
        critic,
    };
    let outcome = train(
        cluster,
        config,
        &mut policy,
        &actors,
        &mut task,
        &held_out,
        sft,
        started,
    )
    .await;
    let _ = actors.trainers.kill(cluster).await;
    let _ = actors.rollouts.kill(cluster).await;
    let _ = cluster.kill(&actors.reference).await;
    let _ = cluster.kill(&actors.reward_model).await;
    let _ = cluster.kill(&actors.critic).await;
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn train(
    cluster: &Cluster,
    config: &PpoConfig,
    policy: &mut PolicyActors,
    actors: &PpoActors,
    task: &mut AdditionTask,
    held_out: &[Problem],
    sft: WarmStartOutcome,
    started: Instant,
) -> Result<PpoReport> {
    let mut rm_log = create_log(&config.out.join("reward_model_metrics.jsonl"))?;
    let preference: PreferenceOutcome = train_reward_model(
        &actors.reward_model,
        &policy.rollouts,
        |count| task.sample(count),
        held_out,
        &config.preferences,
        config.seed,
        &mut rm_log,
    )
    .await?;
    eprintln!(
        "reward model: {} steps, {:.1} s, held-out pairs ranked right {:.1}%",
        preference.steps,
        preference.seconds,
        preference.heldout_pair_accuracy * 100.0
    );
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
    let (score_mean, score_std) = calibrate(
        &actors.reward_model,
        &policy.rollouts,
        &task.sample(256),
        config.seed,
    )
    .await?;
    eprintln!(
        "reward-model scores of the warm-started policy: mean {score_mean:.3}, std {score_std:.3}"
    );
    let learned = Arc::new(Mutex::new(LearnedFigures::default()));
    let settings = PpoSettings {
        temperature: config.temperature,
        seed: config.seed,
        score_mean,
        score_std,
        kl_coef: config.kl_coef as f32,
        gamma: config.gamma as f32,
        lambda: config.lambda as f32,
    };
    let pipeline = stages::build(actors, &settings, learned.clone())?;
    let dot_path = config.out.join("pipeline.dot");
    std::fs::write(&dot_path, pipeline.to_dot())
        .map_err(|err| RecipeError::io(format!("writing {}", dot_path.display()), err))?;
    let inputs = (0..config.steps)
        .map(|step| step_input(&task.sample(config.batch), config.samples, step))
        .collect::<std::result::Result<Vec<_>, _>>()?;

    let metrics_path = config.out.join("metrics.jsonl");
    let progress = Progress::new("ppo", config.steps as u64, config.eval_every as u64);
    let record = Arc::new(Mutex::new(RunRecord::new(
        create_log(&metrics_path)?,
        progress,
        sft.heldout_accuracy,
    )));
    let sync_ms: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let ppo_started = Instant::now();
    let sync = weight_sync_edge(&policy.trainers, &policy.rollouts, sync_ms.clone());
    let read_figures = {
        let (learned, sync_ms) = (learned.clone(), sync_ms.clone());
        move |report: &StepReport| -> Result<PpoStepFigures> {
            let step_learned = learned
                .lock()
                .map(|mut slot| std::mem::take(&mut *slot))
                .unwrap_or_default();
            let mut figures = PpoStepFigures::from_report(report, &step_learned)?;
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
        held_out.to_vec(),
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
    let ppo_s = ppo_started.elapsed().as_secs_f64();
    let (figures, accuracy_curve) = {
        let record = record.lock().map_err(|_| {
            RecipeError::Config("the run's record was poisoned by a panic".to_string())
        })?;
        record.progress.finish();
        (record.figures.clone(), record.accuracy.clone())
    };
    let checkpoint = policy
        .save_checkpoint(&config.out.join("checkpoint"))
        .await?;
    let checkpoint_heldout_accuracy = check_checkpoint(cluster, &checkpoint, held_out).await;
    let plot_path = config.out.join("curves.png");
    write_plot(&plot_path, &figures, &accuracy_curve)?;

    let scores: Vec<f64> = figures.iter().map(|f| f.rm_score_mean).collect();
    let (rm_score_first_10, rm_score_last_10) = first_and_last(&scores, 10);
    let tokens: usize = figures.iter().map(|f| f.rollout_tokens).sum();
    let generate_s: f64 = figures.iter().map(|f| f.generate_s).sum();
    let sync_all = sync_ms.lock().map(|all| all.clone()).unwrap_or_default();
    let report = PpoReport {
        reward_model_steps: preference.steps,
        reward_model_pair_accuracy: preference.heldout_pair_accuracy,
        rm_score_first_10,
        rm_score_last_10,
        rm_score_gain: rm_score_last_10 - rm_score_first_10,
        kl_final: figures.last().map(|f| f.kl_sampled).unwrap_or(0.0),
        kl_max: figures.iter().map(|f| f.kl_sampled).fold(0.0, f64::max),
        heldout_accuracy_sft: sft.heldout_accuracy,
        heldout_accuracy_final: accuracy_curve
            .last()
            .map(|(_, accuracy)| *accuracy)
            .unwrap_or(sft.heldout_accuracy),
        steps: figures.len(),
        sft_steps: sft.steps,
        wall_s: started.elapsed().as_secs_f64(),
        sft_s: sft.seconds,
        reward_model_s: preference.seconds,
        ppo_s,
        weight_sync_ms_mean: mean(&sync_all),
        rollout_tokens_per_s: tokens as f64 / generate_s.max(1e-9),
        parameters: arithmetic_model().num_parameters(),
        checkpoint,
        checkpoint_heldout_accuracy,
        metrics: metrics_path,
        plot: plot_path,
    };
    println!("{}", summary(&report));
    Ok(report)
}

/// Mean and standard deviation of the reward model's scores of the policy's own samples: PPO
/// rewards are scores standardised by these, so the KL penalty has a known scale to weigh
/// against (a Bradley-Terry model's scores have an arbitrary offset and scale).
async fn calibrate(
    reward_model: &crate::roles::reward_model::RewardModelHandle,
    rollouts: &troupe::ActorGroup<crate::roles::rollout::RolloutHandle>,
    problems: &[Problem],
    seed: u64,
) -> Result<(f32, f32)> {
    let sampling = crate::generate::SamplingConfig {
        max_new_tokens: super::setup::ANSWER_TOKENS,
        temperature: 1.0,
        stop_tokens: vec![BuiltinTokenizer::EOS],
        seed: seed ^ 0xCA1B,
        ..Default::default()
    };
    let samples = super::setup::answers(rollouts, problems, sampling).await?;
    let sequences: Vec<Vec<u32>> = problems
        .iter()
        .zip(samples)
        .map(|(problem, sample)| {
            let mut tokens = problem.prompt_tokens();
            tokens.extend(sample);
            tokens
        })
        .collect();
    let scores = reward_model.score(sequences).await?;
    let n = scores.len().max(1) as f32;
    let mean = scores.iter().sum::<f32>() / n;
    let variance = scores.iter().map(|s| (s - mean).powi(2)).sum::<f32>() / n;
    Ok((mean, variance.sqrt().max(1e-3)))
}

fn write_plot(path: &Path, figures: &[PpoStepFigures], accuracy: &[(usize, f64)]) -> Result<()> {
    let points = |value: &dyn Fn(&PpoStepFigures) -> f64| -> Vec<(f64, f64)> {
        figures.iter().map(|f| (f.step as f64, value(f))).collect()
    };
    let panels = [
        Panel {
            title: "PPO with a learned reward model: reward-model score".into(),
            x_label: "PPO step".into(),
            series: vec![Series {
                name: "mean RM score".into(),
                color: plot::BLUE,
                points: points(&|f| f.rm_score_mean),
            }],
            y_range: None,
        },
        Panel {
            title: "Accuracy (the reward model never sees it)".into(),
            x_label: "PPO step".into(),
            series: vec![
                Series {
                    name: "sampled exact".into(),
                    color: plot::BLUE,
                    points: points(&|f| f.sampled_accuracy),
                },
                Series {
                    name: "held-out greedy".into(),
                    color: plot::ORANGE,
                    points: accuracy.iter().map(|(s, a)| (*s as f64, *a)).collect(),
                },
            ],
            y_range: Some((0.0, 1.0)),
        },
        Panel {
            title: "KL to the reference (sampled, per token)".into(),
            x_label: "PPO step".into(),
            series: vec![Series {
                name: "KL".into(),
                color: plot::GREEN,
                points: points(&|f| f.kl_sampled),
            }],
            y_range: None,
        },
    ];
    plot::write_png(path, &panels, 1000, 380)
        .map_err(|err| RecipeError::io(format!("writing {}", path.display()), err))
}

/// The table printed at the end of a run.
pub fn summary(report: &PpoReport) -> String {
    let percent = |value: f64| format!("{:.1}%", value * 100.0);
    summary_table(
        "PPO with a learned reward model, on three-digit addition",
        &[
            ("parameters (policy)", report.parameters.to_string()),
            ("warm-start steps", report.sft_steps.to_string()),
            ("reward-model steps", report.reward_model_steps.to_string()),
            (
                "held-out pairs ranked right",
                percent(report.reward_model_pair_accuracy),
            ),
            ("PPO steps", report.steps.to_string()),
            (
                "RM score, first 10 steps",
                format!("{:.3}", report.rm_score_first_10),
            ),
            (
                "RM score, last 10 steps",
                format!("{:.3}", report.rm_score_last_10),
            ),
            (
                "KL to reference, last / max",
                format!("{:.4} / {:.4}", report.kl_final, report.kl_max),
            ),
            (
                "held-out accuracy, warm start",
                percent(report.heldout_accuracy_sft),
            ),
            (
                "held-out accuracy, after PPO",
                percent(report.heldout_accuracy_final),
            ),
            (
                "checkpoint reloaded, held-out accuracy",
                report
                    .checkpoint_heldout_accuracy
                    .map(percent)
                    .unwrap_or_else(|| "not checked".into()),
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
                "warm start / RM / PPO / total",
                format!(
                    "{:.0} s / {:.0} s / {:.0} s / {:.0} s",
                    report.sft_s, report.reward_model_s, report.ppo_s, report.wall_s
                ),
            ),
            ("metrics", report.metrics.display().to_string()),
            ("plot", report.plot.display().to_string()),
            ("checkpoint", report.checkpoint.display().to_string()),
        ],
    )
}
