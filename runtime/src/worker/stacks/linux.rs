//! The Linux side of stack capture: the signal it picks and its handler, the per-thread
//! capture protocol (arm, signal, wait, copy out), and symbolizing the addresses.

use super::{StackError, ThreadDump};
use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// The most return addresses kept for one thread, outermost ones dropped (inlined calls
/// expand one into several lines).
pub(super) const MAX_FRAMES: usize = 64;
/// The most threads whose stacks one capture walks; the rest are listed with a note.
const MAX_THREADS: usize = 512;
/// Room in the buffer for the handler's own frames, which are cut off afterwards.
const SLOTS: usize = MAX_FRAMES + 32;
/// Offsets from SIGRTMIN and SIGRTMAX left alone: libraries that use real-time signals
/// usually take the first or the last few.
const EDGE: i32 = 8;
/// How long one thread may take to answer, however many are left, while the deadline allows.
const MIN_WAIT_PER_THREAD: Duration = Duration::from_millis(100);
/// The longest one thread may take to answer: a thread that can run answers in
/// microseconds, so one that blocks the signal should not eat a long deadline alone.
const MAX_WAIT_PER_THREAD: Duration = Duration::from_secs(1);
/// How often the capturing thread looks whether the handler has finished.
const POLL: Duration = Duration::from_micros(100);

/// The instruction pointers the handler wrote, innermost first.
static FRAMES: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// How many of [`FRAMES`] the handler wrote.
static FRAME_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Where the signalled thread was interrupted (0 where the platform does not say).
static INTERRUPTED_PC: AtomicUsize = AtomicUsize::new(0);
/// Generation (bits 32..64), target thread id (bits 2..32) and phase (bits 0..2).
static STATE: AtomicU64 = AtomicU64::new(0);
/// The signal the handler is installed for; 0 before the first capture.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// One capture at a time: there is one buffer.
static CAPTURE: Mutex<()> = Mutex::new(());

/// No capture is waiting for a handler.
const IDLE: u64 = 0;
/// The target thread's handler may claim the buffer.
const ARMED: u64 = 1;
/// The target thread's handler claimed the buffer and is walking its stack.
const WRITING: u64 = 2;
/// The handler finished; the buffer holds the target thread's stack.
const DONE: u64 = 3;
const TID_MASK: u64 = (1 << 30) - 1;

fn pack(generation: u32, tid: u32, phase: u64) -> u64 {
    (u64::from(generation) << 32) | ((u64::from(tid) & TID_MASK) << 2) | (phase & 3)
}

fn phase_of(state: u64) -> u64 {
    state & 3
}

fn tid_of(state: u64) -> u32 {
    // Masked to 30 bits, so it fits.
    u32::try_from((state >> 2) & TID_MASK).unwrap_or(u32::MAX)
}

fn generation_of(state: u64) -> u32 {
    u32::try_from(state >> 32).unwrap_or(0)
}

/// The calling thread's kernel id (async-signal-safe).
fn current_tid() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    u32::try_from(tid).unwrap_or(u32::MAX)
}

type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void);

fn handler_address() -> usize {
    let handler: Handler = on_signal;
    handler as usize
}

