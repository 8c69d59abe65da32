//! The recommendation stack on an embedded cluster, every actor its own worker process:
//! - a shard killed with SIGKILL comes back from its checkpoint and update log with exactly its
//!   rows, and a retried step is applied once;
//! - rows are re-distributed when a shard is added and when one is removed, none lost or changed;
//! - a replica answers over HTTP with the trainer's own scores at the version it serves, keeps
//!   serving that version while training goes on and while a shard restarts, catches up with a
//!   full copy from the restarted shard, and refuses bad requests by name; a killed trainer
//!   comes back with the model of its last seal;
//! - the whole online run on MovieLens-100K (installed at run time) survives a killed shard and
//!   an added shard without losing an event, and learns.
//!
//! Run: `cargo test -p troupe-recsys --test shards`

use std::time::Duration;
use troupe::{Cluster, SpawnOptions};
use troupe_recsys::features::FeatureId;
use troupe_recsys::layout::ShardLayout;
use troupe_recsys::model::{Example, ModelShape};
use troupe_recsys::movielens::{cache_dir, MovieLens};
use troupe_recsys::online::{self, OnlineConfig};
use troupe_recsys::rebalance::rebalance;
use troupe_recsys::serving::{
    ClientError, PredictClient, PredictRequest, ServingConfig, ServingReplica,
};
use troupe_recsys::shard::{EmbeddingShard, EmbeddingShardHandle, ShardSpec};
use troupe_recsys::store::Store;
use troupe_recsys::table::{EmbeddingTable, UpdateBatch};
use troupe_recsys::trainer::{EventBatch, OnlineTrainer, TrainerConfig};

fn config() -> OnlineConfig {
    OnlineConfig {
        dim: 4,
        hidden: 8,
        min_count: 1,
        ..OnlineConfig::default()
    }
}

fn options() -> SpawnOptions {
    SpawnOptions::new().num_cpus(0.1).max_restarts(3)
}

fn spec(dir: &std::path::Path, shard: u32, shards: u32) -> ShardSpec {
    ShardSpec {
        config: config().table(),
        shard,
        shards,
        dir: Some(dir.join(format!("shard-{shard}"))),
        checkpoint_every: 4,
    }
}

async fn spawn_shards(
    cluster: &Cluster,
    dir: &std::path::Path,
    count: u32,
) -> anyhow::Result<Vec<EmbeddingShardHandle>> {
    let mut shards = Vec::new();
    for shard in 0..count {
        shards.push(EmbeddingShard::spawn(cluster, options(), spec(dir, shard, count)).await?);
    }
    Ok(shards)
}

fn user(value: u64) -> u64 {
    FeatureId::new(1, value).unwrap().0
}

