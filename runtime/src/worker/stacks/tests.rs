//! Tests of stack capture: frame lines, and on Linux stuck, spinning, blocking and signal-
//! blocking threads captured from plain threads and from a tokio runtime.

use super::*;
use std::path::Path;

#[test]
fn frame_lines_have_the_documented_shapes() {
    let file = Path::new("src/lib.rs");
    assert_eq!(
        describe(Some("a::b".into()), Some(file), Some(7), 0x10),
        "a::b (src/lib.rs:7)"
    );
    assert_eq!(describe(Some("a::b".into()), None, None, 0x10), "a::b");
    assert_eq!(
        describe(None, Some(file), Some(7), 0x10),
        "0x10 (src/lib.rs:7)"
    );
    assert_eq!(describe(None, None, None, 0xabc), "0xabc");
}

#[cfg(target_os = "linux")]
mod linux {
    use super::super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier};
    use std::thread::JoinHandle;

    #[inline(never)]
    fn troupe_test_stuck_in_sleep(stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    #[inline(never)]
    fn troupe_test_busy_spin(stop: &AtomicBool) -> u64 {
        let mut turns = 0u64;
        while !stop.load(Ordering::Relaxed) {
            turns = std::hint::black_box(turns.wrapping_add(1));
            std::hint::spin_loop();
        }
        turns
    }

    struct Stuck {
        stop: Arc<AtomicBool>,
        threads: Vec<JoinHandle<()>>,
    }

    impl Drop for Stuck {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            for thread in self.threads.drain(..) {
                let _ = thread.join();
            }
        }
    }

    fn start_stuck_threads() -> Stuck {
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(Barrier::new(3));
        let mut threads = Vec::new();
        for (name, spin) in [("stuck-sleeper", false), ("busy-spinner", true)] {
            let stop = Arc::clone(&stop);
            let ready = Arc::clone(&ready);
            let thread = std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    ready.wait();
                    if spin {
                        std::hint::black_box(troupe_test_busy_spin(&stop));
                    } else {
                        troupe_test_stuck_in_sleep(&stop);
                    }
                })
                .expect("spawn a test thread");
            threads.push(thread);
        }
        ready.wait();
        // Let both get into their functions.
        std::thread::sleep(Duration::from_millis(50));
        Stuck { stop, threads }
    }

    fn find<'a>(dumps: &'a [ThreadDump], name: &str) -> &'a ThreadDump {
        dumps
            .iter()
            .find(|dump| dump.name == name)
            .unwrap_or_else(|| panic!("no thread {name} in {dumps:#?}"))
    }

    fn has_frame(dump: &ThreadDump, function: &str) -> bool {
        dump.frames.iter().any(|frame| frame.contains(function))
    }

    fn assert_no_machinery(dump: &ThreadDump) {
        for frame in &dump.frames {
            assert!(
                !frame.contains("on_signal")
                    && !frame.contains("restore_rt")
                    && !frame.starts_with("backtrace::")
                    && !frame.contains("_Unwind_Backtrace")
                    && !frame.contains("capture_current"),
                "machinery frame {frame} in {dump:#?}"
            );
        }
    }

    #[test]
    fn captures_every_thread_including_stuck_ones() {
        let stuck = start_stuck_threads();
        // SAFETY: gettid cannot fail.
        let me = u64::try_from(unsafe { libc::syscall(libc::SYS_gettid) }).expect("tid");
        for round in 0..2 {
            let started = std::time::Instant::now();
            let dumps = capture_all(Duration::from_secs(5)).expect("capture");
            eprintln!(
                "round {round}: {} threads in {:?}",
                dumps.len(),
                started.elapsed()
            );

            let sleeper = find(&dumps, "stuck-sleeper");
            assert!(
                has_frame(sleeper, "troupe_test_stuck_in_sleep"),
                "{sleeper:#?}"
            );
            assert!(has_frame(sleeper, "sleep"), "{sleeper:#?}");
            assert_no_machinery(sleeper);
            assert!(sleeper.note.is_empty(), "{sleeper:#?}");

            let spinner = find(&dumps, "busy-spinner");
            assert!(has_frame(spinner, "troupe_test_busy_spin"), "{spinner:#?}");
            assert_no_machinery(spinner);
            // Interrupted inside the loop itself: the function is innermost but for the
            // inlined helpers it calls.
            assert!(
                spinner
                    .frames
                    .iter()
                    .take(4)
                    .any(|frame| frame.contains("troupe_test_busy_spin")),
                "{spinner:#?}"
            );

            let caller = dumps
                .iter()
                .find(|dump| dump.tid == me)
                .unwrap_or_else(|| panic!("no calling thread {me} in {dumps:#?}"));
            assert_no_machinery(caller);
            assert!(
                caller
                    .frames
                    .first()
                    .is_some_and(|frame| frame.contains("captures_every_thread")),
                "{caller:#?}"
            );

            let mut tids: Vec<u64> = dumps.iter().map(|dump| dump.tid).collect();
            tids.dedup();
            assert_eq!(tids.len(), dumps.len(), "each thread once");
            assert!(dumps
                .iter()
                .all(|dump| dump.frames.len() <= 4 * super::super::linux::MAX_FRAMES));
        }
        drop(stuck);
    }

    #[test]
    fn a_zero_deadline_still_returns_the_calling_thread() {
        // A zero deadline gives up at once on the lock, too, and other tests capture.
        let mut attempts = 0;
        let dumps = loop {
            match capture_all(Duration::ZERO) {
                Err(StackError::Busy) if attempts < 1000 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other.expect("capture"),
            }
        };
        // SAFETY: gettid cannot fail.
        let me = u64::try_from(unsafe { libc::syscall(libc::SYS_gettid) }).expect("tid");
        let caller = dumps.iter().find(|dump| dump.tid == me).expect("caller");
        assert!(
            caller
                .frames
                .first()
                .is_some_and(|frame| frame.contains("a_zero_deadline")),
            "{caller:#?}"
        );
        for dump in dumps.iter().filter(|dump| dump.tid != me) {
            assert!(
                !dump.frames.is_empty() || !dump.note.is_empty(),
                "{dump:#?}"
            );
        }
    }

    #[inline(never)]
    fn troupe_test_sync_method(stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The worker's shape: a multi-thread runtime and a sync method in `spawn_blocking`. The
    /// runtime keeps working after its threads were interrupted.
    #[test]
    fn sees_a_sync_method_in_spawn_blocking_of_a_tokio_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stacks-rt")
            .enable_all()
            .build()
            .expect("runtime");
        let stop = Arc::new(AtomicBool::new(false));
        let method = {
            let stop = Arc::clone(&stop);
            runtime.spawn_blocking(move || troupe_test_sync_method(&stop))
        };
        std::thread::sleep(Duration::from_millis(100));

        let dumps = capture_all(Duration::from_secs(5)).expect("capture");
        let runtime_threads: Vec<&ThreadDump> = dumps
            .iter()
            .filter(|dump| dump.name == "stacks-rt")
            .collect();
        assert!(runtime_threads.len() >= 3, "{dumps:#?}");
        assert!(
            runtime_threads
                .iter()
                .any(|dump| has_frame(dump, "troupe_test_sync_method")),
            "{runtime_threads:#?}"
        );

        let timers_still_fire = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                tokio::time::sleep(Duration::from_millis(20)),
            )
            .await
            .is_ok()
        });
        assert!(timers_still_fire);
        stop.store(true, Ordering::SeqCst);
        runtime.block_on(method).expect("the method ends");
    }

    #[inline(never)]
    fn troupe_test_blocked_thread(stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A thread that blocks the signal gets a note without being signalled, and a signal it
    /// receives late, once it unblocks, writes into nobody's buffer.
    #[test]
    fn a_thread_blocking_the_signal_gets_a_note_and_a_late_signal_is_harmless() {
        let stop = Arc::new(AtomicBool::new(false));
        let unblocked = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(Barrier::new(2));
        let thread = {
            let (stop, unblocked, ready) = (
                Arc::clone(&stop),
                Arc::clone(&unblocked),
                Arc::clone(&ready),
            );
            std::thread::Builder::new()
                .name("blocks-signals".to_string())
                .spawn(move || {
                    // SAFETY: plain signal-mask calls on this thread's own mask.
                    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
                    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
                    unsafe {
                        libc::sigfillset(&mut all);
                        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
                    }
                    ready.wait();
                    troupe_test_blocked_thread(&unblocked);
                    // The pending signal is delivered here, after its capture gave up.
                    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
                    troupe_test_blocked_thread(&stop);
                })
                .expect("spawn a test thread")
        };
        ready.wait();

        let dumps = capture_all(Duration::from_secs(3)).expect("capture");
        let blocked = find(&dumps, "blocks-signals");
        assert!(blocked.frames.is_empty(), "{blocked:#?}");
        assert!(
            blocked.note.contains("blocks the stack-capture signal"),
            "{blocked:#?}"
        );

        // A stray signal, as a capture that gave up on the thread would leave pending.
        let signal = super::super::linux::installed_signal();
        let tid = libc::pid_t::try_from(blocked.tid).expect("tid");
        // SAFETY: the handler for `signal` is installed; the thread blocks it for now.
        let sent = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, signal) };
        assert_eq!(sent, 0);
        unblocked.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        let dumps = capture_all(Duration::from_secs(5)).expect("capture");
        let blocked = find(&dumps, "blocks-signals");
        assert!(
            has_frame(blocked, "troupe_test_blocked_thread"),
            "{blocked:#?}"
        );
        assert_no_machinery(blocked);

        stop.store(true, Ordering::SeqCst);
        let _ = thread.join();
    }
}
