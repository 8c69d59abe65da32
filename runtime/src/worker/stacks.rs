//! Native backtraces of every thread of this process, for `troupe calls ACTOR`: how a worker
//! shows what each of its threads is doing, a sync method stuck for minutes included.
//!
//! This module owns the stack-capture signal: a real-time signal it picks once (the first of
//! `SIGRTMIN+8 ..= SIGRTMAX-8` that nobody has a handler for) and the handler it installs for it.
//! A capture lists `/proc/self/task`, sends the signal to one thread at a time with `tgkill`, and
//! the handler, running on that thread, walks its own stack into a preallocated static buffer of
//! instruction pointers (no allocation, no locks); the capturing thread waits for it, copies the
//! buffer out, and symbolizes the addresses afterwards. The capturing thread walks its own stack
//! directly. Captures are serialized by one mutex; a state word with a generation and the target
//! thread id keeps a handler that runs late from writing into the buffer of the next thread.
//!
//! Only Linux has this; elsewhere [`capture_all`] returns [`StackError::Unsupported`].
//!
//! Limits: the walk uses the unwinder behind Rust's own backtraces (`_Unwind_Backtrace`), which
//! POSIX does not promise to be async-signal-safe; with glibc 2.35 or newer and libgcc 12 or newer
//! it looks code up with `_dl_find_object`, which takes no lock, so it is safe in practice (the
//! approach of sampling profilers). A thread that blocks the signal, or sits in an uninterruptible
//! kernel wait, does not answer and gets a note instead of frames. A system call that `SA_RESTART`
//! does not restart (`epoll_wait`, `nanosleep`, timed futex waits) returns `EINTR` in the sampled
//! thread; std and tokio retry those, foreign code may not.

use std::time::Duration;

/// One thread's stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThreadDump {
    /// The kernel's thread id.
    pub tid: u64,
    /// The thread's name as the kernel knows it (`/proc/self/task/TID/comm`, at most 15 bytes).
    pub name: String,
    /// Innermost first: `symbol (file:line)`, `symbol` without line tables, `0xADDR` unresolved.
    pub frames: Vec<String>,
    /// Why `frames` is empty or partial, or what is special about this thread; empty otherwise.
    pub note: String,
}

/// Why no stacks could be captured at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StackError {
    #[cfg(not(target_os = "linux"))]
    #[error("backtraces of other threads are not supported on {0}, only on Linux")]
    Unsupported(&'static str),
    #[cfg(target_os = "linux")]
    #[error("no real-time signal from {first} to {last} is free for capturing stacks")]
    NoFreeSignal { first: i32, last: i32 },
    #[cfg(target_os = "linux")]
    #[error("cannot read or install the stack-capture handler for signal {signal}")]
    Install {
        signal: i32,
        #[source]
        source: std::io::Error,
    },
    #[cfg(target_os = "linux")]
    #[error("other code replaced the stack-capture handler for signal {signal}; not sending it")]
    HandlerReplaced { signal: i32 },
    #[cfg(target_os = "linux")]
    #[error("cannot list the threads of this process in /proc/self/task")]
    ListThreads(#[source] std::io::Error),
    #[cfg(target_os = "linux")]
    #[error("another stack capture did not finish within the deadline")]
    Busy,
}

/// Stacks of every thread of this process (Linux), in thread-id order, the calling thread
/// included. Each frame is `symbol (file:line)` or `0xADDR` when unresolved, innermost first,
/// without the frames of the capture machinery itself (signal handler, trampolines, this
/// module). `deadline` bounds the collection of the stacks; a thread that does not answer in
/// time gets no frames and a note. Symbolizing comes after and is not bounded by it (the first
/// call reads the executable's debug information).
///
/// It blocks (sleeps while threads answer); call it from a blocking thread, not a runtime worker.
pub(crate) fn capture_all(deadline: Duration) -> Result<Vec<ThreadDump>, StackError> {
    #[cfg(target_os = "linux")]
    {
        linux::capture_all(deadline)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = deadline;
        Err(StackError::Unsupported(std::env::consts::OS))
    }
}

#[cfg(target_os = "linux")]
mod linux {
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
    extern "C" fn on_signal(
        _signal: libc::c_int,
        _info: *mut libc::siginfo_t,
        context: *mut c_void,
    ) {
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

    /// The installed capture signal, installing the handler on first use; an error if some other
    /// code has replaced it since (sending it then might kill the process).
    fn ensure_installed() -> Result<libc::c_int, StackError> {
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
            for (generation, tid, phase) in
                [(0, 0, IDLE), (u32::MAX, 4_194_304, DONE), (7, 1, ARMED)]
            {
                let state = pack(generation, tid, phase);
                assert_eq!(generation_of(state), generation);
                assert_eq!(tid_of(state), tid);
                assert_eq!(phase_of(state), phase);
                assert_eq!((state & !3) | WRITING, pack(generation, tid, WRITING));
            }
        }
    }
}

/// One frame's line: `symbol (file:line)`, `symbol`, `0xADDR (file:line)` or `0xADDR`.
#[cfg(any(test, target_os = "linux"))]
fn describe(
    name: Option<String>,
    file: Option<&std::path::Path>,
    line: Option<u32>,
    ip: usize,
) -> String {
    let place = match (file, line) {
        (Some(file), Some(line)) => Some(format!("{}:{line}", file.display())),
        (Some(file), None) => Some(file.display().to_string()),
        (None, _) => None,
    };
    match (name, place) {
        (Some(name), Some(place)) => format!("{name} ({place})"),
        (Some(name), None) => name,
        (None, Some(place)) => format!("{ip:#x} ({place})"),
        (None, None) => format!("{ip:#x}"),
    }
}

#[cfg(test)]
mod tests {
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
                        unsafe {
                            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut())
                        };
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
}
