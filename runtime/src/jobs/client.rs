//! A client of the head's `Jobs` service: upload a working directory (packed once, sent only if
//! the head lacks its hash), submit, inspect, stop and delete jobs, read and follow their logs.
//! `troupe job` is built on it; Rust programs can use it as Python uses `JobSubmissionClient`.

use crate::error::{Error, Result};
use crate::rpc::{AuthChannel, Token};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use troupe_proto::jobs_client::JobsClient;
use troupe_proto::{
    BinaryChunk, BinaryRef, GetJobLogsRequest, JobInfo, JobRef, JobSpec, JobStatus, StopJobRequest,
    SubmitJobReply, SubmitJobRequest, TailJobLogsRequest,
};

/// How long one unary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Size of upload chunks.
const CHUNK_BYTES: usize = 1 << 20;

/// A connection to a head's `Jobs` service.
#[derive(Clone)]
pub struct JobClient {
    jobs: JobsClient<AuthChannel>,
    address: String,
}

impl JobClient {
    /// Connects to the head at `address` (`host:port` or `http://host:port`).
    pub async fn connect(address: &str, token: &Token) -> Result<JobClient> {
        let channel = crate::rpc::connect(address, token)
            .await
            .map_err(|why| Error::Invalid {
                what: "head address".to_string(),
                why,
            })?;
        let jobs = JobsClient::new(channel)
            .max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
        Ok(JobClient {
            jobs,
            address: address.to_string(),
        })
    }

