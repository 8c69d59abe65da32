//! The timeline: every actor call a worker serves and every pipeline stage a driver runs is
//! recorded in its process (start, duration, method or stage, caller, step, weight version,
//! bytes) in a bounded ring that keeps the latest spans. `Cluster::timeline` gathers the rings of
//! the driver and every live worker; `chrome` writes them as Chrome trace JSON for Perfetto.
//!
//! Recording a call's span costs a wall-clock and a monotonic read and one short lock (about
//! 140 ns, `actor_calls` bench); `TROUPE_TIMELINE=0` in a process's environment, or
//! `set_recording(false)`, turns it off there.
//! The step and weight version a call works for travel with the call (`CallFrame`): a pipeline
//! stage sets them for the calls it makes (`with_step`), and a worker passes them on to the calls
//! its method makes.

pub mod chrome;
mod collect;

pub(crate) use collect::to_wire;
pub use collect::{gather, Timeline, TimelineSpan};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Spans kept per process (the oldest go first).
pub const CAPACITY: usize = 100_000;

/// What a span is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// A method call served by an actor.
    Call,
    /// A pipeline stage, on the driver that ran it.
    Stage,
    /// A pipeline's weight sync, on its driver.
    Sync,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Call => "call",
            SpanKind::Stage => "stage",
            SpanKind::Sync => "sync",
        }
    }

    pub fn parse(text: &str) -> Option<SpanKind> {
        match text {
            "call" => Some(SpanKind::Call),
            "stage" => Some(SpanKind::Stage),
            "sync" => Some(SpanKind::Sync),
            _ => None,
        }
    }
}

/// The step a piece of work belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepTag {
    pub step: Option<u64>,
    pub weight_version: Option<u64>,
}

/// One recorded span, as the process keeps it (the process's actor and node are added when the
/// spans are read).
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub kind: SpanKind,
    pub name: Arc<str>,
    pub start_unix_us: u64,
    pub duration_us: u64,
    pub tag: StepTag,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub caller: Arc<str>,
    pub failed: bool,
    /// A stage's group.
    pub group: Option<Arc<str>>,
}

/// The process's ring of spans.
pub(crate) struct Recorder {
    spans: Mutex<VecDeque<Recorded>>,
    dropped: AtomicU64,
    enabled: AtomicBool,
}

impl Recorder {
    fn new(enabled: bool) -> Recorder {
        Recorder {
            spans: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            enabled: AtomicBool::new(enabled),
        }
    }

    /// A recorder of its own, on, for measuring what recording costs.
    pub(crate) fn for_measurement() -> Recorder {
        Recorder::new(true)
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(crate) fn record(&self, span: Recorded) {
        if !self.enabled() {
            return;
        }
        let mut spans = self
            .spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if spans.len() >= CAPACITY {
            spans.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        spans.push_back(span);
    }

    /// Spans that overlap `[since, until]` (0: unbounded), oldest first, and how many the ring
    /// dropped so far.
    pub(crate) fn between(&self, since_unix_us: u64, until_unix_us: u64) -> (Vec<Recorded>, u64) {
        let spans = self
            .spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let chosen = spans
            .iter()
            .filter(|span| {
                overlaps(
                    span.start_unix_us,
                    span.duration_us,
                    since_unix_us,
                    until_unix_us,
                )
            })
            .cloned()
            .collect();
        (chosen, self.dropped.load(Ordering::Relaxed))
    }
}

/// This process's recorder (on unless `TROUPE_TIMELINE=0`).
pub(crate) fn recorder() -> &'static Recorder {
    static RECORDER: OnceLock<Recorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let enabled = std::env::var("TROUPE_TIMELINE").map_or(true, |value| value != "0");
        Recorder::new(enabled)
    })
}

/// Whether a span from `start` lasting `duration` overlaps `[since, until]` (microseconds since
/// the Unix epoch; an `until` of 0 is unbounded).
pub(crate) fn overlaps(start: u64, duration: u64, since: u64, until: u64) -> bool {
    let until = if until == 0 { u64::MAX } else { until };
    start <= until && start.saturating_add(duration) >= since
}

/// Turns this process's recording on or off (it starts on unless `TROUPE_TIMELINE=0`); spans
/// already recorded are kept.
pub fn set_recording(on: bool) {
    recorder().enabled.store(on, Ordering::Relaxed);
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn unix_us_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as u64
}

tokio::task_local! {
    static CURRENT_STEP: StepTag;
}

/// Runs `work` with calls it makes tagged with `tag`.
pub async fn with_step<F: std::future::Future>(tag: StepTag, work: F) -> F::Output {
    CURRENT_STEP.scope(tag, work).await
}

/// The step the current task works for, if a stage or a tagged call set one.
pub(crate) fn current_step() -> StepTag {
    CURRENT_STEP.try_with(|tag| *tag).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: u64, duration: u64) -> Recorded {
        Recorded {
            kind: SpanKind::Call,
            name: Arc::from("m"),
            start_unix_us: start,
            duration_us: duration,
            tag: StepTag::default(),
            bytes_in: 0,
            bytes_out: 0,
            caller: Arc::from("c"),
            failed: false,
            group: None,
        }
    }

    #[test]
    fn keeps_the_latest_and_counts_what_it_drops() {
        let recorder = Recorder::new(true);
        for i in 0..(CAPACITY as u64 + 5) {
            recorder.record(span(i, 1));
        }
        let (all, dropped) = recorder.between(0, 0);
        assert_eq!((all.len(), dropped), (CAPACITY, 5));
        assert_eq!(all[0].start_unix_us, 5);
        let (some, _) = recorder.between(100, 102);
        let starts: Vec<u64> = some.iter().map(|s| s.start_unix_us).collect();
        assert_eq!(
            starts,
            vec![99, 100, 101, 102],
            "spans overlapping the range"
        );
        let off = Recorder::new(false);
        off.record(span(1, 1));
        assert!(off.between(0, 0).0.is_empty());
    }

    #[tokio::test]
    async fn steps_reach_the_calls_made_under_them() {
        assert_eq!(current_step(), StepTag::default());
        let tag = StepTag {
            step: Some(3),
            weight_version: Some(2),
        };
        let seen = with_step(tag, async { current_step() }).await;
        assert_eq!(seen, tag);
    }
}
