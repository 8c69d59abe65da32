//! Faults on an embedded cluster, every actor its own worker process:
//!
//! - a rollout, then a trainer, killed with SIGKILL while a weight sync is under way: the side
//!   that survives gets an error within seconds naming the collective group, the dead member's
//!   rank, its actor and its node (a trainer whose sends were all staged in shared memory before
//!   the rollout died learns it on its next sync, at once); nothing hangs;
//! - a short GRPO run whose actors are killed while steps run (a trainer, a rollout, the
//!   reference, then both trainers at once) finishes every step: a restarted trainer takes a
//!   surviving peer's state, two restarted trainers go back to the latest checkpoint, the
//!   rollouts are brought to the trainers' version; the report and `metrics.jsonl` say what
//!   failed and what it cost;
//! - a short PPO run whose critic, reward model and a trainer are killed finishes every step,
//!   the critic and reward model restored from what the run kept.
//!
//! Run: `cargo test -p troupe-actors --test faults`

#[allow(dead_code)]
#[path = "../../examples/grpo_arithmetic.rs"]
mod grpo_example;

mod common;

use common::short_warm_start;
use std::time::{Duration, Instant};
use troupe::{Cluster, SpawnOptions};
use troupe_actors::recipes::faults::parse_faults;
use troupe_actors::recipes::grpo::GrpoConfig;
use troupe_actors::recipes::ppo::preferences::PreferenceConfig;
use troupe_actors::recipes::ppo::{self, PpoConfig};
use troupe_actors::roles::critic::Critic;
use troupe_actors::roles::reward::RewardSpec;
use troupe_actors::roles::rollout::{Rollout, RolloutEngine, RolloutHandle};
use troupe_actors::roles::trainer::{PolicyConfig, Trainer, TrainerConfig, TrainerHandle};
use troupe_actors::roles::ModelSource;
use troupe_actors::tasks::arithmetic::AdditionTask;
use troupe_actors::ModelConfig;

/// Longest a survivor may take to report a dead peer.
const REPORTED_WITHIN: Duration = Duration::from_secs(15);

/// A 25M-parameter model (100 MB of weights): a sync long enough to kill someone during it.
fn sync_model() -> ModelSource {
    ModelSource::fresh(ModelConfig::tiny(64, 512, 6, 8, 8), 3)
}