    async fn bounded<T>(
        &self,
        what: String,
        call: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(Error::rpc(what, status)),
            Err(_) => Err(Error::Rpc {
                context: what,
                code: tonic::Code::DeadlineExceeded,
                status_message: format!(
                    "the head at {} did not answer within {} s",
                    self.address,
                    REQUEST_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    /// Packs `dir`, uploads it unless the head has those bytes already, and returns its hash.
    pub async fn upload_working_dir(&self, dir: &Path) -> Result<String> {
        let owned = dir.to_path_buf();
        let archive = tokio::task::spawn_blocking(move || {
            super::archive::pack(&owned, super::MAX_WORKING_DIR_BYTES)
        })
        .await
        .map_err(|err| Error::io("packing the working directory", std::io::Error::other(err)))?
        .map_err(|err| Error::Invalid {
            what: format!("working directory {}", dir.display()),
            why: err.to_string(),
        })?;
        self.upload_package(archive).await
    }

    /// Uploads a package (a gzip-compressed tar) unless the head has it; returns its hash.
    pub async fn upload_package(&self, archive: Vec<u8>) -> Result<String> {
        let hash = hex::encode(Sha256::digest(&archive));
        let mut jobs = self.jobs.clone();
        let present = self
            .bounded(
                "asking the head for a package".to_string(),
                jobs.has_package(BinaryRef { hash: hash.clone() }),
            )
            .await?
            .present;
        if present {
            return Ok(hash);
        }
        let archive = bytes::Bytes::from(archive);
        let chunks: Vec<BinaryChunk> = (0..archive.len().max(1))
            .step_by(CHUNK_BYTES)
            .map(|start| BinaryChunk {
                hash: if start == 0 {
                    hash.clone()
                } else {
                    String::new()
                },
                data: archive.slice(start..(start + CHUNK_BYTES).min(archive.len())),
            })
            .collect();
        let mut jobs = self.jobs.clone();
        self.bounded(
            "uploading the working directory".to_string(),
            jobs.upload_package(futures::stream::iter(chunks)),
        )
        .await?;
        Ok(hash)
    }

    /// Submits a job; an empty `submission_id` lets the head pick one.
    pub async fn submit(&self, submission_id: &str, spec: JobSpec) -> Result<SubmitJobReply> {
        let mut jobs = self.jobs.clone();
        let request = SubmitJobRequest {
            submission_id: submission_id.to_string(),
            spec: Some(spec),
        };
        self.bounded("submitting the job".to_string(), jobs.submit_job(request))
            .await
    }

    pub async fn get(&self, submission_id: &str) -> Result<JobInfo> {
        let mut jobs = self.jobs.clone();
        let request = JobRef {
            submission_id: submission_id.to_string(),
        };
        self.bounded(
            format!("reading job {submission_id}"),
            jobs.get_job(request),
        )
        .await
    }

    pub async fn list(&self) -> Result<Vec<JobInfo>> {
        let mut jobs = self.jobs.clone();
        Ok(self
            .bounded(
                "listing jobs".to_string(),
                jobs.list_jobs(troupe_proto::Empty {}),
            )
            .await?
            .jobs)
    }

    /// Stops a job (SIGTERM, then SIGKILL after `grace`); false if it had already finished.
    pub async fn stop(&self, submission_id: &str, grace: Duration) -> Result<bool> {
        let mut jobs = self.jobs.clone();
        let request = StopJobRequest {
            submission_id: submission_id.to_string(),
            grace_ms: grace.as_millis() as u64,
        };
        Ok(self
            .bounded(
                format!("stopping job {submission_id}"),
                jobs.stop_job(request),
            )
            .await?
            .stopped)
    }

    pub async fn delete(&self, submission_id: &str) -> Result<()> {
        let mut jobs = self.jobs.clone();
        let request = JobRef {
            submission_id: submission_id.to_string(),
        };
        self.bounded(
            format!("deleting job {submission_id}"),
            jobs.delete_job(request),
        )
        .await?;
        Ok(())
    }

    /// The whole log as it is now.
    pub async fn logs(&self, submission_id: &str) -> Result<Vec<u8>> {
        let mut log = Vec::new();
        loop {
            let mut jobs = self.jobs.clone();
            let request = GetJobLogsRequest {
                submission_id: submission_id.to_string(),
                offset: log.len() as u64,
                max_bytes: 0,
            };
            let chunk = self
                .bounded(
                    format!("reading the log of job {submission_id}"),
                    jobs.get_job_logs(request),
                )
                .await?;
            if chunk.data.is_empty() {
                return Ok(log);
            }
            log.extend_from_slice(&chunk.data);
        }
    }

    /// Follows the log from its start, handing each piece to `sink`, until the job has finished
    /// and all its output was seen; returns the job's final record.
    pub async fn follow(
        &self,
        submission_id: &str,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<JobInfo> {
        let context = format!("following the log of job {submission_id}");
        let mut jobs = self.jobs.clone();
        let request = TailJobLogsRequest {
            submission_id: submission_id.to_string(),
            offset: 0,
        };
        let mut stream = self
            .bounded(context.clone(), jobs.tail_job_logs(request))
            .await?;
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    sink(&chunk.data);
                    if chunk.complete {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => return Err(Error::rpc(context, status)),
            }
        }
        let info = self.get(submission_id).await?;
        if !super::is_finished(info.status()) {
            return Err(Error::Rpc {
                context,
                code: tonic::Code::Unavailable,
                status_message: format!(
                    "the log stream ended while the job is {}",
                    super::status_name(info.status())
                ),
            });
        }
        Ok(info)
    }
}

/// The exit code a command that waited for a job ends with: 0 for SUCCEEDED, 130 for STOPPED, and
/// for FAILED the job's own exit code, 128 + the signal for one killed by a signal, 1 otherwise
/// (as a shell reports them).
pub fn exit_code_of(info: &JobInfo) -> i32 {
    match info.status() {
        JobStatus::Succeeded => 0,
        JobStatus::Stopped => 130,
        JobStatus::Failed if info.signal > 0 => 128 + info.signal,
        JobStatus::Failed if info.has_exit_code && (1..256).contains(&info.exit_code) => {
            info.exit_code
        }
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_commands_exit_as_a_shell_would() {
        let ended = |status: JobStatus, code: Option<i32>, signal: i32| JobInfo {
            status: status as i32,
            has_exit_code: code.is_some(),
            exit_code: code.unwrap_or(-1),
            signal,
            ..JobInfo::default()
        };
        assert_eq!(exit_code_of(&ended(JobStatus::Succeeded, Some(0), 0)), 0);
        assert_eq!(exit_code_of(&ended(JobStatus::Failed, Some(3), 0)), 3);
        assert_eq!(exit_code_of(&ended(JobStatus::Failed, None, 9)), 137);
        assert_eq!(exit_code_of(&ended(JobStatus::Failed, None, 0)), 1);
        assert_eq!(exit_code_of(&ended(JobStatus::Stopped, None, 15)), 130);
    }
}
