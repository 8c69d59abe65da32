//! What a worker can tell about itself while it runs: the calls in flight (method, caller, step,
//! how long), how many wait for a slot, and each thread's native stack (`Worker.Inspect`, for
//! `troupe calls`); and the spans of the calls it served (`Worker.Timeline`).

use crate::timeline::StepTag;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use troupe_proto::{InflightCall, ThreadStack};

/// How long a stack capture may take in all.
const STACKS_DEADLINE: Duration = Duration::from_secs(5);

struct Entry {
    call_id: u64,
    method: Arc<str>,
    caller: Arc<str>,
    tag: StepTag,
    started: Instant,
}

/// The calls a worker is running and the ones waiting for a slot.
#[derive(Default)]
pub(super) struct Inflight {
    running: Mutex<HashMap<u64, Entry>>,
    next_key: AtomicU64,
    queued: AtomicU32,
}

impl Inflight {
    /// A call received that waits for a slot.
    pub(super) fn queued(&self) -> QueuedGuard<'_> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        QueuedGuard(self)
    }

    /// A call that starts running; it is listed until the guard drops.
    pub(super) fn begin(
        &self,
        call_id: u64,
        method: Arc<str>,
        caller: Arc<str>,
        tag: StepTag,
    ) -> RunningGuard<'_> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            call_id,
            method,
            caller,
            tag,
            started: Instant::now(),
        };
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key, entry);
        RunningGuard { table: self, key }
    }

    /// The calls running now, longest first.
    pub(super) fn snapshot(&self) -> (Vec<InflightCall>, u32) {
        let now = Instant::now();
        let running = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut calls: Vec<InflightCall> = running
            .values()
            .map(|entry| InflightCall {
                call_id: entry.call_id,
                method: entry.method.to_string(),
                caller: entry.caller.to_string(),
                elapsed_us: now.duration_since(entry.started).as_micros() as u64,
                step: entry.tag.step,
                weight_version: entry.tag.weight_version,
            })
            .collect();
        calls.sort_by_key(|call| std::cmp::Reverse(call.elapsed_us));
        (calls, self.queued.load(Ordering::Relaxed))
    }
}

pub(super) struct QueuedGuard<'a>(&'a Inflight);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) struct RunningGuard<'a> {
    table: &'a Inflight,
    key: u64,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.table
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.key);
    }
}

/// Every thread's stack, or why there are none.
pub(super) async fn thread_stacks() -> (Vec<ThreadStack>, String) {
    let captured =
        tokio::task::spawn_blocking(|| super::stacks::capture_all(STACKS_DEADLINE)).await;
    match captured {
        Ok(Ok(dumps)) => (
            dumps
                .into_iter()
                .map(|dump| ThreadStack {
                    tid: dump.tid,
                    name: dump.name,
                    frames: dump.frames,
                    note: dump.note,
                })
                .collect(),
            String::new(),
        ),
        Ok(Err(why)) => {
            let mut note = why.to_string();
            let mut source = std::error::Error::source(&why);
            while let Some(cause) = source {
                note.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            (Vec::new(), note)
        }
        Err(err) => (Vec::new(), format!("the capture failed: {err}")),
    }
}

/// What a worker adds to every call to record it, measured in process: the in-flight entry
/// (made and removed) and the timeline span (two clock reads, the span into a ring like the
/// worker's), over `iterations` calls. Returns (nanoseconds per call for the in-flight entry
/// alone, nanoseconds per call for the entry and the span). For the `actor_calls` bench.
pub fn measure_call_bookkeeping(iterations: u32) -> (f64, f64) {
    use crate::timeline::{Recorded, Recorder, SpanKind};
    let table = Inflight::default();
    let method: Arc<str> = Arc::from("small_value");
    let caller: Arc<str> = Arc::from("driver-0123456789ab");
    let tag = StepTag::default();
    let iterations = iterations.max(1);
    let started = Instant::now();
    for call_id in 0..iterations {
        let entry = table.begin(call_id as u64, method.clone(), caller.clone(), tag);
        drop(std::hint::black_box(entry));
    }
    let entry_only = started.elapsed().as_nanos() as f64 / iterations as f64;
    let recorder = Recorder::for_measurement();
    let started = Instant::now();
    for call_id in 0..iterations {
        let start_unix_us = crate::timeline::unix_us_now();
        let began = Instant::now();
        let entry = table.begin(call_id as u64, method.clone(), caller.clone(), tag);
        drop(std::hint::black_box(entry));
        if recorder.enabled() {
            recorder.record(Recorded {
                kind: SpanKind::Call,
                name: method.clone(),
                start_unix_us,
                duration_us: began.elapsed().as_micros() as u64,
                tag,
                bytes_in: 0,
                bytes_out: 2,
                caller: caller.clone(),
                failed: false,
                group: None,
            });
        }
    }
    let with_span = started.elapsed().as_nanos() as f64 / iterations as f64;
    (entry_only, with_span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_running_calls_until_they_end_and_counts_the_queue() {
        let table = Inflight::default();
        let queued = table.queued();
        let tag = StepTag {
            step: Some(4),
            weight_version: None,
        };
        let first = table.begin(7, Arc::from("train"), Arc::from("driver-x"), tag);
        std::thread::sleep(Duration::from_millis(5));
        let second = table.begin(
            8,
            Arc::from("score"),
            Arc::from("driver-x"),
            StepTag::default(),
        );
        let (calls, waiting) = table.snapshot();
        assert_eq!(waiting, 1);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].method, "train", "longest first");
        assert_eq!(calls[0].step, Some(4));
        assert!(calls[0].elapsed_us >= 5_000);
        drop(first);
        drop(queued);
        let (calls, waiting) = table.snapshot();
        assert_eq!((calls.len(), waiting), (1, 0));
        assert_eq!(calls[0].call_id, 8);
        drop(second);
        assert!(table.snapshot().0.is_empty());
    }
}
