//! Catching panics in actor code: a hook that records each panic's message and backtrace on the
//! panicking thread, so the call that panicked can carry both back to its caller.

use std::any::Any;
use std::cell::RefCell;

thread_local! {
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Installs the recording hook (it still prints the panic to stderr, into the worker's log).
pub(super) fn install_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = match info.payload().downcast_ref::<&str>() {
            Some(text) => text.to_string(),
            None => match info.payload().downcast_ref::<String>() {
                Some(text) => text.clone(),
                None => "a panic with a non-string payload".to_string(),
            },
        };
        let location = info
            .location()
            .map(|location| format!(" at {}:{}", location.file(), location.line()))
            .unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::force_capture().to_string();
        LAST_PANIC.with(|last| {
            *last.borrow_mut() = Some((format!("{message}{location}"), backtrace));
        });
        default(info);
    }));
}

/// The message and backtrace of the last panic on this thread.
pub(super) fn take_last() -> Option<(String, String)> {
    LAST_PANIC.with(|last| last.borrow_mut().take())
}

/// A panic payload's message.
pub(super) fn message(payload: &Box<dyn Any + Send>) -> String {
    if let Some((message, _)) = take_last() {
        return message;
    }
    match payload.downcast_ref::<&str>() {
        Some(text) => text.to_string(),
        None => payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "a panic with a non-string payload".to_string()),
    }
}