/// The signal handler. It runs on the interrupted thread, so it only touches atomics and
/// walks the stack: no allocation, no locks, errno preserved.
extern "C" fn on_signal(_signal: libc::c_int, _info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: __errno_location returns the calling thread's errno slot, valid for its life.
    let errno = unsafe { *libc::__errno_location() };
    let state = STATE.load(Ordering::SeqCst);
    if phase_of(state) == ARMED && tid_of(state) == current_tid() {
        let writing = (state & !3) | WRITING;
        if STATE
            .compare_exchange(state, writing, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            INTERRUPTED_PC.store(interrupted_pc(context), Ordering::Relaxed);
            let mut count = 0usize;
            // SAFETY: the closure only stores into preallocated atomics; `trace` would take
            // the backtrace crate's lock, which the interrupted code may hold.
            unsafe {
                backtrace::trace_unsynchronized(|frame| match FRAMES.get(count) {
                    Some(slot) => {
                        slot.store(frame.ip() as usize, Ordering::Relaxed);
                        count += 1;
                        true
                    }
                    None => false,
                });
            }
            FRAME_COUNT.store(count, Ordering::Relaxed);
            STATE.store((state & !3) | DONE, Ordering::SeqCst);
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The program counter at which the kernel interrupted the thread, from the handler's context.
fn interrupted_pc(context: *mut c_void) -> usize {
    if context.is_null() {
        return 0;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: with SA_SIGINFO the third argument points at the thread's ucontext_t.
        let context = unsafe { &*(context as *const libc::ucontext_t) };
        let index = usize::try_from(libc::REG_RIP).unwrap_or(usize::MAX);
        context
            .uc_mcontext
            .gregs
            .get(index)
            .map_or(0, |pc| *pc as usize)
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: with SA_SIGINFO the third argument points at the thread's ucontext_t.
        let context = unsafe { &*(context as *const libc::ucontext_t) };
        context.uc_mcontext.pc as usize
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        0
    }
}

fn current_action(signal: libc::c_int) -> Result<libc::sigaction, StackError> {
    // SAFETY: an all-zero sigaction is a valid value to be overwritten.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `action`.
    if unsafe { libc::sigaction(signal, std::ptr::null(), &mut action) } != 0 {
        let source = io::Error::last_os_error();
        return Err(StackError::Install { signal, source });
    }
    Ok(action)
}

/// Refuses to walk stacks from a signal handler unless the C library finds unwind tables without
/// a lock: glibc 2.35 or newer with `_dl_find_object` (which libgcc 12 and newer use). Older
/// systems go through `dl_iterate_phdr` and an unguarded cache, where an interrupted thread
/// could deadlock or the cache could be corrupted.
#[cfg(target_env = "gnu")]
fn unwinder_is_lock_free() -> Result<(), StackError> {
    extern "C" {
        fn gnu_get_libc_version() -> *const libc::c_char;
    }
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) }
        .to_string_lossy()
        .into_owned();
    let mut parts = version
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks the symbol up.
    let find_object = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_dl_find_object".as_ptr()) };
    if (major, minor) < (2, 35) || find_object.is_null() {
        return Err(StackError::UnsafeUnwinder { glibc: version });
    }
    Ok(())
}

#[cfg(not(target_env = "gnu"))]
fn unwinder_is_lock_free() -> Result<(), StackError> {
    Err(StackError::UnsafeUnwinder {
        glibc: "none (not a glibc build)".to_string(),
    })
}

/// The installed capture signal, installing the handler on first use; an error if some other
/// code has replaced it since (sending it then might kill the process).
fn ensure_installed() -> Result<libc::c_int, StackError> {
    unwinder_is_lock_free()?;
    let installed = SIGNAL.load(Ordering::SeqCst);
    if installed != 0 {
        let action = current_action(installed)?;
        if action.sa_sigaction != handler_address() {
            return Err(StackError::HandlerReplaced { signal: installed });
        }
        return Ok(installed);
    }
    let first = libc::SIGRTMIN() + EDGE;
    let last = libc::SIGRTMAX() - EDGE;
    for signal in first..=last {
        if current_action(signal)?.sa_sigaction != libc::SIG_DFL {
            continue;
        }
        // SAFETY: as in current_action.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler_address();
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: sa_mask is a valid sigset_t to clear; the action is fully initialized and
        // the handler has the SA_SIGINFO signature.
        let status = unsafe {
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if status != 0 {
            let source = io::Error::last_os_error();
            return Err(StackError::Install { signal, source });
        }
        SIGNAL.store(signal, Ordering::SeqCst);
        return Ok(signal);
    }
    Err(StackError::NoFreeSignal { first, last })
}

fn list_threads() -> Result<Vec<u32>, StackError> {
    let entries = std::fs::read_dir("/proc/self/task").map_err(StackError::ListThreads)?;
    let mut tids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StackError::ListThreads)?;
        if let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        {
            tids.push(tid);
        }
    }
    tids.sort_unstable();
    Ok(tids)
}

