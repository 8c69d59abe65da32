//! The metrics page's charts: one line chart per metric over the sampled hour, drawn as inline
//! SVG by the template from the polyline points made here (numbers only; series labels are
//! plain text the template escapes). Histogram buckets are left out (their `_sum` and `_count`
//! are drawn). The y axis spans the lines drawn (at most `MAX_LINES` per chart).

use crate::head::metric_history::{
    base_name, is_bucket, HistorySnapshot, SAMPLES_KEPT, SAMPLE_PERIOD,
};
use serde::Serialize;
use std::collections::BTreeMap;

pub(crate) const WIDTH: u32 = 560;
pub(crate) const HEIGHT: u32 = 170;
const LEFT: f64 = 8.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;
/// Colors of the lines, in order.
const PALETTE: [&str; 8] = [
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04",
];
/// The shortest time a chart spans.
const MIN_SPAN_MS: u64 = 60_000;
/// Lines drawn per chart at most (the others are listed as left out).
const MAX_LINES: usize = 8;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Line {
    pub(crate) label: String,
    pub(crate) color: &'static str,
    pub(crate) points: String,
    pub(crate) latest: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Chart {
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) kind: String,
    pub(crate) lines: Vec<Line>,
    pub(crate) left_out: usize,
    pub(crate) min: String,
    pub(crate) max: String,
    pub(crate) samples: usize,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChartsView {
    pub(crate) charts: Vec<Chart>,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) span: String,
    pub(crate) period_s: u64,
    pub(crate) refused: usize,
}

/// Charts of every metric in the history, by name; `now_ms` is the right edge, and the left is
/// the oldest sample held (at least a minute, at most an hour, before it).
pub(crate) fn charts(history: &HistorySnapshot, now_ms: u64) -> ChartsView {
    let oldest = history
        .series
        .iter()
        .filter_map(|(_, points)| points.first().map(|(at, _)| *at))
        .min()
        .unwrap_or(now_ms);
    let hour_ms = SAMPLES_KEPT as u64 * SAMPLE_PERIOD.as_millis() as u64;
    let span_ms = now_ms.saturating_sub(oldest).clamp(MIN_SPAN_MS, hour_ms);
    let start_ms = now_ms.saturating_sub(span_ms);
    let mut by_name: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for (key, points) in &history.series {
        if is_bucket(&key.name) {
            continue;
        }
        by_name
            .entry(key.name.as_str())
            .or_default()
            .push((key, points));
    }
    let charts = by_name
        .into_iter()
        .map(|(name, series)| {
            let meta = history
                .meta
                .get(name)
                .or_else(|| history.meta.get(base_name(name)))
                .cloned()
                .unwrap_or_default();
            let drawn = &series[..series.len().min(MAX_LINES)];
            let finite = || {
                drawn
                    .iter()
                    .flat_map(|(_, points)| points.iter())
                    .map(|(_, value)| *value)
                    .filter(|value| value.is_finite())
            };
            let low = finite().fold(f64::INFINITY, f64::min);
            let high = finite().fold(f64::NEG_INFINITY, f64::max);
            let (low, high) = if low.is_finite() {
                if high - low < 1e-9 {
                    (low - 1.0, high + 1.0)
                } else {
                    (low, high)
                }
            } else {
                (0.0, 1.0)
            };
            let lines = drawn
                .iter()
                .enumerate()
                .map(|(index, (key, points))| Line {
                    label: if key.labels.is_empty() {
                        name.to_string()
                    } else {
                        key.label_text()
                    },
                    color: PALETTE[index % PALETTE.len()],
                    points: polyline(points, start_ms, span_ms, low, high),
                    latest: points.last().map(|(_, v)| number(*v)).unwrap_or_default(),
                })
                .collect();
            Chart {
                name: name.to_string(),
                help: meta.help,
                kind: meta.kind,
                lines,
                left_out: series.len().saturating_sub(MAX_LINES),
                min: number(low),
                max: number(high),
                samples: series.iter().map(|(_, p)| p.len()).max().unwrap_or(0),
            }
        })
        .collect();
    ChartsView {
        charts,
        width: WIDTH,
        height: HEIGHT,
        span: if span_ms >= 120_000 {
            format!("{} min", span_ms / 60_000)
        } else {
            format!("{} s", span_ms / 1000)
        },
        period_s: SAMPLE_PERIOD.as_secs(),
        refused: history.refused,
    }
}

