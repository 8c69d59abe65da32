//! What the job commands print besides the library's renderings (`troupe::jobs::table`,
//! `troupe::jobs::to_json`, `troupe::ClusterStatus::table`): one job in detail, and a job's log
//! bytes passed through to stdout as they arrive.

use std::io::Write;
use troupe::jobs::status_name;
use troupe_proto::JobInfo;

/// One job in detail (`troupe job status`): id, status, entrypoint, exit code or signal, node
/// and pid, log size and message.
pub(crate) fn print_job(info: &JobInfo) {
    println!("submission id: {}", info.submission_id);
    println!("status:        {}", status_name(info.status()));
    if let Some(spec) = &info.spec {
        println!("entrypoint:    {}", spec.entrypoint);
    }
    if info.has_exit_code {
        println!("exit code:     {}", info.exit_code);
    }
    if info.signal != 0 {
        println!("signal:        {}", info.signal);
    }
    if !info.node_id.is_empty() {
        println!("node:          {} (pid {})", info.node_id, info.pid);
    }
    println!("log bytes:     {}", info.log_bytes);
    println!("message:       {}", info.message);
}

/// Writes log bytes to stdout as they are, flushed (a followed log shows up line by line).
pub(crate) fn write_out(data: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(data);
    let _ = stdout.flush();
}
