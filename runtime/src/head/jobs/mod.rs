//! The head's side of jobs: the `Jobs` gRPC service (submit, inspect, stop, delete, logs, package
//! upload), what node agents report about jobs (log appends, exits), carrying out the start and
//! stop orders for entrypoints, and where job logs (`logs`) are kept (their records are part of
//! the head's state, `head/store`).

mod logs;

pub(crate) use logs::LogFiles;

use super::state::{JobExit, Order};
use super::Head;
use crate::rpc::{check_id, check_submission_id, check_text, invalid};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use troupe_proto::jobs_server::Jobs;
use troupe_proto::*;

/// Grace period of a stop that names none.
const DEFAULT_STOP_GRACE_MS: u64 = 5_000;
const MAX_STOP_GRACE_MS: u64 = 600_000;
/// Most bytes one GetJobLogs answer carries, by default and at most.
const DEFAULT_LOG_READ: u64 = 8 << 20;
const MAX_LOG_READ: u64 = 64 << 20;
/// Size of the chunks a log tail sends.
const TAIL_CHUNK: usize = 1 << 20;
/// Lines kept in a finished job's record.
const TAIL_LINES: usize = 20;
/// Largest working-directory package accepted (compressed).
pub(super) const MAX_PACKAGE_BYTES: u64 = 512 << 20;

/// Checks a stored upload before it is kept: a package must unpack safely within the limits.
pub(super) fn check_package(path: &std::path::Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|err| format!("reading the upload: {err}"))?;
    crate::jobs::archive::validate(std::io::BufReader::new(file), &Default::default())
        .map(|_| ())
        .map_err(|err| err.to_string())
}

fn check_spec(spec: &JobSpec) -> Result<(), Status> {
    if spec.entrypoint.trim().is_empty() {
        return Err(invalid("spec.entrypoint", "is empty"));
    }
    if spec.entrypoint.len() > 64 * 1024 || spec.entrypoint.contains('\0') {
        return Err(invalid(
            "spec.entrypoint",
            "is longer than 64 KiB or contains a NUL byte",
        ));
    }
    if !spec.working_dir_package.is_empty()
        && !crate::head::is_sha256_hex(&spec.working_dir_package)
    {
        return Err(invalid(
            "spec.working_dir_package",
            "expected the 64 lower-case hex digits of an uploaded package's sha256",
        ));
    }
    for (key, value) in &spec.env_vars {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid(
                "spec.env_vars",
                format!("`{key}` is not a variable name"),
            ));
        }
        if value.contains('\0') {
            return Err(invalid(
                "spec.env_vars",
                format!("the value of {key} contains a NUL byte"),
            ));
        }
    }
    for (field, amount) in [
        ("spec.entrypoint_num_cpus", spec.entrypoint_num_cpus),
        ("spec.entrypoint_num_gpus", spec.entrypoint_num_gpus),
    ] {
        if !amount.is_finite() || !(0.0..=1_000_000.0).contains(&amount) {
            return Err(invalid(field, format!("{amount} is not a quantity")));
        }
    }
    if spec.entrypoint_num_gpus > 1.0 && spec.entrypoint_num_gpus.fract() != 0.0 {
        return Err(invalid(
            "spec.entrypoint_num_gpus",
            format!(
                "{}: above one GPU, GPUs must be whole",
                spec.entrypoint_num_gpus
            ),
        ));
    }
    if spec.metadata.len() > 256 {
        return Err(invalid("spec.metadata", "more than 256 entries"));
    }
    for (key, value) in &spec.metadata {
        check_text("spec.metadata key", key, 256)?;
        check_text("spec.metadata value", value, 4096)?;
    }
    Ok(())
}

