//! The whole online run the example and the bench drive, on any cluster: shard actors, an
//! online trainer and serving replicas are spawned; the MovieLens time line is replayed as a
//! stream at a fixed event rate and the trainer takes it in mini-batches as events arrive
//! (a batch closes when full or when its first event has waited `max_batch_wait`); every sync
//! period the trainer seals the shards and the replicas take the changed rows; an open-loop
//! load asks the replicas for predictions all along. Optional faults: a shard killed with
//! SIGKILL at a step, a shard added at a step. Then the measures: progressive AUC on the last
//! part of the time line against the batch baseline, freshness, serving latency, bytes per
//! sync, a shard's throughput.

mod actors;
mod baseline;
mod load;
mod outputs;
mod report;
mod stream;
mod sync;

pub use baseline::Throughput;
pub use outputs::{summary, write_auc_plot};
pub use report::{OnlineFigures, OnlineRun, StepRecord};

use crate::error::RecsysError;
use crate::features::SlotSet;
use crate::metrics::auc;
use crate::model::{Example, ModelShape};
use crate::movielens::{Event, MovieLens, SLOTS};
use crate::serving::ReplicaStatus;
use crate::shard::ShardSpec;
use crate::table::{TableConfig, TableStats};
use crate::trainer::TrainerConfig;
use actors::Actors;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe::{Cluster, SpawnOptions};

/// Everything a run can be told.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OnlineConfig {
    pub shards: u32,
    pub replicas: u32,
    pub batch_size: usize,
    pub max_batch_wait: Duration,
    /// Replay speed of the stream.
    pub events_per_s: f64,
    pub sync_period: Duration,
    /// Prediction requests per second to the replicas (open loop).
    pub request_rate: f64,
    pub request_workers: usize,
    /// The serving latency the run is held to (p99, milliseconds, at `request_rate`).
    pub serving_p99_target_ms: f64,
    pub dim: usize,
    pub hidden: usize,
    pub shard_learning_rate: f32,
    pub dense_learning_rate: f32,
    pub min_count: u32,
    pub ttl_days: u64,
    /// The last part of the time line the AUCs are measured on.
    pub holdout_fraction: f64,
    pub batch_epochs: usize,
    /// Only the first N events (tests).
    pub limit_events: Option<usize>,
    /// Checkpoints and update logs of the shards (`None`: memory only).
    pub shard_dir: Option<PathBuf>,
    pub kill_shard_at_step: Option<u64>,
    pub add_shard_at_step: Option<u64>,
    /// Seconds for each throughput measure (0: skip it).
    pub throughput_seconds: f64,
    pub cpus_per_actor: f64,
    pub seed: u64,
    pub progress: bool,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            shards: 2,
            replicas: 2,
            batch_size: 64,
            max_batch_wait: Duration::from_millis(200),
            events_per_s: 4000.0,
            sync_period: Duration::from_secs(1),
            request_rate: 200.0,
            request_workers: 8,
            serving_p99_target_ms: 10.0,
            dim: 16,
            hidden: 32,
            shard_learning_rate: 0.1,
            dense_learning_rate: 0.01,
            min_count: 2,
            ttl_days: 60,
            holdout_fraction: 0.2,
            batch_epochs: 1,
            limit_events: None,
            shard_dir: None,
            kill_shard_at_step: None,
            add_shard_at_step: None,
            throughput_seconds: 2.0,
            cpus_per_actor: 0.25,
            seed: 17,
            progress: true,
        }
    }
}

impl OnlineConfig {
    pub fn shape(&self) -> ModelShape {
        ModelShape {
            fields: SLOTS.len(),
            dim: self.dim,
            hidden: self.hidden,
        }
    }

    pub fn table(&self) -> TableConfig {
        TableConfig {
            dim: self.dim,
            slots: SlotSet {
                slots: SLOTS
                    .iter()
                    .map(|(slot, name)| (*slot, name.to_string()))
                    .collect(),
            },
            min_count: self.min_count,
            ttl_s: self.ttl_days * 86_400,
            learning_rate: self.shard_learning_rate,
            initial_accumulator: 0.1,
            init_scale: 0.05,
            seed: self.seed,
            retained_seals: 16,
        }
    }

