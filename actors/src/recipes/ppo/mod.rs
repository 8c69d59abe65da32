//! PPO against a learned reward model, on any task: the policy is warm-started as in the GRPO
//! recipe; a reward model (the warm-started decoder with a scalar head) learns from preference
//! pairs of the task's answers with the Bradley-Terry loss; then PPO trains the policy on the
//! reward model's scores, with a critic (GAE advantages) and a per-token KL penalty to the
//! reference folded into the rewards. The reward model never sees the task's verdicts during PPO.

mod keepers;
pub mod preferences;
pub mod stages;

use super::error::{RecipeError, Result};
use super::faults::check_roles;
use super::metrics::{summary_table, MetricsLog};
use super::policy::{run_id, small_model, start_cluster, PolicyActors};
use super::resilient::{run_recovering, RunParts};
use super::run_log::{HeldoutPoint, RunLog};
use super::warm_start::{warm_start, WarmStartConfig};
use crate::generate::SamplingConfig;
use crate::roles::critic::{Critic, GaeSettings};
use crate::roles::prompts::PromptSource;
use crate::roles::reference::Reference;
use crate::roles::reward_model::{RewardModel, RewardModelHandle};
use crate::roles::trainer::{PolicyConfig, TrainerConfig};
use crate::roles::ModelSource;
use crate::tasks::arithmetic::AdditionTask;
use crate::tasks::{Problem, Task, TaskSpec};
use crate::train::optim::LrSchedule;
use preferences::{train_reward_model, PreferenceConfig};
use serde::Serialize;
use stages::PpoActors;
use std::path::{Path, PathBuf};
use std::time::Instant;
use troupe::data::{Batch, StepMeta};
use troupe::{Cluster, SpawnOptions};

/// Everything a PPO run is made from; `Default` is the recipe's setting.
#[derive(Debug, Clone, Serialize)]
pub struct PpoConfig {
    /// What to learn (the reward model learns it from preference pairs of the task's answers).
    pub task: TaskSpec,
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
    pub cluster: Option<String>,
    pub out: PathBuf,
    pub eval_every: usize,
    pub trainers: usize,
    pub rollouts: usize,
    pub warm_start: WarmStartConfig,
    pub preferences: PreferenceConfig,
    /// The trainers' and the critic's state are kept every this many steps (0: never), for
    /// the run to go back to when they restart.
    pub checkpoint_every: usize,
    /// Actors the run kills while given steps run, to show it survives them.
    pub faults: Vec<super::faults::Fault>,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            task: AdditionTask::spec(500, 0),
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
            cluster: None,
            out: PathBuf::from("runs/ppo_reward_model"),
            eval_every: 10,
            trainers: 2,
            rollouts: 2,
            warm_start: WarmStartConfig::default(),
            preferences: PreferenceConfig::default(),
            checkpoint_every: 20,
            faults: Vec::new(),
        }
    }
}

impl PpoConfig {
    pub fn validate(&self) -> Result<()> {
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
        if self.eval_every == 0 || self.task.held_out < 200 {
            return bad(format!(
                "held-out evaluation needs eval_every >= 1 and at least 200 problems ({} given)",
                self.task.held_out
            ));
        }
        Ok(())
    }
}

/// What a run measured; `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct PpoReport {
    pub task: String,
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
    pub driver_bytes_per_step: f64,
    pub stage_bytes_per_step: f64,
    pub heldout_curve: Vec<HeldoutPoint>,
    pub parameters: usize,
    pub checkpoint: PathBuf,
    pub checkpoint_heldout_accuracy: Option<f64>,
    pub metrics: PathBuf,
    pub plot: PathBuf,
    /// The run's timeline (Chrome trace JSON: every stage and actor call), beside the metrics.
    pub timeline: PathBuf,
    /// Every failure the run survived: what failed, when, and what it cost.
    pub recoveries: Vec<super::recovery::RecoveryEvent>,
}

