//! Halt polling in user space: for a short window after this process last sent or received an
//! RPC, one thread at the lowest scheduling class (`SCHED_IDLE`) spins, so that the CPU does not
//! go idle between a request and its answer.
//!
//! Why: on a virtual machine, a CPU with nothing to run halts, and waking it again takes the
//! hypervisor tens of microseconds. On the 2-vCPU Firecracker guest troupe is measured on, a
//! loopback TCP round trip between two processes takes about 97 µs when both CPUs halt between
//! messages and about 15 µs when they stay awake: most of a synchronous call's time was spent
//! waking CPUs. Linux guests can do the same in the kernel (the `cpuidle-haltpoll` driver); many
//! cloud guests do not have it. The spinner runs only when no other thread wants the CPU, and it
//! sleeps once the process has been quiet for the window. It is not free: its time counts
//! against a cgroup's CPU quota, and it shares a core with a hyperthread sibling's work.
//!
//! `TROUPE_KEEP_AWAKE_US` sets the window in microseconds (default 500); 0 turns it off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Environment variable: the window in microseconds; 0 turns the spinner off.
pub const KEEP_AWAKE_ENV: &str = "TROUPE_KEEP_AWAKE_US";
/// The default window.
const DEFAULT_WINDOW_US: u64 = 500;

/// What `note_activity` and the spinner thread share.
struct Activity {
    epoch: Instant,
    window_ns: u64,
    /// Nanoseconds since `epoch` of the last RPC sent or received.
    last_ns: AtomicU64,
    /// Set while the spinner thread sleeps: the next activity wakes it.
    sleeping: AtomicBool,
}

impl Activity {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether the last activity is within the window.
    fn recent(&self) -> bool {
        let last = self.last_ns.load(Ordering::SeqCst);
        self.now_ns().saturating_sub(last) < self.window_ns
    }
}

struct Spinner {
    activity: Arc<Activity>,
    /// The spinner thread, if one runs.
    thread: Option<Thread>,
}

static SPINNER: OnceLock<Spinner> = OnceLock::new();

/// Notes that this process sent or received a message: the CPU stays awake for the window.
/// troupe's RPCs call it; code that waits on other sockets (a raw TCP collective, say) may too.
pub fn note_activity() {
    let spinner = SPINNER.get_or_init(start);
    let Some(thread) = &spinner.thread else {
        return;
    };
    let activity = &spinner.activity;
    // SeqCst on both sides (here: store, then load; the spinner: store `sleeping`, then load the
    // time), so that at least one of the two sees the other's write and no wake-up is lost.
    activity.last_ns.store(activity.now_ns(), Ordering::SeqCst);
    if activity.sleeping.load(Ordering::SeqCst) && activity.sleeping.swap(false, Ordering::SeqCst) {
        thread.unpark();
    }
}

fn window_from_env() -> u64 {
    std::env::var(KEEP_AWAKE_ENV)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_WINDOW_US)
}

fn start() -> Spinner {
    let window_us = window_from_env();
    let activity = Arc::new(Activity {
        epoch: Instant::now(),
        window_ns: window_us.saturating_mul(1000),
        last_ns: AtomicU64::new(0),
        sleeping: AtomicBool::new(false),
    });
    let mut spinner = Spinner {
        activity: activity.clone(),
        thread: None,
    };
    if window_us == 0 || std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return spinner;
    }
    let spawned = std::thread::Builder::new()
        .name("troupe-keep-awake".to_string())
        .spawn(move || spin(&activity));
    match spawned {
        Ok(handle) => spinner.thread = Some(handle.thread().clone()),
        Err(err) => tracing::debug!(%err, "no keep-awake thread"),
    }
    spinner
}

/// The spinner thread's body: lowest priority, spin while active, sleep while quiet.
fn spin(activity: &Activity) {
    if !lower_to_idle_class() {
        return; // spinning at normal priority would take time from real work
    }
    loop {
        if activity.recent() {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            continue;
        }
        activity.sleeping.store(true, Ordering::SeqCst);
        // Activity between the check and `sleeping` being set would be missed: look again.
        if !activity.recent() {
            std::thread::park_timeout(Duration::from_secs(1));
        }
        activity.sleeping.store(false, Ordering::Release);
    }
}

/// `SCHED_IDLE`: the thread runs only when nothing else in the system wants the CPU.
fn lower_to_idle_class() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system call on the calling thread with a valid parameter block.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if result != 0 {
        tracing::debug!(
            err = %std::io::Error::last_os_error(),
            "the keep-awake thread could not lower its scheduling class; it stays off"
        );
    }
    result == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheduling policy of this process's thread named `name` (field 41 of its stat).
    fn policy_of_thread(name: &str) -> Option<u32> {
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let path = task.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if comm.trim() != name {
                continue;
            }
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            // Fields after the command name, which is in parentheses and may hold spaces.
            let after = &stat[stat.rfind(')')? + 2..];
            return after.split_whitespace().nth(38)?.parse().ok();
        }
        None
    }

    #[test]
    fn spins_only_in_the_idle_class_and_sleeps_when_quiet() {
        note_activity();
        let spinner = SPINNER.get().expect("started by the first activity");
        if spinner.thread.is_none() {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            assert!(
                cpus < 2 || window_from_env() == 0,
                "no spinner although {cpus} CPUs and a window"
            );
            return;
        }
        // The thread is named before it lowers its class: wait for the class, or its end.
        let deadline = Instant::now() + Duration::from_secs(5);
        let policy = loop {
            let policy = policy_of_thread("troupe-keep-awa");
            if policy.is_none_or(|policy| policy == libc::SCHED_IDLE as u32)
                || Instant::now() > deadline
            {
                break policy;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The thread either runs in SCHED_IDLE (5) or, where that is refused, has ended.
        assert!(
            policy.is_none_or(|policy| policy == libc::SCHED_IDLE as u32),
            "the spinner runs in scheduling class {policy:?}"
        );
        let mut slept = false;
        while Instant::now() < deadline && !slept {
            slept = spinner.activity.sleeping.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            slept || policy.is_none(),
            "the spinner never slept when quiet"
        );
    }
}
