//! The recipes end to end on an embedded cluster, shortened to a few steps: every actor is its
//! own worker process, the pipeline, the data-parallel all-reduce and the weight sync all run
//! for real. Checks what a run leaves behind (metrics lines, plot, checkpoint that a fresh
//! rollout actor loads, the JSON figures), that the weight sync gives the rollouts exactly the
//! trainers' weights, that bounded staleness keeps rollouts within k versions, that a run
//! starts from another's saved warm start, and that the
//! driver stays off the data path (it carries under 1% of the bytes the stages move).
//!
//! Run: `cargo test -p troupe-actors --test recipes`

#[allow(dead_code)]
#[path = "../../examples/grpo_arithmetic.rs"]
mod grpo_example;

mod common;

use common::short_warm_start;
use std::path::Path;
use std::time::Duration;
use troupe::pipeline::WeightSyncEdge;
use troupe::Cluster;
use troupe_actors::recipes::grpo::GrpoConfig;
use troupe_actors::recipes::policy::{small_model, PolicyActors};
use troupe_actors::recipes::ppo::preferences::PreferenceConfig;
use troupe_actors::recipes::ppo::{self, PpoConfig};
use troupe_actors::recipes::warm_start::supervised_parts;
use troupe_actors::roles::reward::RewardSpec;
use troupe_actors::roles::rollout::RolloutEngine;
use troupe_actors::roles::trainer::{PolicyConfig, TrainerConfig};
use troupe_actors::roles::ModelSource;
use troupe_actors::tasks::arithmetic::AdditionTask;
use troupe_actors::train::optim::{AdamWConfig, LrSchedule};

fn lines(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    std::fs::read_to_string(path)?
        .lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

fn check_png(path: &Path) -> anyhow::Result<()> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path)?));
    let reader = decoder.read_info()?;
    let info = reader.info();
    anyhow::ensure!(
        info.width == 1000 && info.height >= 760,
        "{}x{}",
        info.width,
        info.height
    );
    Ok(())
}

/// The run's timeline: Chrome trace JSON with the `generate` stage on the driver, the actors'
/// calls tagged with their step, and the weight syncs.
fn check_timeline(path: &Path) -> anyhow::Result<()> {
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let events = trace["traceEvents"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{} has no traceEvents", path.display()))?;
    let complete = |cat: &'static str| {
        events
            .iter()
            .filter(move |e| e["ph"] == "X" && e["cat"] == cat)
    };
    anyhow::ensure!(
        complete("stage").any(|e| e["name"] == "generate" && e["args"]["step"].is_u64()),
        "no generate stage with its step in {}",
        path.display()
    );
    anyhow::ensure!(
        complete("call")
            .any(|e| e["args"]["step"].is_u64() && e["args"]["weight_version"].is_u64()),
        "no actor call tagged with its step in {}",
        path.display()
    );
    anyhow::ensure!(
        complete("sync").count() > 0,
        "no weight sync in {}",
        path.display()
    );
    Ok(())
}

fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("troupe-recipes-{name}-{}", std::process::id()))
}

/// Four GRPO steps of 4 prompts x 4 samples on addition (200 held out), measured every 2 steps,
/// after the short warm start, writing to `out`.
fn tiny_grpo(out: std::path::PathBuf) -> GrpoConfig {
    GrpoConfig {
        steps: 4,
        batch: 4,
        group_size: 4,
        eval_every: 2,
        out,
        warm_start: short_warm_start(),
        ..GrpoConfig::new(
            AdditionTask::spec(200, 0),
            vec![
                RewardSpec::new("exact_match", 1.0),
                RewardSpec::new("digits_only", 0.1),
            ],
        )
    }
}

