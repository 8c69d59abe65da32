//! The figures of an online run, put together from what the run recorded: AUCs (over the
//! hold-out and per window of events, for the plot), freshness per event and replica,
//! serving latency, bytes per sync, and the shards' counters.

use super::load::LoadFigures;
use super::{OnlineConfig, Throughput};
use crate::metrics::{auc, quantile};
use crate::movielens::Event;
use crate::rebalance::RebalanceReport;
use crate::serving::{ReplicaStatus, SyncReport};
use crate::table::TableStats;
use std::collections::BTreeMap;

/// One training step as the driver saw it (a line of metrics.jsonl).
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepRecord {
    pub step: u64,
    /// Events streamed so far.
    pub events: usize,
    /// Time of the batch's last event (seconds since the Unix epoch).
    pub event_time: u64,
    pub batch: usize,
    pub loss: f32,
    /// Progressive AUC over the last 2,000 events.
    pub auc_last_2000: Option<f64>,
    pub step_ms: f64,
    /// How far behind the stream training is (seconds since the batch's last event arrived).
    pub lag_s: f64,
}

/// The run's figures (the bench's JSON).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct OnlineFigures {
    pub auc_online: Option<f64>,
    pub auc_batch: Option<f64>,
    pub batch_epochs: usize,
    pub holdout_events: usize,
    pub freshness_p50_s: Option<f64>,
    pub freshness_p99_s: Option<f64>,
    pub freshness_max_s: Option<f64>,
    pub sync_period_s: f64,
    pub lookups_per_s_per_shard: Option<f64>,
    pub updates_per_s_per_shard: Option<f64>,
    pub table_lookups_per_s: Option<f64>,
    pub table_updates_per_s: Option<f64>,
    pub throughput_batch: usize,
    pub throughput_rows: u64,
    pub serving_p50_ms: Option<f64>,
    pub serving_p99_ms: Option<f64>,
    pub serving_requests_per_s: f64,
    pub serving_target_rate: f64,
    pub serving_p99_target_ms: f64,
    pub serving_refused: u64,
    pub serving_failed: u64,
    pub serving_first_error: Option<String>,
    /// Mean bytes a replica received per sync (changed rows, removed ids, dense parameters).
    pub sync_bytes: f64,
    /// Mean bytes a full copy would have been at the same syncs (every row and the dense part).
    pub full_copy_bytes: f64,
    pub syncs: usize,
    pub sync_errors: usize,
    /// After the last sync: the largest difference between a replica's answer and the trainer's
    /// own score of the same event (32 events, every replica).
    pub serving_max_gap_vs_trainer: Option<f64>,
    /// (event, replica) pairs no sync ever served (events of the last steps).
    pub freshness_unserved: usize,
    pub first_sync_error: Option<String>,
    pub events: usize,
    pub events_rejected: u64,
    pub rejected: BTreeMap<String, u64>,
    pub steps: usize,
    pub train_seconds: f64,
    pub events_per_s_target: f64,
    pub events_per_s_achieved: f64,
    pub max_lag_s: f64,
    pub rows: u64,
    pub rows_admitted: u64,
    pub rows_evicted: u64,
    pub updates_not_admitted: u64,
    pub steps_replayed_after_restart: u64,
    pub shard_restarts: u32,
    pub shards_final: usize,
    pub rows_moved: u64,
    pub baseline_seconds: f64,
    pub replicas: Vec<ReplicaStatus>,
}

/// The figures and the curves to plot.
pub struct OnlineRun {
    pub figures: OnlineFigures,
    /// (day of the time line, progressive AUC of the online model over a window of events).
    pub auc_online_by_day: Vec<(f64, f64)>,
    /// The same windows of the hold-out, scored by the batch baseline.
    pub auc_batch_by_day: Vec<(f64, f64)>,
    pub kill_note: Option<String>,
}

pub(super) struct Inputs<'a> {
    pub config: &'a OnlineConfig,
    pub events: &'a [Event],
    pub split: usize,
    pub start_unix_us: u64,
    pub predictions: Vec<f32>,
    pub step_of_event: Vec<u64>,
    pub batch_scores: Vec<f32>,
    pub auc_online: Option<f64>,
    pub auc_batch: Option<f64>,
    pub steps: Vec<super::StepRecord>,
    pub syncs: Vec<(usize, SyncReport, u64)>,
    pub load: LoadFigures,
    pub throughput: Option<Throughput>,
    pub shard_stats: Vec<troupe::Result<TableStats>>,
    pub replica_status: Vec<troupe::Result<ReplicaStatus>>,
    pub shard_restarts: u32,
    pub sync_errors: Vec<String>,
    pub serving_gap: Option<f64>,
    pub kill_note: Option<String>,
    pub rebalance: Option<RebalanceReport>,
    pub rejected: BTreeMap<String, u64>,
    pub train_seconds: f64,
    pub baseline_seconds: f64,
}

const WINDOW: usize = 2000;

/// Seconds from each event's arrival to the first version live on each replica that holds its
/// step, over every (event, replica) pair that was served.
/// Also counts the pairs never served.
fn freshness(inputs: &Inputs) -> (Vec<f64>, usize) {
    let rate = inputs.config.events_per_s;
    // Every replica, also one that never synced: its events count as never served.
    let mut per_replica: BTreeMap<usize, Vec<(u64, u64)>> = (0..inputs.config.replicas as usize)
        .map(|replica| (replica, Vec::new()))
        .collect();
    for (replica, report, _) in &inputs.syncs {
        per_replica
            .entry(*replica)
            .or_default()
            .push((report.version, report.live_unix_us));
    }
    let mut out = Vec::new();
    let mut unserved = 0;
    for syncs in per_replica.values_mut() {
        syncs.sort();
        for (index, &step) in inputs.step_of_event.iter().enumerate() {
            let at = syncs.partition_point(|(version, _)| *version < step);
            if let Some((_, live)) = syncs.get(at) {
                let arrived = inputs.start_unix_us + (index as f64 / rate * 1e6) as u64;
                out.push(live.saturating_sub(arrived) as f64 / 1e6);
            } else {
                unserved += 1;
            }
        }
    }
    (out, unserved)
}

