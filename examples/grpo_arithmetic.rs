//! grpo_arithmetic: GRPO, the whole algorithm in one file. A ~1.3M-parameter decoder learns
//! three-digit addition on the embedded local cluster (or an existing one with `--cluster`).
//!
//! Read it top to bottom: the roles are spawned (a prompt source, 2 rollouts, a reference, a
//! reward actor running the reward functions, 2 trainers averaging gradients over TCP); the
//! GRPO graph is built from their methods (prompts -> generate -> score -> advantages, with the
//! reference beside them, -> train, and the trainers' weights resharded to the rollouts after
//! every step); a short supervised warm start runs (until 15% of 500 held-out problems are
//! solved); GRPO runs; the run is reported. The batches stay on the actors and move between
//! them directly: the driver sends calls and reads step figures. A step that fails because an
//! actor died is run again once the actor is back and brought up to date (`recipes/recovery.rs`;
//! `--inject-fault trainer-1@5` shows it). The task and its rewards are
//! configuration: `grpo_countdown.rs` runs this same file on another task. Under `--out`:
//! metrics.jsonl, sft_metrics.jsonl, curves.png, pipeline.dot, the warm start (which
//! `--warm-start-from` starts another run from) and the final checkpoint.
//!
//! Run: `cargo run --release -p troupe-actors --example grpo_arithmetic -- --json runs/grpo.json`
//! (add `--rollout-engine vllm` to generate with vLLM engines).

#[path = "grpo_flags.rs"]
mod grpo_flags;

use clap::Parser;
pub use grpo_flags::Args;
use std::time::Instant;
use troupe::data::Batch;
use troupe::pipeline::{Dispatch, PipelineBuilder};
use troupe::{ActorGroup, ActorHandle, SpawnOptions};
use troupe_actors::engines::vllm::python_env;
use troupe_actors::generate::SamplingConfig;
use troupe_actors::recipes::faults::check_roles;
use troupe_actors::recipes::grpo::{summary, GrpoConfig, GrpoReport};
use troupe_actors::recipes::metrics::MetricsLog;
use troupe_actors::recipes::policy::{
    run_id, small_model, start_cluster, PolicyActors, ROLE_MAX_RESTARTS,
};
use troupe_actors::recipes::recovery::{Checkpoints, Recovery};
use troupe_actors::recipes::resilient::{run_recovering, RunParts};
use troupe_actors::recipes::run_log::{write_timeline, RunLog};
use troupe_actors::recipes::saved_warm_start::{self, SavedWarmStart};
use troupe_actors::recipes::warm_start::warm_start;
use troupe_actors::roles::columns::*;
use troupe_actors::roles::prompts::PromptSource;
use troupe_actors::roles::reference::Reference;
use troupe_actors::roles::reward::{Reward, RewardSpec};
use troupe_actors::roles::rollout::RolloutEngine;
use troupe_actors::roles::trainer::{PolicyConfig, TrainerConfig};
use troupe_actors::roles::ModelSource;
use troupe_actors::tasks::arithmetic::AdditionTask;
use troupe_actors::train::optim::LrSchedule;

/// Runs GRPO as `config` says and reports what it measured.
pub async fn grpo(config: &GrpoConfig) -> anyhow::Result<GrpoReport> {
    config.validate()?;
    // A saved warm start made for another run is refused before anything starts.
    let saved = match &config.warm_start_from {
        Some(dir) => Some(saved_warm_start::load(dir, &config.task, config.layers)?),
        None => None,
    };
    std::fs::create_dir_all(&config.out)?;
    // On the embedded cluster the rollouts run here: find or make vLLM's venv once, before
    // they start, rather than in each rollout's constructor.
    let mut config = config.clone();
    if let (RolloutEngine::Vllm(engine), None) = (&mut config.rollout_engine, &config.cluster) {
        if engine.python.is_none() {
            let setup = std::time::Duration::from_secs_f64(engine.setup_timeout_s);
            engine.python = Some(
                python_env::find_or_make(None, setup)
                    .await
                    .map_err(|why| anyhow::anyhow!("vLLM's Python: {why}"))?,
            );
        }
    }
    let config = &config;
    let cluster = start_cluster(config.cluster.as_deref(), 8.0).await?;
    let outcome = grpo_on(&cluster, config, saved).await;
    if config.cluster.is_none() {
        cluster.shutdown().await;
    }
    outcome
}

