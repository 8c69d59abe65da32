//! The scheduling-latency histogram the head's state keeps (Prometheus-style, cumulative
//! buckets), and its rendering in the Prometheus text format. It lives with the state that
//! observes it, so that `metrics.rs` reads the state and the state never reads `metrics.rs`.

use std::fmt::Write as _;

/// Upper bounds (seconds) of the scheduling-latency histogram buckets.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0,
];

/// A Prometheus-style cumulative histogram.
#[derive(Debug, Default, Clone)]
pub(crate) struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub(crate) fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of metric `name` to `out`.
    pub(crate) fn write_prometheus(&self, out: &mut String, name: &str) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}
