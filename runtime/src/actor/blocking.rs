//! Where a sync actor method runs. A sync method may compute for seconds, so it must not stall
//! the worker's I/O; but handing the thread over to tokio's blocking pool (`block_in_place`)
//! costs a thread hand-off on every call, which dominates a method that takes microseconds.
//! Each method remembers how long its last run took: a method last seen to finish within
//! [`INLINE_LIMIT`] runs in place, any other (and every method's first call) runs where blocking
//! is allowed. A fast method that turns slow blocks its thread once, then moves out.
//!
//! The price: a sync method that runs in place is on the worker's async runtime, where blocking
//! on async code (`Handle::block_on`, `blocking_recv`, `reqwest::blocking`) panics. Such a method
//! works on its first call only; it must be `async` and `.await` instead (the panic's message says
//! so). With `max_concurrency` above one, several calls of a method that turned slow can each
//! hold a runtime thread once before the method moves out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A method whose last run took at most this long runs in place on the worker's thread.
pub const INLINE_LIMIT: Duration = Duration::from_micros(200);

/// The last run time of one actor method (one static per method, made by `#[troupe::actor]`).
pub struct MethodTiming {
    /// Nanoseconds of the last run; `u64::MAX` before the first.
    last_ns: AtomicU64,
}

impl MethodTiming {
    pub const fn new() -> Self {
        MethodTiming {
            last_ns: AtomicU64::new(u64::MAX),
        }
    }

    fn runs_inline(&self) -> bool {
        self.last_ns.load(Ordering::Relaxed) <= INLINE_LIMIT.as_nanos() as u64
    }

    fn record(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX - 1);
        self.last_ns.store(nanos, Ordering::Relaxed);
    }
}

impl Default for MethodTiming {
    fn default() -> Self {
        MethodTiming::new()
    }
}

/// Runs a sync actor method: in place if it was fast last time, else where blocking is allowed
/// (the multi-threaded runtime moves its other work elsewhere meanwhile).
pub fn run_blocking<R>(timing: &MethodTiming, method: impl FnOnce() -> R) -> R {
    let started = Instant::now();
    let output = match tokio::runtime::Handle::try_current() {
        Ok(handle)
            if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                && !timing.runs_inline() =>
        {
            tokio::task::block_in_place(method)
        }
        _ => method(),
    };
    timing.record(started.elapsed());
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_call_blocks_then_fast_methods_run_inline_and_slow_ones_move_out() {
        let timing = MethodTiming::new();
        assert!(
            !timing.runs_inline(),
            "an unknown method must not run inline"
        );
        run_blocking(&timing, || ());
        assert!(timing.runs_inline());
        run_blocking(&timing, || std::thread::sleep(INLINE_LIMIT * 5));
        assert!(!timing.runs_inline(), "a method seen slow must move out");
    }

    #[test]
    fn slow_methods_do_not_stall_other_tasks_of_a_multi_threaded_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let timing = std::sync::Arc::new(MethodTiming::new());
            let slow = {
                let timing = timing.clone();
                tokio::spawn(async move {
                    run_blocking(&timing, || std::thread::sleep(Duration::from_millis(1000)))
                })
            };
            let started = Instant::now();
            let ticks = tokio::spawn(async {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            ticks.await.expect("ticks");
            assert!(
                started.elapsed() < Duration::from_millis(700),
                "timers stalled behind a blocking method: {:?}",
                started.elapsed()
            );
            slow.await.expect("slow");
        });
    }
}