async fn grpo_on(
    cluster: &troupe::Cluster,
    config: &GrpoConfig,
    saved: Option<SavedWarmStart>,
) -> anyhow::Result<GrpoReport> {
    let started = Instant::now();
    let run = run_id("grpo");
    let task = config.task.build()?;
    let model = troupe_actors::config::ModelConfig {
        num_hidden_layers: config.layers,
        ..small_model(task.as_ref())
    };
    let pad_id = task.tokenizer().pad_id();

    // 1. The roles. Trainers and rollouts start from the same model (fresh, or a saved warm
    //    start); the trainers join their all-reduce group.
    let initial = match &config.warm_start_from {
        Some(dir) => ModelSource::Checkpoint { dir: dir.clone() },
        None => ModelSource::fresh(model.clone(), config.task.seed),
    };
    let trainer_config = TrainerConfig::for_policy(
        initial,
        pad_id,
        config.lr,
        PolicyConfig {
            skip_zero_advantage: config.skip_flat_groups,
            entropy_coef: config.entropy_coef,
            tis_cap: config.tis_cap,
            ..PolicyConfig::clipped(config.clip, config.kl_coef)
        },
    );
    let policy = PolicyActors::spawn(
        cluster,
        &run,
        trainer_config.clone(),
        config.trainers,
        config.rollouts,
        config.rollout_engine.clone(),
    )
    .await?;
    let options = |cpus: f64, role: &str| {
        SpawnOptions::new()
            .num_cpus(cpus)
            .max_restarts(ROLE_MAX_RESTARTS)
            .name(format!("{run}/{role}"))
    };
    let source = PromptSource::spawn(
        cluster,
        options(0.25, "prompts"),
        config.task.clone(),
        config.batch,
        config.group_size,
    )
    .await?;
    // The reference computes while the trainers and rollouts wait for it: two threads.
    let reference = Reference::spawn(
        cluster,
        options(2.0, "reference"),
        trainer_config.source,
        pad_id,
    )
    .await?;
    let reward = Reward::spawn(
        cluster,
        options(0.5, "reward"),
        config.task.clone(),
        config.rewards.clone(),
        config.group_size,
    )
    .await?;
    let watched = vec![
        ("prompts".to_string(), source.actor_ref().clone()),
        ("reference".to_string(), reference.actor_ref().clone()),
        ("reward".to_string(), reward.actor_ref().clone()),
    ];
    let sources = ActorGroup::from_handles(vec![source]).named("source");
    let references = ActorGroup::from_handles(vec![reference.clone()]).named("reference");
    let rewards = ActorGroup::from_handles(vec![reward]).named("reward");
    let outcome = async {
        // 2. The GRPO graph: each stage is a role's method; columns name the edges.
        let sampling = SamplingConfig {
            max_new_tokens: task.answer_tokens(),
            temperature: config.temperature,
            stop_tokens: task.tokenizer().eos_id().into_iter().collect(),
            seed: config.task.seed,
            ..SamplingConfig::default()
        };
        let skip_flat_groups = config.skip_flat_groups;
        let pipeline = PipelineBuilder::new()
            .stage(
                "prompts",
                &sources,
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
                &rewards,
                Dispatch::RankZero,
                &[RESPONSE, PROBLEM],
                &[REWARD],
                |reward, call| async move { reward.score(call).await },
            )
            .stage(
                "advantages",
                &rewards,
                Dispatch::RankZero,
                &[REWARD],
                &[ADVANTAGE],
                |reward, call| async move { reward.advantages(call).await },
            )
            .stage(
                "reference",
                &references,
                Dispatch::RankZero,
                // A trainer that skips flat groups reads the reference only where the
                // advantage is not zero: then the reference waits for the advantages and
                // scores those rows alone.
                if config.skip_flat_groups {
                    &[PROMPT, RESPONSE, ADVANTAGE]
                } else {
                    &[PROMPT, RESPONSE]
                },
                &[REF_LOGPROB],
                move |reference, call| async move {
                    if skip_flat_groups {
                        reference.logprobs_with_signal(call).await
                    } else {
                        reference.logprobs(call).await
                    }
                },
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
            .build()?;
        std::fs::write(config.out.join("pipeline.dot"), pipeline.to_dot())?;

        // 3. The warm start: supervised steps on the task's worked answers, its weights reaching the
        //    rollouts over the pipeline's weight-sync edge, saved so that other runs can start
        //    from it (or a saved one, measured again); the reference then freezes them.
        let sft = match (&saved, &config.warm_start_from) {
            (Some(saved), Some(dir)) => {
                saved_warm_start::resume(&policy, &config.task, saved, dir).await?
            }
            _ => {
                let mut sft_log = MetricsLog::create(&config.out.join("sft_metrics.jsonl"))?;
                let sft = warm_start(
                    &policy,
                    &pipeline,
                    &config.task,
                    &config.warm_start,
                    &mut sft_log,
                )
                .await?;
                let record = SavedWarmStart {
                    task: config.task.clone(),
                    layers: config.layers,
                    outcome: sft.clone(),
                };
                let dir = config.out.join("warm_start");
                saved_warm_start::save(
                    &policy,
                    task.as_ref(),
                    &record,
                    &dir,
                    model.max_position_embeddings,
                )
                .await?;
                sft
            }
        };
        let frozen = policy.weights().await?;
        reference.load_weights(frozen.clone()).await?;
        policy
            .start_phase(LrSchedule {
                warmup_steps: config.lr_warmup,
                ..LrSchedule::cosine(config.lr, config.steps as u64, config.lr_floor)
            })
            .await?;

        // 4. GRPO: the pipeline runs the steps (within the staleness bound) and syncs weights
        //    after each; the observer logs each step and measures held-out success every 10.
        let mut log = RunLog::start(
            &config.out,
            "grpo",
            (config.steps, config.eval_every),
            started,
            sft.heldout_accuracy,
        )?;
        // A step that fails because an actor died is run again once the actor is back and
        // brought up to date: a peer's or the latest checkpoint's state for a trainer, the
        // current weights for a rollout, the frozen ones for the reference.
        let mut recovery = Recovery::new(cluster, &policy, watched, sft.version)
            .await?
            .with_reference(reference.clone(), frozen)
            .with_checkpoints(Checkpoints {
                dir: config.out.join("recovery"),
                every: config.checkpoint_every,
            })
            .started_at(started);
        check_roles(&config.faults, &recovery)?;
        run_recovering(
            &pipeline,
            RunParts {
                cluster,
                policy: &policy,
                task: &config.task,
                message_keys: &["reward_mean", "kl"],
                faults: &config.faults,
            },
            (config.steps, config.max_staleness, sft.version),
            |_| Batch::new(0),
            &mut log,
            &mut recovery,
        )
        .await?;
        let phase = log.finish();

        // 5. Report: the checkpoint (reloaded into a fresh rollout and measured), a plot, figures.
        let checkpoint = policy
            .save_checkpoint(&config.out.join("checkpoint"))
            .await?;
        task.write_tokenizer(&checkpoint, model.max_position_embeddings)?;
        let checkpoint_heldout_accuracy =
            PolicyActors::check_checkpoint(cluster, &checkpoint, pad_id, &config.task)
                .await
                .map_err(|err| eprintln!("could not check the checkpoint: {err:#}"))
                .ok();
        let timeline = write_timeline(cluster, &config.out, started).await;
        let plot = config.out.join("curves.png");
        let title = format!("GRPO on {}: reward, held-out success", config.task.name);
        log.plot(
            &plot,
            &title,
            "reward_mean",
            &[("KL to the reference (k3, per token)", "kl")],
        )?;
        let engines = policy
            .rollouts
            .broadcast(|rollout| async move { rollout.engine_stats().await })
            .await?;
        let report =
            GrpoReport::from_run(config, &sft, phase, &log, model.num_parameters(), started)
                .with_engines(&engines.into_iter().flatten().collect::<Vec<_>>())
                .with_checkpoint(checkpoint, checkpoint_heldout_accuracy, plot)
                .with_timeline(timeline)
                .with_recoveries(&recovery.events);
        println!("{}", summary(&report));
        Ok(report)
    }
    .await;
    policy.kill(cluster).await;
    let _ = sources.kill(cluster).await;
    let _ = references.kill(cluster).await;
    let _ = rewards.kill(cluster).await;
    outcome
}

#[allow(dead_code)] // `grpo_countdown.rs` and the tests include this file for `grpo` and `Args`.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    troupe::init();
    let args = Args::parse();
    let rewards = vec![
        RewardSpec::new("exact_match", 1.0),
        RewardSpec::new("digits_only", 0.1),
    ];
    let config = args.apply(GrpoConfig::new(AdditionTask::spec(500, args.seed), rewards));
    let report = grpo(&config).await?;
    if let Some(path) = &args.json {
        let written = troupe::report::write_json(path, &serde_json::to_value(&report)?)?;
        println!("wrote {}", written.display());
    }
    Ok(())
}
