//! Jobs for people and scripts to read: a table of jobs and one job as JSON, as `troupe job
//! list` and the cluster status print them.

use super::status_name;
use troupe_proto::JobInfo;

/// One job as JSON (an element of `troupe job list --json`, and of the cluster status's `jobs`).
pub fn to_json(info: &JobInfo) -> serde_json::Value {
    let spec = info.spec.clone().unwrap_or_default();
    serde_json::json!({
        "submission_id": info.submission_id,
        "status": status_name(info.status()),
        "entrypoint": spec.entrypoint,
        "metadata": spec.metadata,
        "exit_code": info.has_exit_code.then_some(info.exit_code),
        "signal": info.signal,
        "message": info.message,
        "node_id": info.node_id,
        "submit_time_ms": info.submit_time_ms,
        "start_time_ms": info.start_time_ms,
        "end_time_ms": info.end_time_ms,
        "log_bytes": info.log_bytes,
    })
}

/// Jobs as a table (`troupe job list`, and the JOBS section of the cluster status): id, status,
/// exit code, node, entrypoint (cut at 60 characters).
pub fn table(jobs: &[JobInfo]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:<10} {:>5}  {:<22} ENTRYPOINT",
        "SUBMISSION ID", "STATUS", "EXIT", "NODE"
    );
    for info in jobs {
        let exit = if info.has_exit_code {
            info.exit_code.to_string()
        } else {
            "-".to_string()
        };
        let entrypoint = info
            .spec
            .as_ref()
            .map(|spec| spec.entrypoint.as_str())
            .unwrap_or("");
        let short: String = entrypoint.chars().take(60).collect();
        let node = if info.node_id.is_empty() {
            "-"
        } else {
            &info.node_id
        };
        let _ = writeln!(
            out,
            "{:<28} {:<10} {:>5}  {:<22} {short}",
            info.submission_id,
            status_name(info.status()),
            exit,
            node
        );
    }
    out
}
