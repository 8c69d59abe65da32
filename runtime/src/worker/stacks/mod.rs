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
    #[cfg(target_os = "linux")]
    #[error(
        "this C library (glibc {glibc}) has no lock-free unwind-table lookup (_dl_find_object, \
         glibc 2.35+): walking other threads' stacks from a signal could deadlock them (whether \
         the libgcc in use takes that path, version 12+, is not checked)"
    )]
    UnsafeUnwinder { glibc: String },
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
mod linux;

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
mod tests;