    pub fn trainer(&self) -> TrainerConfig {
        TrainerConfig {
            shape: self.shape(),
            dense_learning_rate: self.dense_learning_rate,
            seed: self.seed,
            retained_seals: 16,
            dir: self.shard_dir.as_ref().map(|dir| dir.join("trainer")),
        }
    }

    fn shard_spec(&self, shard: u32, shards: u32) -> ShardSpec {
        ShardSpec {
            config: self.table(),
            shard,
            shards,
            dir: self
                .shard_dir
                .as_ref()
                .map(|dir| dir.join(format!("shard-{shard}"))),
            checkpoint_every: 50,
        }
    }

    /// Refuses settings the run cannot work with, by name.
    pub fn validate(&self) -> Result<(), RecsysError> {
        let bad = |why: String| Err(RecsysError::BadBatch(format!("online run: {why}")));
        if self.shards == 0 || self.replicas == 0 || self.batch_size == 0 {
            return bad(format!(
                "shards, replicas and batch_size must be at least 1 (given {}, {}, {})",
                self.shards, self.replicas, self.batch_size
            ));
        }
        for (name, value) in [
            ("events_per_s", self.events_per_s),
            ("request_rate", self.request_rate),
            ("cpus_per_actor", self.cpus_per_actor),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return bad(format!("{name} must be positive (given {value})"));
            }
        }
        if !(self.holdout_fraction > 0.0 && self.holdout_fraction < 1.0) {
            return bad(format!(
                "holdout_fraction must be between 0 and 1 (given {})",
                self.holdout_fraction
            ));
        }
        if self.sync_period.is_zero() {
            return bad("sync_period must be above zero".to_string());
        }
        match &self.shard_dir {
            None if self.kill_shard_at_step.is_some() => {
                return bad(
                    "kill_shard_at_step needs shard_dir: a shard without files comes back empty"
                        .to_string(),
                )
            }
            Some(dir) if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) => {
                return bad(format!(
                    "shard_dir {} holds an earlier run's shards and trainer; remove it or choose another",
                    dir.display()
                ))
            }
            _ => {}
        }
        Ok(())
    }

    fn options(&self) -> SpawnOptions {
        SpawnOptions::new()
            .num_cpus(self.cpus_per_actor)
            .max_restarts(3)
    }
}

/// What the run's actors left, gathered before they are stopped.
struct Served {
    streamed: stream::Streamed,
    syncs: Vec<sync::SyncSeen>,
    load: load::LoadFigures,
    sync_errors: Vec<String>,
    serving_gap: Option<f64>,
    shard_stats: Vec<troupe::Result<TableStats>>,
    shard_restarts: u32,
    replica_status: Vec<troupe::Result<ReplicaStatus>>,
    start_unix_us: u64,
}

/// Runs the whole thing (see the module's documentation). `on_step` sees every step as it ends
/// (the example writes metrics.jsonl from it).
pub async fn run(
    cluster: &Cluster,
    data: &MovieLens,
    config: &OnlineConfig,
    on_step: impl FnMut(&StepRecord),
) -> Result<OnlineRun, RecsysError> {
    config.validate()?;
    let events = match config.limit_events {
        Some(limit) => &data.events[..limit.min(data.events.len())],
        None => &data.events[..],
    };
    let split = ((1.0 - config.holdout_fraction) * events.len() as f64) as usize;
    if split < config.batch_size || events.len() - split < config.batch_size {
        return Err(RecsysError::Data(format!(
            "{} events are too few for batches of {} on both sides of the hold-out",
            events.len(),
            config.batch_size
        )));
    }
    let examples: Arc<Vec<Example>> = Arc::new(events.iter().map(|e| e.example.clone()).collect());
    let mut actors = None;
    let served = serve(cluster, config, events, &examples, &mut actors, on_step).await;
    if let Some(actors) = &actors {
        actors::stop(cluster, actors).await;
    }
    let served = served?;

    let holdout_labels: Vec<f32> = examples[split..].iter().map(|e| e.label).collect();
    let auc_online = auc(&served.streamed.predictions[split..], &holdout_labels);
    let train: Vec<(Example, u64)> = events[..split]
        .iter()
        .map(|e| (e.example.clone(), e.time))
        .collect();
    let baseline_started = Instant::now();
    let batch_scores = baseline::batch_baseline(
        config,
        &config.table(),
        &config.trainer(),
        &train,
        &examples[split..],
    )
    .await?;
    let baseline_seconds = baseline_started.elapsed().as_secs_f64();
    let auc_batch = auc(&batch_scores, &holdout_labels);
    let throughput = if config.throughput_seconds > 0.0 {
        Some(
            baseline::shard_throughput(
                cluster,
                &config.table(),
                config.throughput_seconds,
                config.shard_dir.as_ref().map(|d| d.join("throughput")),
            )
            .await?,
        )
    } else {
        None
    };
    Ok(report::assemble(report::Inputs {
        config,
        events,
        split,
        start_unix_us: served.start_unix_us,
        predictions: served.streamed.predictions,
        step_of_event: served.streamed.step_of_event,
        batch_scores,
        auc_online,
        auc_batch,
        steps: served.streamed.steps,
        syncs: served
            .syncs
            .into_iter()
            .map(|s| (s.replica, s.report, s.full_copy_bytes))
            .collect(),
        load: served.load,
        throughput,
        shard_stats: served.shard_stats,
        replica_status: served.replica_status,
        shard_restarts: served.shard_restarts,
        sync_errors: served.sync_errors,
        serving_gap: served.serving_gap,
        kill_note: served.streamed.kill_note,
        rebalance: served.streamed.rebalance,
        rejected: data.rejected.clone(),
        train_seconds: served.streamed.seconds,
        baseline_seconds,
    }))
}