/// `x,y` pairs in the chart's pixel space; a lone point is drawn as a short flat segment so
/// it shows.
fn polyline(points: &[(u64, f64)], start_ms: u64, span_ms: u64, low: f64, high: f64) -> String {
    let plot_w = f64::from(WIDTH) - LEFT - RIGHT;
    let plot_h = f64::from(HEIGHT) - TOP - BOTTOM;
    let mut out: Vec<String> = points
        .iter()
        .filter(|(_, value)| value.is_finite())
        .map(|(at, value)| {
            let x = LEFT + (at.saturating_sub(start_ms) as f64 / span_ms as f64).min(1.0) * plot_w;
            let y = TOP + (1.0 - (value - low) / (high - low)) * plot_h;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    if out.len() == 1 {
        let lone = out[0].clone();
        if let Some((x, y)) = lone.split_once(',') {
            let x: f64 = x.parse().unwrap_or(LEFT);
            out.insert(0, format!("{:.1},{y}", (x - 4.0).max(LEFT)));
        }
    }
    out.join(" ")
}

/// A value as a short number.
fn number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value == value.trunc() && value.abs() < 1e12 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::metric_history::MetricHistory;

    #[test]
    fn charts_every_metric_but_buckets() {
        let history = MetricHistory::default();
        let now = 10_000_000;
        let text = "# HELP up Up.\n# TYPE up gauge\nup{a=\"x\"} 1\nup{a=\"y\"} 3\n\
                    lat_bucket{le=\"1\"} 2\nlat_sum 0.5\nlat_count 2\n";
        history.record(text, now - 20_000);
        history.record(text, now);
        let view = charts(&history.snapshot(), now);
        let names: Vec<_> = view.charts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["lat_count", "lat_sum", "up"]);
        let up = &view.charts[2];
        assert_eq!(up.help, "Up.");
        assert_eq!(up.lines.len(), 2);
        assert_eq!(up.lines[0].label, "a=\"x\"");
        assert_eq!((up.min.as_str(), up.max.as_str()), ("1", "3"));
        // Two samples each: the right edge is `now`, the low line sits at the bottom.
        let right = f64::from(WIDTH) - RIGHT;
        let bottom = f64::from(HEIGHT) - BOTTOM;
        assert!(up.lines[0]
            .points
            .ends_with(&format!("{right:.1},{bottom:.1}")));
        assert_eq!(up.lines[0].points.split(' ').count(), 2);
        assert_eq!(view.span, "60 s", "a young history spans a minute");
        let later = now + 30 * 60_000;
        history.record(text, later);
        assert_eq!(charts(&history.snapshot(), later).span, "30 min");
        let hour_later = now + 3_600_000;
        history.record(text, hour_later);
        let span = charts(&history.snapshot(), hour_later + 5_000).span;
        assert_eq!(span, "60 min", "at most an hour");
    }

    #[test]
    fn the_axis_spans_the_drawn_lines_only() {
        let history = MetricHistory::default();
        // Nine series: the ninth (left out) is far above the others.
        let text: String = (0..=MAX_LINES)
            .map(|i| {
                let value = if i == MAX_LINES { 1000 } else { i };
                format!("wide{{i=\"{i}\"}} {value}\n")
            })
            .collect();
        history.record(&text, 1_000);
        let view = charts(&history.snapshot(), 2_000);
        let chart = &view.charts[0];
        assert_eq!((chart.lines.len(), chart.left_out), (MAX_LINES, 1));
        assert_eq!((chart.min.as_str(), chart.max.as_str()), ("0", "7"));
    }
}