/// A short GRPO run leaves one metrics line per step, a plot, a pipeline graph and a checkpoint
/// whose reloaded accuracy equals the run's final one.
async fn grpo_run_leaves_its_outputs(max_staleness: usize) -> anyhow::Result<()> {
    let out = scratch(&format!("grpo-{max_staleness}"));
    let config = GrpoConfig {
        max_staleness,
        ..tiny_grpo(out.clone())
    };
    let report = grpo_example::grpo(&config).await?;
    anyhow::ensure!(report.steps == 4 && report.sft_steps == 3, "{report:?}");
    let rows = lines(&out.join("metrics.jsonl"))?;
    anyhow::ensure!(rows.len() == 4, "{} metrics lines", rows.len());
    for (index, row) in rows.iter().enumerate() {
        anyhow::ensure!(row["step"] == index + 1, "{row}");
        let reward = row["reward_mean"].as_f64().unwrap_or(-1.0);
        anyhow::ensure!((0.0..=1.1).contains(&reward), "{row}");
        anyhow::ensure!(row["weight_sync_ms"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
        anyhow::ensure!(
            row["response_tokens"].as_f64().unwrap_or(0.0) > 0.0,
            "{row}"
        );
        for key in [
            "loss",
            "kl",
            "reward/exact_match",
            "groups_with_signal",
            "train_s",
        ] {
            anyhow::ensure!(
                row[key].as_f64().is_some_and(f64::is_finite),
                "{key} in {row}"
            );
        }
        let evaluated = !row["heldout_accuracy"].is_null();
        anyhow::ensure!(
            evaluated == ((index + 1) % 2 == 0),
            "evaluation steps: {row}"
        );
        // Three warm-start updates, then one per step: step i was generated with version
        // 3 + i (synchronous) or up to `max_staleness` versions older.
        let made_with = row["made_with_version"].as_u64().unwrap_or(u64::MAX);
        let newest = 3 + index as u64;
        anyhow::ensure!(
            made_with <= newest && made_with + max_staleness as u64 >= newest,
            "step {} made with version {made_with}, newest {newest}, staleness {max_staleness}",
            index + 1
        );
    }
    anyhow::ensure!(lines(&out.join("sft_metrics.jsonl"))?.len() == 3);
    check_png(&out.join("curves.png"))?;
    anyhow::ensure!(std::fs::read_to_string(out.join("pipeline.dot"))?.contains("generate"));
    anyhow::ensure!(report.timeline == out.join("timeline.json"));
    check_timeline(&report.timeline)?;
    for file in [
        "config.json",
        "model.safetensors",
        "optimizer.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        anyhow::ensure!(report.checkpoint.join(file).exists(), "{file} missing");
    }
    anyhow::ensure!(
        report.checkpoint_heldout_accuracy == Some(report.heldout_accuracy_final),
        "the reloaded checkpoint answers as the final policy did: {:?} vs {}",
        report.checkpoint_heldout_accuracy,
        report.heldout_accuracy_final
    );
    let json = serde_json::to_value(&report)?;
    for key in [
        "heldout_accuracy_sft",
        "heldout_accuracy_final",
        "steps",
        "wall_s",
        "weight_sync_ms_mean",
        "rollout_tokens_per_s",
        "driver_bytes_per_step",
        "stage_bytes_per_step",
    ] {
        anyhow::ensure!(json[key].is_number(), "--json lacks {key}: {json}");
    }
    anyhow::ensure!(report.rollout_tokens_per_s > 0.0, "{report:?}");
    anyhow::ensure!(
        json["heldout_curve"]
            .as_array()
            .is_some_and(|curve| curve.len() == 3),
        "held-out curve: start and steps 2 and 4: {json}"
    );
    // Calls and receipts only: tiny batches here (16 rows) make this the hardest case.
    anyhow::ensure!(
        report.driver_bytes_per_step < 0.25 * report.stage_bytes_per_step,
        "the driver carried {} bytes per step, the stages {}",
        report.driver_bytes_per_step,
        report.stage_bytes_per_step
    );
    std::fs::remove_dir_all(&out)?;
    println!("test grpo_run_leaves_its_outputs (max_staleness {max_staleness}) ... ok");
    Ok(())
}

/// A run saves its warm start; a second run starts from it (measuring the loaded policy as the
/// first measured it) with flat groups skipped, so its reference scores only the rows with
/// signal; a run for another seed is refused, the mismatch named.
async fn grpo_starts_from_a_saved_warm_start() -> anyhow::Result<()> {
    let out = scratch("saved-warm-start");
    let config = GrpoConfig {
        steps: 2,
        ..tiny_grpo(out.join("first"))
    };
    let first = grpo_example::grpo(&config).await?;
    let saved = out.join("first/warm_start");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "warm_start.json",
    ] {
        anyhow::ensure!(
            saved.join(file).exists(),
            "{file} missing from {}",
            saved.display()
        );
    }
    let held_out = lines(&saved.join("heldout.jsonl"))?;
    anyhow::ensure!(held_out.len() == 200, "{} held-out lines", held_out.len());
    anyhow::ensure!(
        held_out[0]["prompt"].is_string() && held_out[0]["reference"].is_string(),
        "{}",
        held_out[0]
    );
    let resumed_config = GrpoConfig {
        out: out.join("second"),
        steps: 3,
        skip_flat_groups: true,
        warm_start_from: Some(saved.clone()),
        ..config.clone()
    };
    let resumed = grpo_example::grpo(&resumed_config).await?;
    anyhow::ensure!(
        resumed.warm_start_from.as_deref() == Some(saved.as_path())
            && resumed.sft_steps == first.sft_steps
            && resumed.heldout_accuracy_sft == first.heldout_accuracy_sft,
        "resumed {resumed:?} from first {first:?}"
    );
    anyhow::ensure!(
        !out.join("second/sft_metrics.jsonl").exists(),
        "no warm start ran"
    );
    // Every row is scored by the reference of the first run; only the rows of groups with
    // signal by the second's (4 groups of 4 rows per step).
    let scored = |run: &str| -> anyhow::Result<Vec<(f64, f64)>> {
        let rows = lines(&out.join(run).join("metrics.jsonl"))?;
        Ok(rows
            .iter()
            .map(|row| {
                let signal = row["groups_with_signal"].as_f64().unwrap_or(-1.0);
                (
                    row["reference_rows"].as_f64().unwrap_or(-1.0),
                    signal * 16.0,
                )
            })
            .collect())
    };
    let first_rows = scored("first")?;
    anyhow::ensure!(
        first_rows.len() == 2 && first_rows.iter().all(|(rows, _)| *rows == 16.0),
        "{first_rows:?}"
    );
    let second_rows = scored("second")?;
    anyhow::ensure!(
        second_rows.len() == 3
            && second_rows
                .iter()
                .all(|(rows, with_signal)| (rows - with_signal).abs() < 1e-9),
        "reference rows against rows with signal: {second_rows:?}"
    );
    let other_seed = GrpoConfig {
        task: AdditionTask::spec(200, 1),
        out: out.join("third"),
        ..resumed_config
    };
    let refused = grpo_example::grpo(&other_seed).await.unwrap_err();
    anyhow::ensure!(
        format!("{refused:#}").contains("seed 0 there, 1 here"),
        "{refused:#}"
    );
    std::fs::remove_dir_all(&out)?;
    println!("test grpo_starts_from_a_saved_warm_start ... ok");
    Ok(())
}

/// A short PPO run: reward model, critic, GAE, per-token advantages, all through the pipeline.
async fn ppo_run_leaves_its_outputs() -> anyhow::Result<()> {
    let out = scratch("ppo");
    let config = PpoConfig {
        task: AdditionTask::spec(200, 0),
        steps: 3,
        batch: 4,
        samples: 2,
        eval_every: 3,
        out: out.clone(),
        warm_start: short_warm_start(),
        preferences: PreferenceConfig {
            batch: 8,
            max_steps: 2,
            eval_every: 2,
            ..PreferenceConfig::default()
        },
        ..PpoConfig::default()
    };
    let report = ppo::run(&config).await?;
    anyhow::ensure!(
        report.steps == 3 && report.reward_model_steps == 2,
        "{report:?}"
    );
    let rows = lines(&out.join("metrics.jsonl"))?;
    anyhow::ensure!(rows.len() == 3);
    for row in &rows {
        for key in ["rm_score_mean", "kl_sampled", "value_loss", "loss"] {
            anyhow::ensure!(
                row[key].as_f64().is_some_and(f64::is_finite),
                "{key} in {row}"
            );
        }
    }
    anyhow::ensure!(lines(&out.join("reward_model_metrics.jsonl"))?.len() == 2);
    check_png(&out.join("curves.png"))?;
    check_timeline(&report.timeline)?;
    anyhow::ensure!(report.checkpoint_heldout_accuracy == Some(report.heldout_accuracy_final));
    std::fs::remove_dir_all(&out)?;
    println!("test ppo_run_leaves_its_outputs ... ok");
    Ok(())
}

/// After supervised steps on the trainers and a sync, both rollouts hold exactly the trainers'
/// weights, and the version that came with them.
async fn weight_sync_is_exact(cluster: &Cluster) -> anyhow::Result<()> {
    let task = AdditionTask::new(200, 3)?;
    let config = TrainerConfig {
        source: ModelSource::fresh(small_model(&task), 3),
        pad_id: 0,
        optimizer: AdamWConfig::default(),
        schedule: LrSchedule::constant(1e-3),
        max_grad_norm: 1.0,
        micro_batch: 0,
        policy: PolicyConfig::default(),
    };
    let run = format!("sync-test-{}", std::process::id());
    let actors = PolicyActors::spawn(cluster, &run, config, 2, 2, RolloutEngine::Candle).await?;
    let edge = actors.weight_sync();
    edge.connect().await?;
    let parts = supervised_parts(&task, 0, 8, 2)?;
    actors
        .trainers
        .per_rank(parts, |trainer, (prompts, targets)| async move {
            trainer.sft_step(prompts, targets).await
        })
        .await?;
    let before = actors.rollouts.members()[0].weights().await?;
    let synced = edge.sync().await?;
    let ms = synced.milliseconds;
    anyhow::ensure!(synced.version == 1, "{synced:?}");
    let trained = actors.trainers.members()[0].weights().await?;
    anyhow::ensure!(
        trained.tensors != before.tensors,
        "the step changed the weights"
    );
    for rollout in actors.rollouts.members() {
        let held = rollout.weights().await?;
        anyhow::ensure!(
            held.tensors == trained.tensors,
            "a rollout's weights differ"
        );
        anyhow::ensure!(held.version == 1 && trained.version == 1);
    }
    actors.kill(cluster).await;
    println!("test weight_sync_is_exact ({ms:.1} ms) ... ok");
    Ok(())
}

fn main() -> std::process::ExitCode {
    troupe::init();
    troupe::testing::run_tests(5, Duration::from_secs(900), async {
        troupe::testing::with_local_cluster(Some(8.0), |cluster| async move {
            weight_sync_is_exact(&cluster).await
        })
        .await?;
        grpo_run_leaves_its_outputs(0).await?;
        grpo_run_leaves_its_outputs(1).await?;
        grpo_starts_from_a_saved_warm_start().await?;
        ppo_run_leaves_its_outputs().await
    })
}