fn thread_name(tid: u32) -> String {
    std::fs::read(format!("/proc/self/task/{tid}/comm"))
        .map(|bytes| String::from_utf8_lossy(&bytes).trim_end().to_string())
        .unwrap_or_default()
}

/// Whether the thread blocks `signal`, and whether one is pending for it already (the
/// `SigBlk` and `SigPnd` masks of `/proc/self/task/TID/status`); both false if unknown.
fn signal_state(tid: u32, signal: libc::c_int) -> (bool, bool) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return (false, false);
    };
    let Some(bit) = u32::try_from(signal - 1)
        .ok()
        .and_then(|shift| 1u64.checked_shl(shift))
    else {
        return (false, false);
    };
    let has = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & bit != 0)
    };
    (has("SigBlk:"), has("SigPnd:"))
}

fn thread_exists(tid: u32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// A stack before symbolizing.
enum Raw {
    /// Instruction pointers, innermost first; `exact_first` when the first is the
    /// interrupted program counter rather than a return address.
    Stack { ips: Vec<usize>, exact_first: bool },
    /// No stack, and why.
    Missing(String),
    /// The thread exited before it could answer.
    Gone,
}

pub(super) fn capture_all(deadline: Duration) -> Result<Vec<ThreadDump>, StackError> {
    let started = Instant::now();
    let until = started
        .checked_add(deadline)
        .or_else(|| started.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(started);
    let one_at_a_time = lock_until(until)?;
    let signal = ensure_installed()?;
    let me = current_tid();
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    let tids = list_threads()?;
    let to_walk = tids.len().min(MAX_THREADS);
    let mut raw = Vec::with_capacity(tids.len());
    for (index, &tid) in tids.iter().enumerate() {
        let name = thread_name(tid);
        let stack = if tid == me {
            Raw::Stack {
                ips: capture_current(),
                exact_first: false,
            }
        } else if index >= MAX_THREADS {
            Raw::Missing(format!(
                "not captured: one dump walks at most {MAX_THREADS} threads"
            ))
        } else {
            let now = Instant::now();
            let remaining = until.saturating_duration_since(now);
            let left = u32::try_from(to_walk.saturating_sub(index).max(1)).unwrap_or(u32::MAX);
            let share = remaining.checked_div(left).unwrap_or(remaining);
            let wait = share
                .min(MAX_WAIT_PER_THREAD)
                .max(remaining.min(MIN_WAIT_PER_THREAD));
            let wait_until = now.checked_add(wait).unwrap_or(until);
            capture_other(pid, tid, signal, wait_until, until)
        };
        raw.push((tid, name, stack));
    }
    // Symbolizing reads debug information and needs no signal: let the next capture start.
    drop(one_at_a_time);
    Ok(raw
        .into_iter()
        .filter_map(|(tid, name, stack)| {
            let (frames, note) = match stack {
                Raw::Gone => return None,
                Raw::Missing(note) => (Vec::new(), note),
                Raw::Stack { ips, exact_first } => {
                    let note = if tid == me {
                        "this thread took the dump".to_string()
                    } else if ips.is_empty() {
                        "the unwinder found no frames".to_string()
                    } else {
                        String::new()
                    };
                    (symbolize(&ips, exact_first), note)
                }
            };
            Some(ThreadDump {
                tid: u64::from(tid),
                name,
                frames,
                note,
            })
        })
        .collect())
}

/// The capture lock, waited for until `until`.
fn lock_until(until: Instant) -> Result<MutexGuard<'static, ()>, StackError> {
    loop {
        match CAPTURE.try_lock() {
            Ok(guard) => return Ok(guard),
            Err(TryLockError::Poisoned(poisoned)) => return Ok(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() >= until => {
                return Err(StackError::Busy)
            }
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Walks the calling thread's stack, without this module's frames.
#[inline(never)]
fn capture_current() -> Vec<usize> {
    let mut frames: Vec<(usize, usize)> = Vec::with_capacity(SLOTS);
    backtrace::trace(|frame| {
        frames.push((frame.ip() as usize, frame.symbol_address() as usize));
        frames.len() < SLOTS
    });
    type Capture = fn(Duration) -> Result<Vec<ThreadDump>, StackError>;
    let inner: Capture = capture_all;
    let outer: Capture = super::capture_all;
    let this: fn() -> Vec<usize> = capture_current;
    let ours = [inner as usize, outer as usize, this as usize];
    let cut = frames
        .iter()
        .rposition(|(_, start)| ours.contains(start))
        .map_or(0, |index| index + 1);
    frames
        .iter()
        .skip(cut)
        .take(MAX_FRAMES)
        .map(|(ip, _)| *ip)
        .collect()
}

/// Signals one other thread and waits for its handler until `wait_until`, or until `until`
/// if the handler has started writing by then.
fn capture_other(
    pid: libc::pid_t,
    tid: u32,
    signal: libc::c_int,
    wait_until: Instant,
    until: Instant,
) -> Raw {
    let current = STATE.load(Ordering::SeqCst);
    if phase_of(current) == WRITING {
        return Raw::Missing(format!(
            "not captured: the stack walk of thread {} has not finished",
            tid_of(current)
        ));
    }
    if u64::from(tid) > TID_MASK {
        return Raw::Missing("not captured: thread id out of range".to_string());
    }
    let (blocked, pending) = signal_state(tid, signal);
    if blocked {
        // Signalling it would only queue signals, which count against a per-user limit.
        return Raw::Missing(format!(
            "not captured: the thread blocks the stack-capture signal {signal}"
        ));
    }
    let generation = generation_of(current).wrapping_add(1);
    let armed = pack(generation, tid, ARMED);
    let done = pack(generation, tid, DONE);
    FRAME_COUNT.store(0, Ordering::Relaxed);
    INTERRUPTED_PC.store(0, Ordering::Relaxed);
    STATE.store(armed, Ordering::SeqCst);
    let target = libc::pid_t::try_from(tid).unwrap_or(libc::pid_t::MAX);
    // An earlier signal still pending (the thread sits in an uninterruptible wait) will do;
    // each capture sending another would pile them up.
    let status = if pending {
        0
    } else {
        // SAFETY: tgkill only sends a signal; its handler is installed (checked above).
        unsafe { libc::syscall(libc::SYS_tgkill, pid, target, signal) }
    };
    if status != 0 {
        let error = io::Error::last_os_error();
        STATE.store(pack(generation, 0, IDLE), Ordering::SeqCst);
        if error.raw_os_error() == Some(libc::ESRCH) {
            return Raw::Gone;
        }
        return Raw::Missing(format!("not captured: cannot signal the thread: {error}"));
    }
    let answered = wait_for(done, wait_until)
        || match STATE.compare_exchange(
            armed,
            pack(generation, 0, IDLE),
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            // The handler had not started; a late run finds the state changed and leaves.
            Ok(_) => false,
            // It finished, or it is writing: give it until the end of the whole capture.
            Err(_) => wait_for(done, until),
        };
    if !answered {
        if phase_of(STATE.load(Ordering::SeqCst)) == IDLE && !thread_exists(tid) {
            return Raw::Gone;
        }
        return Raw::Missing(
            "not captured: the thread did not answer in time (it may be in an \
             uninterruptible wait, or the machine too busy)"
                .to_string(),
        );
    }
    let count = FRAME_COUNT.load(Ordering::Relaxed).min(SLOTS);
    let pc = INTERRUPTED_PC.load(Ordering::Relaxed);
    let ips: Vec<usize> = FRAMES
        .iter()
        .take(count)
        .map(|slot| slot.load(Ordering::Relaxed))
        .collect();
    STATE.store(pack(generation, 0, IDLE), Ordering::SeqCst);
    let (ips, exact_first) = strip_handler_frames(ips, pc);
    Raw::Stack {
        ips: ips.into_iter().take(MAX_FRAMES).collect(),
        exact_first,
    }
}

/// Waits until the state is `done` or `until` passes; whether it got there.
fn wait_for(done: u64, until: Instant) -> bool {
    loop {
        if STATE.load(Ordering::SeqCst) == done {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Drops the frames of the handler and the signal trampoline: everything before the
/// interrupted program counter, or, where that is not known or not found, everything up to
/// the handler and the trampoline after it.
fn strip_handler_frames(ips: Vec<usize>, pc: usize) -> (Vec<usize>, bool) {
    if pc != 0 {
        if let Some(index) = ips.iter().position(|&ip| ip == pc) {
            return (ips.into_iter().skip(index).collect(), true);
        }
    }
    // Symbols name the handler's own module path (`backtrace::Symbol::addr` is the address
    // looked up, not the function's start, so addresses cannot tell).
    let handler = concat!(module_path!(), "::on_signal");
    let handler = handler.split_once("::").map_or(handler, |(_, path)| path);
    let Some(index) = ips
        .iter()
        .position(|&ip| symbol_names(ip).iter().any(|name| name.ends_with(handler)))
    else {
        return (ips, false);
    };
    // The handler returns into the signal trampoline, which has no symbol in glibc.
    let mut rest = index + 1;
    if ips.get(rest).is_some_and(|&ip| {
        let names = symbol_names(ip);
        names.is_empty()
            || names
                .iter()
                .any(|name| name.contains("restore_rt") || name.contains("sigreturn"))
    }) {
        rest += 1;
    }
    (ips.into_iter().skip(rest).collect(), false)
}

fn symbol_names(ip: usize) -> Vec<String> {
    let mut names = Vec::new();
    backtrace::resolve(ip as *mut c_void, |symbol| {
        if let Some(name) = symbol.name() {
            names.push(format!("{name:#}"));
        }
    });
    names
}

/// One line per frame, inlined functions expanded, innermost first.
fn symbolize(ips: &[usize], exact_first: bool) -> Vec<String> {
    let mut frames = Vec::with_capacity(ips.len());
    for (index, &ip) in ips.iter().enumerate() {
        if ip == 0 {
            // The end of the chain (the outermost frame's return address).
            continue;
        }
        // `resolve` looks up `ip - 1`, right for return addresses; the interrupted program
        // counter is the instruction itself.
        let lookup = if index == 0 && exact_first {
            ip.wrapping_add(1)
        } else {
            ip
        };
        let before = frames.len();
        backtrace::resolve(lookup as *mut c_void, |symbol| {
            frames.push(super::describe(
                symbol.name().map(|name| format!("{name:#}")),
                symbol.filename(),
                symbol.lineno(),
                ip,
            ));
        });
        if frames.len() == before {
            frames.push(format!("{ip:#x}"));
        }
    }
    frames
}

/// The capture signal, once installed.
#[cfg(test)]
pub(super) fn installed_signal() -> libc::c_int {
    SIGNAL.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_words_keep_generation_tid_and_phase_apart() {
        for (generation, tid, phase) in [(0, 0, IDLE), (u32::MAX, 4_194_304, DONE), (7, 1, ARMED)] {
            let state = pack(generation, tid, phase);
            assert_eq!(generation_of(state), generation);
            assert_eq!(tid_of(state), tid);
            assert_eq!(phase_of(state), phase);
            assert_eq!((state & !3) | WRITING, pack(generation, tid, WRITING));
        }
    }
}
