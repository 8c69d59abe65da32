//! What a run leaves on disk and on the terminal: the AUC-over-time PNG and the summary table
//! (metrics.jsonl is written step by step by the caller, see `run`'s `on_step`).

use super::OnlineRun;
use std::path::Path;
use troupe_actors::recipes::metrics::summary_table;
use troupe_actors::recipes::plot::{write_png, Panel, Series, BLUE, ORANGE};

/// Writes `auc.png`: the online model's progressive AUC per window of 2,000 events over the
/// time line, and the batch baseline's on the same windows of the hold-out.
pub fn write_auc_plot(path: &Path, run: &OnlineRun) -> std::io::Result<()> {
    let panel = Panel {
        title: "AUC per 2,000 events (online: scored before training on them)".to_string(),
        x_label: "day of the MovieLens-100K time line".to_string(),
        series: vec![
            Series {
                name: "online".to_string(),
                color: BLUE,
                points: run.auc_online_by_day.clone(),
            },
            Series {
                name: "batch (first 80%, frozen)".to_string(),
                color: ORANGE,
                points: run.auc_batch_by_day.clone(),
            },
        ],
        y_range: Some((0.5, 0.9)),
    };
    write_png(path, &[panel], 900, 420)
}

fn figure(value: Option<f64>, digits: usize) -> String {
    value
        .map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".to_string())
}

/// The figures as a table for the terminal.
pub fn summary(run: &OnlineRun) -> String {
    let f = &run.figures;
    let mut rows = vec![
        (
            "events (rejected)",
            format!("{} ({})", f.events, f.events_rejected),
        ),
        ("steps", f.steps.to_string()),
        ("AUC online, last 20%", figure(f.auc_online, 4)),
        ("AUC batch baseline, last 20%", figure(f.auc_batch, 4)),
        (
            "freshness p50 / p99 (s)",
            format!(
                "{} / {}",
                figure(f.freshness_p50_s, 2),
                figure(f.freshness_p99_s, 2)
            ),
        ),
        ("sync period (s)", format!("{:.2}", f.sync_period_s)),
        (
            "serving p50 / p99 (ms; p99 target)",
            format!(
                "{} / {} ({:.0})",
                figure(f.serving_p50_ms, 2),
                figure(f.serving_p99_ms, 2),
                f.serving_p99_target_ms
            ),
        ),
        (
            "serving requests/s (target; refused)",
            format!(
                "{:.0} ({:.0}; {})",
                f.serving_requests_per_s, f.serving_target_rate, f.serving_refused
            ),
        ),
        (
            "bytes per sync / full copy",
            format!("{:.0} / {:.0}", f.sync_bytes, f.full_copy_bytes),
        ),
        ("lookups/s per shard", figure(f.lookups_per_s_per_shard, 0)),
        ("updates/s per shard", figure(f.updates_per_s_per_shard, 0)),
        (
            "rows (admitted, evicted)",
            format!("{} ({}, {})", f.rows, f.rows_admitted, f.rows_evicted),
        ),
        (
            "shard restarts (steps replayed)",
            format!("{} ({})", f.shard_restarts, f.steps_replayed_after_restart),
        ),
    ];
    if f.rows_moved > 0 {
        rows.push(("rows moved to a new shard", f.rows_moved.to_string()));
    }
    let rows: Vec<(&str, String)> = rows.into_iter().collect();
    summary_table("Online learning on MovieLens-100K", &rows)
}
