//! Process plumbing for the command line: waiting for SIGINT/SIGTERM, signalling processes and
//! waiting for them to go.

use std::time::Duration;

/// Runs `work` until it ends or the process gets SIGINT or SIGTERM.
pub(crate) async fn until_signal(work: impl std::future::Future<Output = ()>) {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                work.await;
                return;
            }
        };
    tokio::select! {
        _ = work => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
        _ = terminate.recv() => tracing::info!("terminated"),
    }
}

/// Whether a process with this pid exists.
pub(crate) fn alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid as i32, 0) } == 0
}

/// Sends SIGTERM, waits up to `grace` for the process to go, then SIGKILLs it.
pub(crate) async fn stop(pid: u32, grace: Duration) {
    if !alive(pid) {
        return;
    }
    // SAFETY: kill(2) on a pid this cluster started.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while alive(pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        reap(pid);
    }
    if alive(pid) {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// Collects a child that exited, so it does not linger as a zombie.
fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: waitpid(2) with WNOHANG on a specific pid; harmless if it is not our child.
    unsafe {
        libc::waitpid(pid as i32, &mut status, libc::WNOHANG);
    }
}