/// Spawns the actors (into `actors`, so the caller stops them whatever happens), streams, and
/// gathers what they did. The sync loop and the load always end before this returns.
async fn serve(
    cluster: &Cluster,
    config: &OnlineConfig,
    events: &[Event],
    examples: &Arc<Vec<Example>>,
    actors: &mut Option<Actors>,
    on_step: impl FnMut(&StepRecord),
) -> Result<Served, RecsysError> {
    actors::spawn(cluster, config, actors).await?;
    let set = actors.as_mut().expect("spawned above");
    let replicas = Arc::new(tokio::sync::Mutex::new(set.replicas.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let syncs = tokio::spawn(sync::sync_loop(
        set.trainer.clone(),
        replicas.clone(),
        config.sync_period,
        stop.clone(),
        errors.clone(),
    ));
    let streamed = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(load::generate(load::LoadInputs {
        replicas: set.addresses.clone(),
        rate_per_s: config.request_rate,
        workers: config.request_workers,
        streamed: streamed.clone(),
        examples: examples.clone(),
        stop: stop.clone(),
    }));
    let start_unix_us = crate::unix_micros() + 100_000;
    let start = Instant::now() + Duration::from_millis(100);
    let outcome = stream::stream(
        stream::StreamInputs {
            cluster,
            config,
            events,
            examples,
            start,
            streamed,
            replicas,
        },
        set,
        on_step,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let load = load.await.unwrap_or_default();
    let syncs = syncs.await.unwrap_or_default();
    let streamed = outcome?;

    // The replicas, synced once more, must answer exactly what the trainer scores.
    let (version, _) = actors::seal_and_sync(&set.trainer, &set.replicas).await?;
    let probes: Vec<Example> = examples
        .iter()
        .rev()
        .step_by(97)
        .take(32)
        .cloned()
        .collect();
    let serving_gap =
        match actors::serving_gap(&set.trainer, &set.addresses, &probes, version).await {
            Ok(gap) => Some(gap),
            Err(err) => {
                errors
                    .lock()
                    .expect("errors")
                    .push(format!("final check: {err}"));
                None
            }
        };
    let shard_stats = futures::future::join_all(set.shards.iter().map(|s| s.stats())).await;
    let mut shard_restarts = 0;
    for shard in &set.shards {
        if let Ok(info) = cluster.actor_info(shard).await {
            shard_restarts += info.restarts;
        }
    }
    let replica_status = futures::future::join_all(set.replicas.iter().map(|r| r.status())).await;
    let sync_errors = errors.lock().expect("errors").clone();
    Ok(Served {
        streamed,
        syncs,
        load,
        sync_errors,
        serving_gap,
        shard_stats,
        shard_restarts,
        replica_status,
        start_unix_us,
    })
}