fn kill9(pid: u32) {
    // SAFETY: kill(2) on a worker pid the head reported.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

async fn spawn_pair(
    cluster: &Cluster,
    rollouts: usize,
) -> anyhow::Result<(TrainerHandle, Vec<RolloutHandle>)> {
    let options = || SpawnOptions::new().num_cpus(0.5);
    let trainer = Trainer::spawn(
        cluster,
        options(),
        TrainerConfig::for_policy(sync_model(), 0, 1e-3, PolicyConfig::default()),
    )
    .await?;
    let mut handles = Vec::new();
    for _ in 0..rollouts {
        handles.push(
            Rollout::spawn(cluster, options(), sync_model(), 0, RolloutEngine::Candle).await?,
        );
    }
    Ok((trainer, handles))
}

async fn join(
    group: &str,
    trainer: &TrainerHandle,
    rollouts: &[RolloutHandle],
) -> anyhow::Result<()> {
    let destinations = rollouts.len();
    let joining_rollouts =
        futures::future::try_join_all(rollouts.iter().enumerate().map(|(index, rollout)| {
            rollout.join_weight_sync(group.to_string(), index, 1, destinations)
        }));
    let (trainer_joined, rollouts_joined) = tokio::join!(
        trainer.join_weight_sync(group.to_string(), 0, 1, destinations),
        joining_rollouts
    );
    trainer_joined?;
    rollouts_joined?;
    Ok(())
}

/// One healthy sync; returns how long it took.
async fn healthy_sync(
    trainer: &TrainerHandle,
    rollouts: &[RolloutHandle],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let pulls = futures::future::try_join_all(rollouts.iter().map(|r| r.pull_weights(0)));
    let (pushed, pulled) = tokio::join!(trainer.push_weights(), pulls);
    pushed?;
    pulled?;
    Ok(started.elapsed())
}

async fn a_rollout_killed_during_a_weight_sync(cluster: &Cluster) -> anyhow::Result<()> {
    let (trainer, rollouts) = spawn_pair(cluster, 2).await?;
    let group = "faults/rollout-killed";
    join(group, &trainer, &rollouts).await?;
    let took = healthy_sync(&trainer, &rollouts).await?;
    let victim = cluster.actor_info(&rollouts[1]).await?;
    let started = Instant::now();
    let push = trainer.push_weights();
    let pull_survivor = rollouts[0].pull_weights(0);
    let pull_victim = rollouts[1].pull_weights(0);
    let kill = async {
        tokio::time::sleep(took / 3).await;
        kill9(victim.pid);
    };
    let (pushed, _, pulled_by_victim, _) = tokio::time::timeout(
        REPORTED_WITHIN,
        futures::future::join4(push, pull_survivor, pull_victim, kill),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the sync hung after a rollout was killed"))?;
    let died = pulled_by_victim
        .err()
        .ok_or_else(|| anyhow::anyhow!("the killed rollout's pull succeeded"))?
        .to_string();
    anyhow::ensure!(died.contains(&victim.id), "{died}");
    // The trainer's sends may all have been staged before the rollout died: then the next sync
    // is where it learns, and it must learn at once.
    let err = match pushed {
        Err(err) => err.to_string(),
        Ok(_) => {
            let (pushed, _) = tokio::time::timeout(
                REPORTED_WITHIN,
                futures::future::join(trainer.push_weights(), rollouts[0].pull_weights(0)),
            )
            .await
            .map_err(|_| anyhow::anyhow!("the next sync hung with a dead rollout"))?;
            pushed
                .err()
                .ok_or_else(|| anyhow::anyhow!("the trainer's push succeeded with a dead rollout"))?
                .to_string()
        }
    };
    let reported = started.elapsed();
    for part in [group, "rank 2", victim.id.as_str(), victim.node_id.as_str()] {
        anyhow::ensure!(
            err.contains(part),
            "the error does not name `{part}`: {err}"
        );
    }
    println!(
        "test a_rollout_killed_during_a_weight_sync ... ok (healthy sync {:.0} ms; reported after {:.2} s: {err})",
        took.as_secs_f64() * 1e3,
        reported.as_secs_f64()
    );
    cluster.kill(&trainer).await?;
    for rollout in &rollouts {
        cluster.kill(rollout).await?;
    }
    Ok(())
}

async fn a_trainer_killed_during_a_weight_sync(cluster: &Cluster) -> anyhow::Result<()> {
    let (trainer, rollouts) = spawn_pair(cluster, 1).await?;
    let group = "faults/trainer-killed";
    join(group, &trainer, &rollouts).await?;
    healthy_sync(&trainer, &rollouts).await?;
    let victim = cluster.actor_info(&trainer).await?;
    // The rollout is waiting for the trainer's weights when the trainer dies (a trainer killed
    // after its bytes were staged in shared memory would leave the rollout a complete copy).
    let started = Instant::now();
    let pull = rollouts[0].pull_weights(0);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        kill9(victim.pid);
    };
    let (pulled, _) = tokio::time::timeout(REPORTED_WITHIN, futures::future::join(pull, kill))
        .await
        .map_err(|_| anyhow::anyhow!("the sync hung after the trainer was killed"))?;
    let reported = started.elapsed();
    let err = pulled
        .err()
        .ok_or_else(|| anyhow::anyhow!("the rollout's pull succeeded with a dead trainer"))?
        .to_string();
    for part in [group, "rank 0", victim.id.as_str(), victim.node_id.as_str()] {
        anyhow::ensure!(
            err.contains(part),
            "the error does not name `{part}`: {err}"
        );
    }
    println!(
        "test a_trainer_killed_during_a_weight_sync ... ok (reported after {:.2} s: {err})",
        reported.as_secs_f64()
    );
    let _ = cluster.kill(&trainer).await;
    cluster.kill(&rollouts[0]).await?;
    Ok(())
}

/// A critic that restarts loses what it learned, and takes it all back from a kept state (as
/// PPO's recovery does).
async fn a_restarted_critic_takes_its_state_back(cluster: &Cluster) -> anyhow::Result<()> {
    let source = ModelSource::fresh(ModelConfig::tiny(25, 16, 1, 2, 2), 4);
    let critic = Critic::spawn(
        cluster,
        SpawnOptions::new().num_cpus(0.5).max_restarts(1),
        source,
        0,
        1e-2,
        Some(0.2),
    )
    .await?;
    critic
        .train(
            vec![vec![1, 2, 3]],
            vec![vec![4, 5]],
            vec![vec![1.0, 0.5]],
            vec![vec![0.0, 0.0]],
        )
        .await?;
    let kept = critic.state().await?;
    anyhow::ensure!(kept.step == 1, "{} optimizer steps", kept.step);
    let before = cluster.actor_info(&critic).await?;
    cluster.restart(&critic).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.actor_info(&critic).await?.incarnation == before.incarnation
        || cluster.actor_info(&critic).await?.state() != troupe::proto::ActorState::Alive
    {
        anyhow::ensure!(Instant::now() < deadline, "the critic did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = critic.state().await?;
    anyhow::ensure!(fresh.step == 0, "the restart kept {} steps", fresh.step);
    critic.restore_state(kept.clone()).await?;
    let back = critic.state().await?;
    anyhow::ensure!(back.step == kept.step && back.moments.len() == kept.moments.len());
    for (a, b) in kept.params.iter().zip(&back.params) {
        anyhow::ensure!(a.name == b.name && a.data == b.data, "`{}` differs", a.name);
    }
    println!("test a_restarted_critic_takes_its_state_back ... ok");
    cluster.kill(&critic).await?;
    Ok(())
}

/// Ten GRPO steps of 4 prompts x 4 samples with actors killed at steps 3, 5, 7 and 9 (both
/// trainers at 9), checkpoints every 2 steps.
async fn grpo_survives_killed_actors() -> anyhow::Result<()> {
    let out = std::env::temp_dir().join(format!("troupe-faults-grpo-{}", std::process::id()));
    let config = GrpoConfig {
        steps: 10,
        batch: 4,
        group_size: 4,
        eval_every: 5,
        checkpoint_every: 2,
        faults: parse_faults("trainer-1@3,rollout-0@5,reference@7,trainer-0@9,trainer-1@9")?,
        out: out.clone(),
        warm_start: short_warm_start(),
        ..GrpoConfig::new(
            AdditionTask::spec(200, 0),
            vec![
                RewardSpec::new("exact_match", 1.0),
                RewardSpec::new("digits_only", 0.1),
            ],
        )
    };
    let report = grpo_example::grpo(&config).await?;
    anyhow::ensure!(report.steps == 10, "{} steps recorded", report.steps);
    let events = &report.recoveries;
    anyhow::ensure!(
        events.len() >= 4,
        "{} recoveries: {events:#?}",
        events.len()
    );
    let from: Vec<&str> = events.iter().map(|e| e.trainers_from.as_str()).collect();
    anyhow::ensure!(
        from.iter().any(|f| f.starts_with("peer trainer-")),
        "no recovery from a peer: {from:?}"
    );
    anyhow::ensure!(
        from.iter().any(|f| f.starts_with("checkpoint of step")),
        "no recovery from a checkpoint: {from:?}"
    );
    for role in ["trainer-1", "rollout-0", "reference"] {
        anyhow::ensure!(
            events
                .iter()
                .any(|e| e.restarted.iter().any(|r| r.starts_with(role))),
            "{role} never restarted: {events:#?}"
        );
    }
    for event in events {
        // A failure during a step's weight sync, after it trained, redoes nothing.
        anyhow::ensure!(
            event.resumed_at_step <= event.step + 1
                && event.steps_redone == event.step + 1 - event.resumed_at_step
                && event.seconds_lost > 0.0
                && !event.failure.is_empty(),
            "{event:?}"
        );
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl"))?;
    let noted = metrics
        .lines()
        .filter(|l| l.contains("\"recovery\""))
        .count();
    anyhow::ensure!(noted == events.len(), "{noted} recoveries in metrics.jsonl");
    anyhow::ensure!(
        report.checkpoint_heldout_accuracy.is_some(),
        "the final checkpoint was not checked"
    );
    println!(
        "test grpo_survives_killed_actors ... ok ({} recoveries, {} steps redone, {:.1} s lost: {from:?})",
        events.len(),
        report.steps_redone,
        report.seconds_lost
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

/// Six PPO steps with the critic, the reward model and a trainer killed at steps 2, 3 and 5.
async fn ppo_survives_killed_actors() -> anyhow::Result<()> {
    let out = std::env::temp_dir().join(format!("troupe-faults-ppo-{}", std::process::id()));
    let config = PpoConfig {
        task: AdditionTask::spec(200, 0),
        steps: 6,
        batch: 4,
        samples: 2,
        eval_every: 6,
        checkpoint_every: 2,
        faults: parse_faults("critic@2,reward-model@3,trainer-1@5")?,
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
    anyhow::ensure!(report.steps == 6, "{} steps recorded", report.steps);
    for role in ["critic", "reward-model", "trainer-1"] {
        anyhow::ensure!(
            report
                .recoveries
                .iter()
                .any(|e| e.restarted.iter().any(|r| r.starts_with(role))),
            "{role} never restarted: {:#?}",
            report.recoveries
        );
    }
    println!(
        "test ppo_survives_killed_actors ... ok ({} recoveries)",
        report.recoveries.len()
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

fn main() -> std::process::ExitCode {
    troupe::init();
    troupe::testing::run_tests(5, Duration::from_secs(900), async {
        troupe::testing::with_local_cluster(Some(8.0), |cluster| async move {
            a_rollout_killed_during_a_weight_sync(&cluster).await?;
            a_trainer_killed_during_a_weight_sync(&cluster).await?;
            a_restarted_critic_takes_its_state_back(&cluster).await
        })
        .await?;
        grpo_survives_killed_actors().await?;
        ppo_survives_killed_actors().await
    })
}
