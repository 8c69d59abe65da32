//! Jobs as every process sees them: the environment a job's entrypoint gets, the names of job
//! statuses, working-directory packages (`archive`), a client of the head's `Jobs` service
//! (`client`, used by `troupe job`), and jobs as a table or JSON (`listing`). The head's side
//! lives in `head::jobs`, the node agent's in `node::jobs`.

pub mod archive;
pub mod client;
mod listing;

pub use client::JobClient;
pub use listing::{table, to_json};
use troupe_proto::JobStatus;

/// Set in a job's entrypoint (and the workers of actors it spawns): the job's submission id.
pub const JOB_ID_ENV: &str = "TROUPE_JOB_ID";
/// Set in a job's entrypoint: the head's address, for `Cluster::connect`.
pub const ADDRESS_ENV: &str = "TROUPE_ADDRESS";
/// Largest working directory accepted for upload (packed, before compression).
pub const MAX_WORKING_DIR_BYTES: u64 = 512 << 20;

/// Checks a submission id: 1 to 128 letters, digits, `.`, `_` or `-`, not starting with `.`
/// (it names files and directories on the head and the nodes). Returns the reason otherwise.
pub fn check_submission_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("must have 1 to 128 characters".to_string());
    }
    if id.starts_with('.') {
        return Err(format!("`{id}` starts with a dot"));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{id}` contains {bad:?}; use letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

/// The status's short name: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED.
pub fn status_name(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Unspecified => "UNKNOWN",
        JobStatus::Pending => "PENDING",
        JobStatus::Running => "RUNNING",
        JobStatus::Succeeded => "SUCCEEDED",
        JobStatus::Failed => "FAILED",
        JobStatus::Stopped => "STOPPED",
    }
}

/// Whether a job in this status has finished for good.
pub fn is_finished(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Succeeded | JobStatus::Failed | JobStatus::Stopped
    )
}

#[cfg(test)]
mod tests {
    use super::check_submission_id;

    #[test]
    fn submission_ids_cannot_name_other_paths() {
        for good in ["job-1a2b", "run_7.v2", "A"] {
            assert!(check_submission_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "../etc",
            "a/b",
            "a b",
            "x\0",
            &"x".repeat(129),
        ] {
            assert!(check_submission_id(bad).is_err(), "{bad}");
        }
    }
}