/// Runs the recipe: cluster, actors, warm start, reward model, PPO, checkpoint, plot.
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
    let task = config.task.build()?;
    let model = small_model(task.as_ref());
    let pad_id = task.tokenizer().pad_id();
    // The KL penalty is paid in the rewards; the trainer only measures it.
    let trainer_config = TrainerConfig::for_policy(
        ModelSource::fresh(model.clone(), config.task.seed),
        pad_id,
        config.lr,
        PolicyConfig::clipped(config.clip, 0.0),
    );
    let policy = PolicyActors::spawn(
        cluster,
        &run,
        trainer_config,
        config.trainers,
        config.rollouts,
        crate::roles::rollout::RolloutEngine::Candle,
    )
    .await?;
    let options = |cpus: f64, role: &str| {
        SpawnOptions::new()
            .num_cpus(cpus)
            .max_restarts(super::policy::ROLE_MAX_RESTARTS)
            .name(format!("{run}/{role}"))
    };
    let source = PromptSource::spawn(
        cluster,
        options(0.25, "prompts"),
        config.task.clone(),
        config.batch,
        config.samples,
    )
    .await?;
    // The reference, reward model and critic start from the warm-started policy: spawned
    // empty-handed here, they take its weights once the warm start is done.
    let fresh = ModelSource::fresh(model.clone(), config.task.seed);
    let reference =
        Reference::spawn(cluster, options(1.0, "reference"), fresh.clone(), pad_id).await?;
    let reward_model = RewardModel::spawn(
        cluster,
        options(2.0, "reward-model"),
        fresh.clone(),
        pad_id,
        config.preferences.lr,
    )
    .await?;
    let critic = Critic::spawn(
        cluster,
        options(1.0, "critic"),
        fresh,
        pad_id,
        config.critic_lr,
        Some(config.value_clip),
    )
    .await?;
    let actors = PpoActors {
        source,
        reference,
        reward_model,
        critic,
    };
    let outcome = train(cluster, config, &policy, &actors, task.as_ref(), started).await;
    policy.kill(cluster).await;
    let _ = cluster.kill(&actors.source).await;
    let _ = cluster.kill(&actors.reference).await;
    let _ = cluster.kill(&actors.reward_model).await;
    let _ = cluster.kill(&actors.critic).await;
    outcome
}

async fn train(
    cluster: &Cluster,
    config: &PpoConfig,
    policy: &PolicyActors,
    actors: &PpoActors,
    task: &dyn Task,
    started: Instant,
) -> Result<PpoReport> {
    // The graph comes first: its weight-sync edge carries the warm start's weights too.
    let sampling = SamplingConfig {
        max_new_tokens: task.answer_tokens(),
        temperature: config.temperature,
        stop_tokens: task.tokenizer().eos_id().into_iter().collect(),
        seed: config.task.seed,
        ..SamplingConfig::default()
    };
    let shaping = GaeSettings {
        kl_coef: config.kl_coef as f32,
        gamma: config.gamma as f32,
        lambda: config.lambda as f32,
    };
    let pipeline = stages::build(policy, actors, sampling, shaping)?;
    let mut sft_log = create_log(&config.out.join("sft_metrics.jsonl"))?;
    let sft = warm_start(
        policy,
        &pipeline,
        &config.task,
        &config.warm_start,
        &mut sft_log,
    )
    .await?;
    let weights = policy.weights().await?;
    actors.reference.load_weights(weights.clone()).await?;
    actors
        .reward_model
        .load_decoder_weights(weights.clone())
        .await?;
    actors.critic.load_decoder_weights(weights.clone()).await?;

    let mut rm_log = create_log(&config.out.join("reward_model_metrics.jsonl"))?;
    let preference = train_reward_model(
        &actors.reward_model,
        policy,
        task,
        &config.preferences,
        config.task.seed,
        &mut rm_log,
    )
    .await?;
    eprintln!(
        "reward model: {} steps, {:.1} s, held-out pairs ranked right {:.1}%",
        preference.steps,
        preference.seconds,
        preference.heldout_pair_accuracy * 100.0
    );
    policy
        .start_phase(LrSchedule::cosine(config.lr, config.steps as u64, 0.05))
        .await?;
    let (score_mean, score_std) =
        calibrate(&actors.reward_model, policy, task, config.task.seed).await?;
    eprintln!(
        "reward-model scores of the warm-started policy: mean {score_mean:.3}, std {score_std:.3}"
    );
    // Every step's stages see the calibration as step scalars (the critic standardises scores
    // with them).
    let mut calibration = StepMeta::default();
    calibration.set("score_mean", f64::from(score_mean));
    calibration.set("score_std", f64::from(score_std));
    let dot_path = config.out.join("pipeline.dot");
    std::fs::write(&dot_path, pipeline.to_dot())
        .map_err(|err| RecipeError::io(format!("writing {}", dot_path.display()), err))?;

    let mut log = RunLog::start(
        &config.out,
        "ppo",
        (config.steps, config.eval_every),
        started,
        sft.heldout_accuracy,
    )?;
    // A step that fails because actors died runs again once they are back: the trainers from
    // a peer or the latest checkpoint, the critic from its state kept after that checkpoint,
    // the reference and the reward model (frozen from here on) from what they were now.
    let mut recovery = keepers::recovery(cluster, config, policy, actors, weights, sft.version)
        .await?
        .started_at(started);
    check_roles(&config.faults, &recovery)?;
    run_recovering(
        &pipeline,
        RunParts {
            cluster,
            policy,
            task: &config.task,
            message_keys: &["rm_score_mean", "kl_sampled"],
            faults: &config.faults,
        },
        (config.steps, config.max_staleness, sft.version),
        |_| Batch::new(0).with_step_meta(calibration.clone()),
        &mut log,
        &mut recovery,
    )
    .await?;
    let phase = log.finish();
    let checkpoint = policy
        .save_checkpoint(&config.out.join("checkpoint"))
        .await?;
    task.write_tokenizer(&checkpoint, small_model(task).max_position_embeddings)?;
    let checkpoint_heldout_accuracy = PolicyActors::check_checkpoint(
        cluster,
        &checkpoint,
        task.tokenizer().pad_id(),
        &config.task,
    )
    .await
    .map_err(|err| eprintln!("could not check the checkpoint: {err:#}"))
    .ok();
    let timeline = super::run_log::write_timeline(cluster, &config.out, started).await;
    let plot_path = config.out.join("curves.png");
    log.plot(
        &plot_path,
        &format!(
            "PPO on {}: reward-model score and held-out success",
            config.task.name
        ),
        "rm_score_mean",
        &[
            ("KL to the reference (sampled, per token)", "kl_sampled"),
            ("critic value loss", "value_loss"),
        ],
    )?;
    let (rm_score_first_10, rm_score_last_10) = log.first_and_last("rm_score_mean", 10);
    let kl: Vec<f64> = log
        .series("kl_sampled")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let report = PpoReport {
        task: config.task.name.clone(),
        reward_model_steps: preference.steps,
        reward_model_pair_accuracy: preference.heldout_pair_accuracy,
        rm_score_first_10,
        rm_score_last_10,
        rm_score_gain: rm_score_last_10 - rm_score_first_10,
        kl_final: kl.last().copied().unwrap_or(0.0),
        kl_max: kl.iter().copied().fold(0.0, f64::max),
        heldout_accuracy_sft: sft.heldout_accuracy,
        heldout_accuracy_final: phase
            .heldout_curve
            .last()
            .map_or(sft.heldout_accuracy, |p| p.accuracy),
        steps: phase.steps,
        sft_steps: sft.steps,
        wall_s: started.elapsed().as_secs_f64(),
        sft_s: sft.seconds,
        reward_model_s: preference.seconds,
        ppo_s: phase.seconds,
        weight_sync_ms_mean: phase.weight_sync_ms_mean,
        rollout_tokens_per_s: phase.rollout_tokens_per_s,
        driver_bytes_per_step: phase.driver_bytes_per_step,
        stage_bytes_per_step: phase.stage_bytes_per_step,
        heldout_curve: phase.heldout_curve,
        parameters: model_parameters(task),
        checkpoint,
        checkpoint_heldout_accuracy,
        metrics: log.metrics_path(),
        plot: plot_path,
        timeline,
        recoveries: recovery.events.clone(),
    };
    println!("{}", summary(&report));
    Ok(report)
}