fn new_submission_id() -> String {
    format!("job-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

impl Head {
    /// A job's record with its current log size.
    fn job_info(&self, id: &str) -> Result<JobInfo, Status> {
        let mut info = self
            .read(|state| state.jobs.get(id).map(|job| job.info.clone()))
            .ok_or_else(|| Status::not_found(format!("no job with submission id `{id}`")))?;
        info.log_bytes = self.job_logs.len(id);
        Ok(info)
    }

    fn job_status(&self, id: &str) -> Option<JobStatus> {
        self.read(|state| state.jobs.get(id).map(|job| job.info.status()))
    }

    /// A node agent sends output of a job's entrypoint.
    pub(super) fn append_job_log(&self, append: JobLogAppend) -> Result<JobLogAck, Status> {
        check_id("node_id", &append.node_id)?;
        check_submission_id(&append.submission_id)?;
        // Entrypoints never move between nodes, so the node id is not compared: right after the
        // head restarted, appends still carry the agent's earlier id.
        let known = self.read(|state| {
            state
                .jobs
                .get(&append.submission_id)
                .is_some_and(|job| job.info.status() == JobStatus::Running)
        });
        if !known {
            return Ok(JobLogAck {
                stored: append.offset.saturating_add(append.data.len() as u64),
                unknown: true,
            });
        }
        let stored = self
            .job_logs
            .append_at(&append.submission_id, append.offset, &append.data)
            .map_err(|err| Status::internal(format!("writing the job's log: {err}")))?;
        self.logs_changed.send_modify(|version| *version += 1);
        Ok(JobLogAck {
            stored,
            unknown: false,
        })
    }

    /// A node agent reports that an entrypoint exited (after sending all its output).
    pub(super) fn job_exited(self: &Arc<Self>, report: JobExitedRequest) -> Result<(), Status> {
        check_id("node_id", &report.node_id)?;
        check_submission_id(&report.submission_id)?;
        let exit = JobExit {
            exit_code: report.exit_code,
            signal: report.signal,
            log_tail: self.job_logs.tail(&report.submission_id, TAIL_LINES),
        };
        self.update(|state| {
            let orders =
                state.job_exited(&report.node_id, &report.submission_id, exit, Instant::now());
            ((), orders)
        });
        self.logs_changed.send_modify(|version| *version += 1);
        Ok(())
    }

    /// Sends a start order to a node agent and records the pid, or the failure.
    pub(super) async fn start_job(
        self: &Arc<Self>,
        node_address: String,
        request: StartJobRequest,
    ) {
        let id = request.submission_id.clone();
        // The record of the placement is on disk before the entrypoint can run: a head that
        // crashes now does not place the job a second time after its restart.
        if let Err(status) = self.durable().await {
            let why = status.message().to_string();
            tracing::error!(job = id, %why, "not starting a job whose placement is not on disk");
            self.update(|state| ((), state.job_start_failed(&id, &why, Instant::now())));
            self.logs_changed.send_modify(|version| *version += 1);
            return;
        }
        let outcome = match self.agent(&node_address) {
            Ok(mut agent) => {
                match tokio::time::timeout(Duration::from_secs(300), agent.start_job(request)).await
                {
                    Ok(Ok(reply)) => Ok(reply),
                    Ok(Err(status)) if is_transport(&status) => Err(None),
                    Ok(Err(status)) => Err(Some(status.message().to_string())),
                    Err(_) => Err(None),
                }
            }
            Err(err) => Err(Some(err)),
        };
        match outcome {
            Err(None) => {
                // The start may have gone through: the node's heartbeats say (a job it does not
                // list within 10 s is lost).
                tracing::warn!(
                    job = id,
                    node = node_address,
                    "no answer to a job start; the node's heartbeats will tell"
                );
            }
            Ok(reply) => {
                let pid = reply.into_inner().pid;
                tracing::info!(job = id, node = node_address, pid, "job started");
                self.update(|state| ((), state.job_started(&id, pid, Instant::now())));
            }
            Err(Some(why)) => {
                tracing::warn!(job = id, %why, "could not start a job");
                self.update(|state| ((), state.job_start_failed(&id, &why, Instant::now())));
                self.logs_changed.send_modify(|version| *version += 1);
            }
        }
    }

    /// Sends a stop order to a node agent.
    pub(super) async fn stop_job(self: &Arc<Self>, node_address: String, order: StopJobOrder) {
        let id = order.submission_id.clone();
        let answer = match self.agent(&node_address) {
            Ok(mut agent) => tokio::time::timeout(Duration::from_secs(10), agent.stop_job(order))
                .await
                .map_err(|_| "no answer within 10 s".to_string())
                .and_then(|reply| reply.map_err(|status| status.message().to_string())),
            Err(err) => Err(err),
        };
        if let Err(why) = answer {
            tracing::warn!(job = id, node = node_address, %why, "job stop order not confirmed");
        }
    }
}

/// Whether a status says the call's fate is unknown (the connection, not the node, failed).
fn is_transport(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}

/// The `Jobs` service.
#[derive(Clone)]
pub(super) struct JobsService(pub(super) Arc<Head>);

#[tonic::async_trait]
impl Jobs for JobsService {
    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobReply>, Status> {
        self.0.writable()?;
        let request = request.into_inner();
        let spec = request.spec.ok_or_else(|| invalid("spec", "missing"))?;
        check_spec(&spec)?;
        let id = if request.submission_id.is_empty() {
            new_submission_id()
        } else {
            check_submission_id(&request.submission_id)?;
            request.submission_id
        };
        if !spec.working_dir_package.is_empty() && !self.0.packages.has(&spec.working_dir_package) {
            return Err(invalid(
                "spec.working_dir_package",
                format!(
                    "no package with hash {} was uploaded",
                    spec.working_dir_package
                ),
            ));
        }
        let already_existed =
            self.0
                .update(|state| match state.submit_job(&id, spec, Instant::now()) {
                    Ok((existed, orders)) => (Ok(existed), orders),
                    Err(status) => (Err(status), Vec::new()),
                })?;
        if !already_existed {
            tracing::info!(job = id, "job submitted");
        }
        // Acknowledged only once on disk: a head that crashes after answering still has it.
        self.0.durable().await?;
        Ok(Response::new(SubmitJobReply {
            submission_id: id,
            already_existed,
        }))
    }

    async fn get_job(&self, request: Request<JobRef>) -> Result<Response<JobInfo>, Status> {
        let id = request.into_inner().submission_id;
        check_submission_id(&id)?;
        Ok(Response::new(self.0.job_info(&id)?))
    }

    async fn list_jobs(&self, _request: Request<Empty>) -> Result<Response<ListJobsReply>, Status> {
        let mut jobs: Vec<JobInfo> = self
            .0
            .read(|state| state.jobs.values().map(|job| job.info.clone()).collect());
        for info in &mut jobs {
            info.log_bytes = self.0.job_logs.len(&info.submission_id);
        }
        jobs.sort_by(|a, b| {
            (a.submit_time_ms, &a.submission_id).cmp(&(b.submit_time_ms, &b.submission_id))
        });
        Ok(Response::new(ListJobsReply { jobs }))
    }

    async fn stop_job(
        &self,
        request: Request<StopJobRequest>,
    ) -> Result<Response<StopJobReply>, Status> {
        let request = request.into_inner();
        check_submission_id(&request.submission_id)?;
        let grace_ms = match request.grace_ms {
            0 => DEFAULT_STOP_GRACE_MS,
            grace => grace.min(MAX_STOP_GRACE_MS),
        };
        let stopped = self.0.update(|state| {
            match state.stop_job(&request.submission_id, grace_ms, Instant::now()) {
                Ok((stopped, orders)) => (Ok(stopped), orders),
                Err(status) => (Err(status), Vec::<Order>::new()),
            }
        })?;
        self.0.durable().await?;
        self.0.logs_changed.send_modify(|version| *version += 1);
        Ok(Response::new(StopJobReply { stopped }))
    }

    async fn delete_job(&self, request: Request<JobRef>) -> Result<Response<Empty>, Status> {
        let id = request.into_inner().submission_id;
        check_submission_id(&id)?;
        self.0.update(|state| (state.delete_job(&id), Vec::new()))?;
        self.0.durable().await?;
        self.0.job_logs.remove(&id);
        Ok(Response::new(Empty {}))
    }

    async fn get_job_logs(
        &self,
        request: Request<GetJobLogsRequest>,
    ) -> Result<Response<JobLogChunk>, Status> {
        let request = request.into_inner();
        check_submission_id(&request.submission_id)?;
        let status = self.0.job_status(&request.submission_id).ok_or_else(|| {
            Status::not_found(format!(
                "no job with submission id `{}`",
                request.submission_id
            ))
        })?;
        let max = match request.max_bytes {
            0 => DEFAULT_LOG_READ,
            max => max.min(MAX_LOG_READ),
        };
        let data = self
            .0
            .job_logs
            .read(&request.submission_id, request.offset, max as usize)
            .map_err(|err| Status::internal(format!("reading the job's log: {err}")))?;
        let next_offset = request.offset + data.len() as u64;
        let complete = crate::jobs::is_finished(status)
            && next_offset >= self.0.job_logs.len(&request.submission_id);
        Ok(Response::new(JobLogChunk {
            data: data.into(),
            offset: request.offset,
            next_offset,
            complete,
            status: status as i32,
        }))
    }

    type TailJobLogsStream = ReceiverStream<Result<JobLogChunk, Status>>;

    async fn tail_job_logs(
        &self,
        request: Request<TailJobLogsRequest>,
    ) -> Result<Response<Self::TailJobLogsStream>, Status> {
        let request = request.into_inner();
        check_submission_id(&request.submission_id)?;
        if self.0.job_status(&request.submission_id).is_none() {
            return Err(Status::not_found(format!(
                "no job with submission id `{}`",
                request.submission_id
            )));
        }
        let (chunks, receiver) = mpsc::channel(4);
        tokio::spawn(tail(
            self.0.clone(),
            request.submission_id,
            request.offset,
            chunks,
        ));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn has_package(
        &self,
        request: Request<BinaryRef>,
    ) -> Result<Response<HasBinaryReply>, Status> {
        let hash = request.into_inner().hash;
        Ok(Response::new(self.0.packages.answer_has(&hash)?))
    }

    async fn upload_package(
        &self,
        request: Request<Streaming<BinaryChunk>>,
    ) -> Result<Response<BinaryRef>, Status> {
        let hash = self.0.packages.receive(request.into_inner()).await?;
        Ok(Response::new(BinaryRef { hash }))
    }
}

/// Streams a log as it grows, until the job has finished and everything was sent, or the client
/// went away. Each wait for more output lasts at most a second.
async fn tail(
    head: Arc<Head>,
    id: String,
    mut offset: u64,
    chunks: mpsc::Sender<Result<JobLogChunk, Status>>,
) {
    let mut changes = head.logs_changed.subscribe();
    loop {
        // The status is read before the log: once finished, every byte is already on disk.
        let Some(status) = head.job_status(&id) else {
            let _ = chunks
                .send(Err(Status::not_found(format!("job `{id}` was deleted"))))
                .await;
            return;
        };
        let data = match head.job_logs.read(&id, offset, TAIL_CHUNK) {
            Ok(data) => data,
            Err(err) => {
                let _ = chunks
                    .send(Err(Status::internal(format!(
                        "reading the job's log: {err}"
                    ))))
                    .await;
                return;
            }
        };
        let finished = crate::jobs::is_finished(status);
        let next_offset = offset + data.len() as u64;
        let complete = finished && data.len() < TAIL_CHUNK;
        if !data.is_empty() || complete {
            let chunk = JobLogChunk {
                data: data.into(),
                offset,
                next_offset,
                complete,
                status: status as i32,
            };
            if chunks.send(Ok(chunk)).await.is_err() {
                return;
            }
            offset = next_offset;
            if complete {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = chunks.closed() => return,
        }
    }
}
