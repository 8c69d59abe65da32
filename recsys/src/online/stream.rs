//! The stream of an online run: event `i` arrives at start + `i` / rate, and the trainer takes
//! the events that have arrived in mini-batches (a batch closes when it is full or when its
//! first event has waited `max_batch_wait`). Each batch's scores, taken before the step, are
//! the progressive evaluation. The run's faults happen here, between two steps: a shard killed
//! with SIGKILL, a shard added with its rows moved to it.

use super::actors::{kill_shard, seal_and_sync, Actors};
use super::{OnlineConfig, StepRecord};
use crate::error::RecsysError;
use crate::layout::ShardLayout;
use crate::metrics::auc;
use crate::model::Example;
use crate::movielens::Event;
use crate::rebalance::{rebalance, RebalanceReport};
use crate::serving::ServingReplicaHandle;
use crate::trainer::EventBatch;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe::Cluster;

/// What the stream left: each event's score and step, the steps, and the faults' notes.
pub(super) struct Streamed {
    pub(super) predictions: Vec<f32>,
    pub(super) step_of_event: Vec<u64>,
    pub(super) steps: Vec<StepRecord>,
    pub(super) kill_note: Option<String>,
    pub(super) rebalance: Option<RebalanceReport>,
    pub(super) seconds: f64,
}

pub(super) struct StreamInputs<'a> {
    pub(super) cluster: &'a Cluster,
    pub(super) config: &'a OnlineConfig,
    pub(super) events: &'a [Event],
    pub(super) examples: &'a [Example],
    pub(super) start: Instant,
    pub(super) streamed: Arc<AtomicUsize>,
    pub(super) replicas: Arc<tokio::sync::Mutex<Vec<ServingReplicaHandle>>>,
}

pub(super) async fn stream(
    inputs: StreamInputs<'_>,
    actors: &mut Actors,
    mut on_step: impl FnMut(&StepRecord),
) -> Result<Streamed, RecsysError> {
    let StreamInputs {
        cluster,
        config,
        events,
        examples,
        start,
        streamed,
        replicas,
    } = inputs;
    let progress = config.progress.then(|| {
        troupe_actors::recipes::progress::Progress::new(
            "online",
            events.len() as u64,
            (events.len() / 20).max(1) as u64,
        )
    });
    let rate = config.events_per_s;
    let arrival = |i: usize| start + Duration::from_secs_f64(i as f64 / rate);
    let mut out = Streamed {
        predictions: vec![f32::NAN; events.len()],
        step_of_event: vec![0; events.len()],
        steps: Vec::new(),
        kill_note: None,
        rebalance: None,
        seconds: 0.0,
    };
    let mut next = 0usize;
    while next < events.len() {
        tokio::time::sleep_until(arrival(next).into()).await;
        let full_at = arrival((next + config.batch_size - 1).min(events.len() - 1));
        let close = full_at.min(arrival(next) + config.max_batch_wait);
        tokio::time::sleep_until(close.into()).await;
        let arrived = (start.elapsed().as_secs_f64() * rate).floor() as usize + 1;
        let end = events
            .len()
            .min(next + config.batch_size)
            .min(arrived.max(next + 1));
        streamed.store(end, Ordering::Relaxed);
        let batch = EventBatch {
            examples: examples[next..end].to_vec(),
            event_time: events[next..end].iter().map(|e| e.time).max().unwrap_or(0),
        };
        let step_started = Instant::now();
        let report = actors
            .trainer
            .train(batch)
            .await
            .map_err(RecsysError::call(format!(
                "training on events {next}..{end}"
            )))?;
        if report.predictions.len() != end - next {
            return Err(RecsysError::BadBatch(format!(
                "the trainer scored {} of {} events",
                report.predictions.len(),
                end - next
            )));
        }
        out.predictions[next..end].copy_from_slice(&report.predictions);
        out.step_of_event[next..end].fill(report.step);
        let window = end.saturating_sub(2000)..end;
        let labels: Vec<f32> = examples[window.clone()].iter().map(|e| e.label).collect();
        let record = StepRecord {
            step: report.step,
            events: end,
            event_time: events[end - 1].time,
            batch: end - next,
            loss: report.loss,
            auc_last_2000: auc(&out.predictions[window], &labels),
            step_ms: step_started.elapsed().as_secs_f64() * 1e3,
            lag_s: arrival(end - 1).elapsed().as_secs_f64(),
        };
        on_step(&record);
        if let Some(progress) = &progress {
            progress.update(
                end as u64,
                &format!(
                    "step {} loss {:.3} auc {:.3}",
                    record.step,
                    record.loss,
                    record.auc_last_2000.unwrap_or(f64::NAN)
                ),
            );
        }
        out.steps.push(record);
        next = end;
        if config.kill_shard_at_step == Some(report.step) {
            let pid = kill_shard(cluster, &actors.shards[0]).await?;
            let note = format!(
                "shard 0 (pid {pid}) killed with SIGKILL after step {}",
                report.step
            );
            tracing::warn!("{note}");
            out.kill_note = Some(note);
        }
        if config.add_shard_at_step == Some(report.step) {
            out.rebalance = Some(add_shard(cluster, config, actors, &replicas).await?);
        }
    }
    if let Some(progress) = &progress {
        progress.finish();
    }
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

/// Between two steps: seal and sync every replica (the sync loop held off), move rows onto one
/// more shard, and give the trainer and the replicas the new layout.
async fn add_shard(
    cluster: &Cluster,
    config: &OnlineConfig,
    actors: &mut Actors,
    replicas: &tokio::sync::Mutex<Vec<ServingReplicaHandle>>,
) -> Result<RebalanceReport, RecsysError> {
    let replicas = replicas.lock().await;
    let (synced_at, errors) = seal_and_sync(&actors.trainer, &replicas).await?;
    for error in errors {
        tracing::warn!(%error, "a replica missed the sync before the re-distribution");
    }
    let count = actors.shards.len() as u32 + 1;
    let prefix = actors.prefix.clone();
    let (shards, report) = rebalance(
        cluster,
        actors.shards.clone(),
        count,
        synced_at,
        |index| config.shard_spec(index, count),
        |index| config.options().name(ShardLayout::name(&prefix, index)),
    )
    .await?;
    actors.shards = shards.clone();
    actors
        .trainer
        .set_shards(shards.clone())
        .await
        .map_err(RecsysError::call("giving the trainer the new shards"))?;
    for replica in replicas.iter() {
        replica
            .set_shards(shards.clone())
            .await
            .map_err(RecsysError::call("giving a replica the new shards"))?;
    }
    Ok(report)
}