fn model_parameters(task: &dyn Task) -> usize {
    small_model(task).num_parameters()
}

/// Mean and standard deviation of the reward model's scores of the policy's own samples: PPO
/// rewards are scores standardised by these, so the KL penalty has a known scale to weigh
/// against (a Bradley-Terry model's scores have an arbitrary offset and scale).
async fn calibrate(
    reward_model: &RewardModelHandle,
    policy: &PolicyActors,
    task: &dyn Task,
    seed: u64,
) -> Result<(f32, f32)> {
    let problems: Vec<Problem> = (0..256)
        .map(|i| task.train_problem((5 << 30) + i))
        .collect();
    let sampling = SamplingConfig {
        max_new_tokens: task.answer_tokens(),
        temperature: 1.0,
        stop_tokens: task.tokenizer().eos_id().into_iter().collect(),
        seed: seed ^ 0xCA1B,
        ..Default::default()
    };
    let samples = policy.sample_answers(task, &problems, sampling).await?;
    let sequences = problems
        .iter()
        .zip(samples)
        .map(|(problem, sample)| {
            let mut tokens = task.prompt_ids(problem)?;
            tokens.extend(sample);
            Ok(tokens)
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let scores = reward_model.score(sequences).await?;
    let n = scores.len().max(1) as f32;
    let mean = scores.iter().sum::<f32>() / n;
    let variance = scores.iter().map(|s| (s - mean).powi(2)).sum::<f32>() / n;
    Ok((mean, variance.sqrt().max(1e-3)))
}

/// The table printed at the end of a run.
pub fn summary(report: &PpoReport) -> String {
    let percent = |value: f64| format!("{:.1}%", value * 100.0);
    summary_table(
        &format!("PPO with a learned reward model, on {}", report.task),
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
                "held-out success, warm start",
                percent(report.heldout_accuracy_sft),
            ),
            (
                "held-out success, after PPO",
                percent(report.heldout_accuracy_final),
            ),
            (
                "checkpoint reloaded, held-out success",
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
            ("timeline", report.timeline.display().to_string()),
            ("checkpoint", report.checkpoint.display().to_string()),
        ],
    )
}