fn kill9(pid: u32) {
    // SAFETY: kill(2) on a worker pid the head reported.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

async fn killed_shard_comes_back_with_its_rows(cluster: &Cluster) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shards = spawn_shards(cluster, dir.path(), 1).await?;
    let shard = &shards[0];
    let width = config().table().width();
    let ids: Vec<u64> = (0..500).map(user).collect();
    // The same steps applied to a table in this process: what the shard must come back as.
    let mut reference = EmbeddingTable::new(config().table(), 0, 1)?;
    let step_batch = |step: u64| {
        let chosen: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| id % 10 != step % 10)
            .collect();
        UpdateBatch {
            step,
            event_time: step,
            counts: vec![1; chosen.len()],
            grads: vec![0.01 * step as f32; chosen.len() * width],
            ids: chosen,
        }
    };
    for step in 1..=10u64 {
        shard.update(step_batch(step)).await?;
        reference.apply(&step_batch(step))?;
    }
    let before = shard.lookup(ids.clone()).await?;
    let pid = cluster.actor_info(shard).await?.pid;
    kill9(pid);
    // The next call waits for the restarted worker, whose constructor replays the log.
    let mut after = None;
    for _ in 0..100 {
        match shard.lookup(ids.clone()).await {
            Ok(values) => {
                after = Some(values);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let after = after.ok_or_else(|| anyhow::anyhow!("the shard did not come back"))?;
    anyhow::ensure!(after == before, "the restarted shard's rows differ");
    let stats = shard.stats().await?;
    anyhow::ensure!(
        stats.version == 10,
        "version {} after the restart",
        stats.version
    );
    anyhow::ensure!(
        stats.replayed_steps == 2,
        "replayed {} steps (checkpoint every 4)",
        stats.replayed_steps
    );
    anyhow::ensure!(cluster.actor_info(shard).await?.restarts == 1);
    // A retried step changes nothing.
    let applied = shard
        .update(UpdateBatch {
            step: 10,
            event_time: 10,
            ids: vec![user(1)],
            counts: vec![1],
            grads: vec![5.0; width],
        })
        .await?;
    anyhow::ensure!(!applied && shard.lookup(ids.clone()).await? == before);
    // Same accumulators and admission counts: the next step moves the shard as the reference.
    shard.update(step_batch(11)).await?;
    reference.apply(&step_batch(11))?;
    anyhow::ensure!(
        shard.lookup(ids.clone()).await? == reference.lookup(&ids)?,
        "after a step, the restarted shard differs from the reference"
    );
    let (got, want) = (shard.stats().await?, reference.stats());
    anyhow::ensure!(
        (got.rows, got.pending_ids, got.admitted) == (want.rows, want.pending_ids, want.admitted),
        "counts differ: {got:?} against {want:?}"
    );
    cluster.kill(shard).await?;
    println!("ok killed_shard_comes_back_with_its_rows");
    Ok(())
}

async fn rows_move_when_shards_are_added_and_removed(cluster: &Cluster) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shards = spawn_shards(cluster, dir.path(), 2).await?;
    let width = config().table().width();
    let ids: Vec<u64> = (0..2000).map(user).collect();
    let store = Store::Sharded(shards.clone());
    store
        .update(
            1,
            1,
            &ids,
            &vec![1; ids.len()],
            &vec![0.3; ids.len() * width],
            width,
        )
        .await?;
    let before = store.lookup(&ids, width).await?;
    let (three, report) = rebalance(
        cluster,
        shards,
        3,
        1,
        |i| spec(dir.path(), i, 3),
        |_| options(),
    )
    .await?;
    anyhow::ensure!(
        (500..900).contains(&report.rows_moved),
        "{} of 2000 rows moved to the third shard",
        report.rows_moved
    );
    let store = Store::Sharded(three.clone());
    anyhow::ensure!(
        store.lookup(&ids, width).await? == before,
        "rows changed moving to 3 shards"
    );
    let counts: Vec<u64> = futures::future::try_join_all(three.iter().map(|s| s.stats()))
        .await?
        .iter()
        .map(|s| s.rows)
        .collect();
    anyhow::ensure!(
        counts.iter().sum::<u64>() == 2000 && counts.iter().all(|c| *c > 500),
        "rows per shard {counts:?}"
    );
    let (two, report) = rebalance(
        cluster,
        three,
        2,
        1,
        |i| spec(dir.path(), i, 2),
        |_| options(),
    )
    .await?;
    anyhow::ensure!(report.shards_after == 2 && two.len() == 2);
    let store = Store::Sharded(two.clone());
    anyhow::ensure!(
        store.lookup(&ids, width).await? == before,
        "rows changed moving back to 2 shards"
    );
    // A misrouted id is refused by name, not answered with zeros.
    let foreign = ids
        .iter()
        .copied()
        .find(|id| troupe_recsys::features::shard_of(*id, 2) == 1)
        .unwrap();
    let err = two[0].lookup(vec![foreign]).await.unwrap_err().to_string();
    anyhow::ensure!(err.contains("belongs to shard 1"), "{err}");
    for shard in &two {
        cluster.kill(shard).await?;
    }
    println!("ok rows_move_when_shards_are_added_and_removed");
    Ok(())
}

fn example(user_id: u64, movie: u64, label: f32) -> Example {
    let mut fields = vec![vec![]; 8];
    fields[0] = vec![user(user_id)];
    fields[1] = vec![FeatureId::new(2, movie).unwrap().0];
    fields[6] = vec![
        FeatureId::of_str(7, "Drama").0,
        FeatureId::of_str(7, "Comedy").0,
    ];
    Example { fields, label }
}

fn batch(step: u64) -> EventBatch {
    EventBatch {
        examples: (0..64)
            .map(|i| {
                example(
                    i % 20 + step % 3,
                    (i * 7 + step) % 30,
                    ((i + step) % 2) as f32,
                )
            })
            .collect(),
        event_time: step,
    }
}

async fn score(client: &mut PredictClient, example: &Example) -> Result<(f32, u64), ClientError> {
    let reply = client
        .predict(&PredictRequest {
            fields: example.fields.clone(),
            min_version: 0,
        })
        .await?;
    Ok((reply.score, reply.version))
}

async fn replica_serves_the_trainers_model_at_its_version(cluster: &Cluster) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shards = spawn_shards(cluster, dir.path(), 2).await?;
    let config = config();
    let layout = ShardLayout {
        prefix: None,
        handles: shards.clone(),
    };
    let trainer_config = TrainerConfig {
        shape: ModelShape {
            fields: 8,
            dim: 4,
            hidden: 8,
        },
        dir: Some(dir.path().join("trainer")),
        ..config.trainer()
    };
    let trainer = OnlineTrainer::spawn(cluster, options(), trainer_config, layout.clone()).await?;
    let serving = ServingConfig {
        shape: ModelShape {
            fields: 8,
            dim: 4,
            hidden: 8,
        },
        slots: config.table().slots,
        bind: "127.0.0.1:0".to_string(),
        sync_timeout_ms: 20_000,
    };
    let replica =
        ServingReplica::spawn(cluster, options(), serving, layout, trainer.clone()).await?;
    let mut client = PredictClient::connect(&replica.address().await?).await?;
    let probe = example(3, 5, 1.0);
    match score(&mut client, &probe).await {
        Err(ClientError::Refused {
            status: 503, body, ..
        }) => {
            anyhow::ensure!(body.contains("no version"), "{body}")
        }
        other => anyhow::bail!("before any sync: {other:?}"),
    }
    for step in 1..=5 {
        trainer.train(batch(step)).await?;
    }
    let sealed = trainer.seal().await?;
    let report = replica.sync(sealed.version).await?;
    anyhow::ensure!(report.version == 5 && report.full_copies == 0 && report.rows_received > 0);
    let expected = trainer.predict(vec![probe.clone()]).await?[0];
    let (served, version) = score(&mut client, &probe).await?;
    anyhow::ensure!(
        version == 5 && (served - expected).abs() < 1e-6,
        "served {served} at {version}, trainer {expected}"
    );
    // Training goes on: the replica keeps answering from version 5.
    for step in 6..=8 {
        trainer.train(batch(step)).await?;
    }
    anyhow::ensure!(score(&mut client, &probe).await? == (served, 5));
    // A shard restarts after a seal: the sync to that seal fails (the restarted shard holds no
    // seals), and version 5 is still served.
    let sealed = trainer.seal().await?;
    kill9(cluster.actor_info(&shards[1]).await?.pid);
    let failed = replica.sync(sealed.version).await;
    anyhow::ensure!(
        failed.is_err(),
        "a sync through a restarted shard succeeded: {failed:?}"
    );
    anyhow::ensure!(score(&mut client, &probe).await? == (served, 5));
    trainer.train(batch(9)).await?;
    let sealed = trainer.seal().await?;
    let report = replica.sync(sealed.version).await?;
    anyhow::ensure!(
        report.full_copies >= 1,
        "the restarted shard sent no full copy: {report:?}"
    );
    let expected = trainer.predict(vec![probe.clone()]).await?[0];
    let (served, version) = score(&mut client, &probe).await?;
    anyhow::ensure!(
        version == sealed.version && (served - expected).abs() < 1e-6,
        "after the restart: served {served} at {version}, trainer {expected}"
    );
    // The trainer is killed: it comes back with the dense model of its last seal.
    kill9(cluster.actor_info(&trainer).await?.pid);
    let mut restored = None;
    for _ in 0..100 {
        if let Ok(scores) = trainer.predict(vec![probe.clone()]).await {
            restored = Some(scores[0]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restored = restored.ok_or_else(|| anyhow::anyhow!("the trainer did not come back"))?;
    anyhow::ensure!(
        (restored - expected).abs() < 1e-6,
        "restarted trainer scores {restored}, before {expected}"
    );
    anyhow::ensure!(trainer.step().await? == sealed.version);
    // Bad requests, each refused by name.
    let refused = |result: Result<_, ClientError>| match result {
        Err(ClientError::Refused { status, body, .. }) => Ok((status, body)),
        other => Err(anyhow::anyhow!("not refused: {other:?}")),
    };
    let (status, body) = refused(
        client
            .predict(&PredictRequest {
                fields: probe.fields.clone(),
                min_version: 1000,
            })
            .await,
    )?;
    anyhow::ensure!(
        status == 409 && body.contains("version 1000 is not served yet"),
        "{status} {body}"
    );
    let (status, body) = refused(
        client
            .predict(&PredictRequest {
                fields: vec![vec![user(1)]],
                min_version: 0,
            })
            .await,
    )?;
    anyhow::ensure!(
        status == 400 && body.contains("1 fields given"),
        "{status} {body}"
    );
    let mut bad = probe.fields.clone();
    bad[2] = vec![FeatureId::new(42, 1).unwrap().0];
    let (status, body) = refused(
        client
            .predict(&PredictRequest {
                fields: bad,
                min_version: 0,
            })
            .await,
    )?;
    anyhow::ensure!(status == 400 && body.contains("slot 42"), "{status} {body}");
    let status = replica.status().await?;
    anyhow::ensure!(
        status.refused == 4 && status.failed_syncs == 1,
        "{status:?}"
    );
    // Bad training input is refused by the trainer, by name.
    let mut wrong = batch(10);
    wrong.examples[3].label = 0.5;
    let err = trainer.train(wrong).await.unwrap_err().to_string();
    anyhow::ensure!(err.contains("example 3 has label 0.5"), "{err}");
    cluster.kill(&replica).await?;
    cluster.kill(&trainer).await?;
    for shard in &shards {
        cluster.kill(shard).await?;
    }
    println!("ok replica_serves_the_trainers_model_at_its_version");
    Ok(())
}

async fn online_run_survives_faults_and_learns(cluster: &Cluster) -> anyhow::Result<()> {
    let data = MovieLens::load(&cache_dir())?;
    anyhow::ensure!(data.events.len() == 100_000, "{} events", data.events.len());
    let dir = tempfile::tempdir()?;
    let config = OnlineConfig {
        limit_events: Some(15_000),
        events_per_s: 10_000.0,
        sync_period: Duration::from_millis(500),
        request_rate: 100.0,
        kill_shard_at_step: Some(12),
        add_shard_at_step: Some(30),
        shard_dir: Some(dir.path().to_path_buf()),
        throughput_seconds: 0.3,
        cpus_per_actor: 0.1,
        progress: false,
        ..OnlineConfig::default()
    };
    let mut lines = Vec::new();
    let run = online::run(cluster, &data, &config, |step| lines.push(step.clone())).await?;
    let f = &run.figures;
    println!("{}", online::summary(&run));
    let trained: usize = lines.iter().map(|l| l.batch).sum();
    anyhow::ensure!(trained == 15_000, "{trained} of 15000 events trained");
    anyhow::ensure!(
        f.shard_restarts >= 1 && f.steps_replayed_after_restart >= 1,
        "{f:?}"
    );
    anyhow::ensure!(f.shards_final == 3 && f.rows_moved > 0, "{f:?}");
    anyhow::ensure!(f.syncs > 0 && f.freshness_p99_s.is_some(), "{f:?}");
    anyhow::ensure!(f.serving_failed == 0, "{:?}", f.serving_first_error);
    // After a killed shard and an added one, the replicas answer exactly the trainer's scores.
    let gap = f
        .serving_max_gap_vs_trainer
        .ok_or_else(|| anyhow::anyhow!("no final check: {:?}", f.first_sync_error))?;
    anyhow::ensure!(gap < 1e-5, "replicas differ from the trainer by {gap}");
    anyhow::ensure!(f.serving_p99_ms.is_some() && f.sync_bytes < f.full_copy_bytes);
    anyhow::ensure!(
        f.auc_online.unwrap_or(0.0) > 0.6,
        "online AUC {:?}",
        f.auc_online
    );
    anyhow::ensure!(
        f.auc_batch.unwrap_or(0.0) > 0.55,
        "batch AUC {:?}",
        f.auc_batch
    );
    anyhow::ensure!(f.lookups_per_s_per_shard.unwrap_or(0.0) > 0.0);
    let png = dir.path().join("auc.png");
    online::write_auc_plot(&png, &run)?;
    anyhow::ensure!(std::fs::read(&png)?.starts_with(b"\x89PNG"));
    println!("ok online_run_survives_faults_and_learns");
    Ok(())
}

fn main() -> std::process::ExitCode {
    troupe::init();
    troupe::testing::run_tests(4, Duration::from_secs(600), async {
        troupe::testing::with_local_cluster(Some(4.0), |cluster| async move {
            killed_shard_comes_back_with_its_rows(&cluster).await?;
            rows_move_when_shards_are_added_and_removed(&cluster).await?;
            replica_serves_the_trainers_model_at_its_version(&cluster).await?;
            online_run_survives_faults_and_learns(&cluster).await
        })
        .await
    })
}