fn windows(events: &[Event], scores: &[f32], from: usize) -> Vec<(f64, f64)> {
    let first_time = events.first().map(|e| e.time).unwrap_or(0);
    let mut points = Vec::new();
    let mut start = 0;
    while start + WINDOW <= scores.len() {
        let labels: Vec<f32> = events[from + start..from + start + WINDOW]
            .iter()
            .map(|e| e.example.label)
            .collect();
        if let Some(value) = auc(&scores[start..start + WINDOW], &labels) {
            let day = (events[from + start + WINDOW - 1].time - first_time) as f64 / 86_400.0;
            points.push((day, value));
        }
        start += WINDOW;
    }
    points
}

pub(super) fn assemble(inputs: Inputs) -> OnlineRun {
    let config = inputs.config;
    let (fresh, unserved) = freshness(&inputs);
    let stats: Vec<&TableStats> = inputs
        .shard_stats
        .iter()
        .filter_map(|s| s.as_ref().ok())
        .collect();
    let sum = |f: fn(&TableStats) -> u64| stats.iter().map(|s| f(s)).sum::<u64>();
    let sync_count = inputs.syncs.len();
    let mean = |f: &dyn Fn(&(usize, SyncReport, u64)) -> u64| {
        if sync_count == 0 {
            0.0
        } else {
            inputs.syncs.iter().map(f).sum::<u64>() as f64 / sync_count as f64
        }
    };
    let dense_bytes = (config.shape().parameter_count() * 4) as u64;
    let throughput = inputs.throughput.clone();
    let figures = OnlineFigures {
        auc_online: inputs.auc_online,
        auc_batch: inputs.auc_batch,
        batch_epochs: config.batch_epochs,
        holdout_events: inputs.events.len() - inputs.split,
        freshness_p50_s: quantile(&fresh, 0.5),
        freshness_p99_s: quantile(&fresh, 0.99),
        freshness_max_s: quantile(&fresh, 1.0),
        sync_period_s: config.sync_period.as_secs_f64(),
        lookups_per_s_per_shard: throughput.as_ref().map(|t| t.lookups_per_s),
        updates_per_s_per_shard: throughput.as_ref().map(|t| t.updates_per_s),
        table_lookups_per_s: throughput.as_ref().map(|t| t.table_lookups_per_s),
        table_updates_per_s: throughput.as_ref().map(|t| t.table_updates_per_s),
        throughput_batch: throughput.as_ref().map(|t| t.batch).unwrap_or(0),
        throughput_rows: throughput.as_ref().map(|t| t.rows).unwrap_or(0),
        serving_p50_ms: quantile(&inputs.load.latencies_ms, 0.5),
        serving_p99_ms: quantile(&inputs.load.latencies_ms, 0.99),
        serving_requests_per_s: inputs.load.latencies_ms.len() as f64
            / inputs.load.seconds.max(1e-9),
        serving_target_rate: config.request_rate,
        serving_p99_target_ms: config.serving_p99_target_ms,
        serving_refused: inputs.load.refused,
        serving_failed: inputs.load.failed,
        serving_first_error: inputs.load.first_error.clone(),
        sync_bytes: mean(&|(_, report, _)| report.bytes),
        full_copy_bytes: mean(&|(_, _, full)| full + dense_bytes),
        syncs: sync_count,
        sync_errors: inputs.sync_errors.len(),
        serving_max_gap_vs_trainer: inputs.serving_gap,
        freshness_unserved: unserved,
        first_sync_error: inputs.sync_errors.first().cloned(),
        events: inputs.events.len(),
        events_rejected: inputs.rejected.values().sum(),
        rejected: inputs.rejected.clone(),
        steps: inputs.steps.len(),
        train_seconds: inputs.train_seconds,
        events_per_s_target: config.events_per_s,
        events_per_s_achieved: inputs.events.len() as f64 / inputs.train_seconds.max(1e-9),
        max_lag_s: inputs.steps.iter().map(|s| s.lag_s).fold(0.0, f64::max),
        rows: sum(|s| s.rows),
        rows_admitted: sum(|s| s.admitted),
        rows_evicted: sum(|s| s.evicted),
        updates_not_admitted: sum(|s| s.not_admitted_updates),
        steps_replayed_after_restart: sum(|s| s.replayed_steps),
        shard_restarts: inputs.shard_restarts,
        shards_final: inputs.shard_stats.len(),
        rows_moved: inputs.rebalance.as_ref().map(|r| r.rows_moved).unwrap_or(0),
        baseline_seconds: inputs.baseline_seconds,
        replicas: inputs
            .replica_status
            .iter()
            .filter_map(|s| s.as_ref().ok().cloned())
            .collect(),
    };
    OnlineRun {
        figures,
        auc_online_by_day: windows(inputs.events, &inputs.predictions, 0),
        auc_batch_by_day: windows(inputs.events, &inputs.batch_scores, inputs.split),
        kill_note: inputs.kill_note,
    }
}
