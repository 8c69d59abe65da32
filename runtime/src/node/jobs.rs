//! Job entrypoints on one node: fetching and safely unpacking the working directory, starting
//! `sh -c ENTRYPOINT` in it with the job's environment (the head's address and token, the job id,
//! its GPUs), streaming its output to the head as it is written, stopping it (SIGTERM to its
//! process group, SIGKILL after the grace period), and reporting its exit once all of its output
//! has reached the head.

use super::spawner::{kill, kill_group, terminate, Process};
use super::NodeAgent;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Status;
use troupe_proto::{JobExitedRequest, JobLogAppend, StartJobRequest};

/// How often a running entrypoint's log file is checked for new output.
const POLL: Duration = Duration::from_millis(25);
/// Most bytes in one log append.
const APPEND_BYTES: usize = 1 << 20;
/// How long an exit report keeps being retried while the head is unreachable.
const REPORT_PATIENCE: Duration = Duration::from_secs(120);

/// What the node knows of its jobs, under one lock so that a stop never slips between a start's
/// steps.
#[derive(Default)]
struct Jobs {
    /// Entrypoints running: submission id to pid (the leader of the job's process group).
    running: HashMap<String, u32>,
    /// Jobs taken on and not yet reported finished: starting, running, or exited with the report
    /// on its way. Heartbeats list them.
    active: HashSet<String>,
    /// Jobs told to stop while their entrypoint was still being set up.
    cancelled: HashSet<String>,
}

pub(crate) struct JobTable {
    dir: PathBuf,
    jobs: Arc<Mutex<Jobs>>,
}

/// What `JobTable::started` found.
enum Started {
    Run,
    /// A stop came while the entrypoint was being started: it is killed at once.
    Cancelled,
}

impl JobTable {
    pub(crate) fn new(dir: PathBuf) -> Self {
        JobTable {
            dir,
            jobs: Arc::new(Mutex::new(Jobs::default())),
        }
    }

    /// The entrypoint's working directory: `WORK_DIR/jobs/dirs/ID`.
    fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join("dirs").join(id)
    }

    /// Where its output goes: `WORK_DIR/jobs/logs/ID.log` (apart from the directories, so that no
    /// job's log is another job's directory).
    fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{id}.log"))
    }

    fn with<R>(&self, look: impl FnOnce(&mut Jobs) -> R) -> R {
        let mut jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        look(&mut jobs)
    }

    /// Running entrypoints and their pids.
    pub(crate) fn running(&self) -> HashMap<String, u32> {
        self.with(|jobs| jobs.running.clone())
    }

    /// Jobs taken on and not yet reported finished.
    pub(crate) fn active(&self) -> Vec<String> {
        self.with(|jobs| jobs.active.iter().cloned().collect())
    }

    fn pid_of(&self, id: &str) -> Option<u32> {
        self.with(|jobs| jobs.running.get(id).copied())
    }

    /// Marks a job taken on; false if it already was.
    fn take_on(&self, id: &str) -> bool {
        self.with(|jobs| jobs.active.insert(id.to_string()))
    }

    /// Records the entrypoint's pid, unless a stop came first.
    fn started(&self, id: &str, pid: u32) -> Started {
        self.with(|jobs| {
            jobs.running.insert(id.to_string(), pid);
            if jobs.cancelled.remove(id) {
                Started::Cancelled
            } else {
                Started::Run
            }
        })
    }

    fn cancelled_before_start(&self, id: &str) -> bool {
        self.with(|jobs| jobs.cancelled.contains(id))
    }

    fn exited(&self, id: &str) {
        self.with(|jobs| jobs.running.remove(id));
    }

    fn let_go(&self, id: &str) {
        self.with(|jobs| {
            jobs.active.remove(id);
            jobs.cancelled.remove(id);
            jobs.running.remove(id);
        });
    }

    /// SIGTERMs the entrypoint's process group, then SIGKILLs the group after `grace` (whatever
    /// is left of it, even if the shell itself already exited). A job still being set up is
    /// cancelled instead.
    pub(crate) fn stop(&self, id: &str, grace: Duration) {
        let pid = self.with(|jobs| {
            let pid = jobs.running.get(id).copied();
            if pid.is_none() && jobs.active.contains(id) {
                jobs.cancelled.insert(id.to_string());
            }
            pid
        });
        let Some(pid) = pid else {
            return;
        };
        tracing::info!(
            job = id,
            pid,
            grace_ms = grace.as_millis() as u64,
            "stopping a job"
        );
        if grace.is_zero() {
            kill(pid);
            return;
        }
        terminate(pid);
        let id = id.to_string();
        let jobs = self.jobs.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            // Only while the same entrypoint still runs: once it is reaped, its pid may be
            // another process's (what it left behind was killed when it exited).
            let still = jobs
                .lock()
                .map(|jobs| jobs.running.get(&id) == Some(&pid))
                .unwrap_or(false);
            if still {
                tracing::debug!(job = id, pid, "grace period over: killing the job");
                kill(pid);
            }
        });
    }

    /// SIGKILLs every entrypoint and its process group.
    pub(crate) fn kill_all(&self) {
        for pid in self.with(|jobs| jobs.running.values().copied().collect::<Vec<_>>()) {
            kill(pid);
        }
    }
}

/// Starts a job's entrypoint and returns its pid; its output and exit are then reported by a task
/// of their own. The start runs in a task of its own too, so that it finishes (or cleans up) even
/// if the head stops waiting for the answer.
pub(super) async fn start(agent: &Arc<NodeAgent>, request: StartJobRequest) -> Result<u32, Status> {
    let id = request.submission_id.clone();
    if let Some(pid) = agent.jobs.pid_of(&id) {
        return Ok(pid);
    }
    if !agent.jobs.take_on(&id) {
        return Err(Status::already_exists(format!(
            "job {id} is already being started on this node"
        )));
    }
    let owned = agent.clone();
    tokio::spawn(async move {
        let outcome = launch(&owned, request).await;
        if outcome.is_err() {
            owned.jobs.let_go(&id);
        }
        outcome
    })
    .await
    .map_err(|err| Status::internal(format!("starting the job: {err}")))?
}

/// Prepares the directory, unpacks the package and starts the process.
async fn launch(agent: &Arc<NodeAgent>, request: StartJobRequest) -> Result<u32, Status> {
    let id = request.submission_id.clone();
    let job_dir = agent.jobs.job_dir(&id);
    let log_path = agent.jobs.log_path(&id);
    prepare_dir(&job_dir, &log_path)
        .await
        .map_err(|err| Status::internal(format!("preparing {}: {err}", job_dir.display())))?;
    if !request.package_hash.is_empty() {
        let package = agent
            .packages
            .resolve(&request.package_hash)
            .await
            .map_err(|why| {
                Status::failed_precondition(format!(
                    "working directory package {}: {why}",
                    request.package_hash
                ))
            })?;
        let dest = job_dir.clone();
        tokio::task::spawn_blocking(move || unpack(&package, &dest))
            .await
            .map_err(|err| Status::internal(format!("unpacking the working directory: {err}")))?
            .map_err(|why| {
                Status::failed_precondition(format!("unpacking the working directory: {why}"))
            })?;
    }
    if agent.jobs.cancelled_before_start(&id) {
        return Err(Status::cancelled(
            "the job was stopped before its entrypoint started",
        ));
    }
    let process = Process {
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".to_string(), request.entrypoint.clone()],
        env: environment(agent, &request),
        cwd: Some(job_dir),
        log_path: log_path.clone(),
        records: false,
    };
    let child = agent
        .spawner
        .spawn(process)
        .await
        .map_err(|err| Status::failed_precondition(format!("starting `sh -c`: {err}")))?
        .child;
    let pid = child.id().unwrap_or(0);
    tracing::info!(job = id, pid, "job entrypoint started");
    if let Started::Cancelled = agent.jobs.started(&id, pid) {
        tracing::info!(job = id, pid, "stopped while starting: killing it");
        kill(pid);
    }
    tokio::spawn(watch(agent.clone(), id, child, log_path));
    Ok(pid)
}

/// A fresh, empty job directory and log file.
async fn prepare_dir(job_dir: &Path, log_path: &Path) -> std::io::Result<()> {
    if tokio::fs::symlink_metadata(job_dir).await.is_ok() {
        tokio::fs::remove_dir_all(job_dir).await?;
    }
    tokio::fs::create_dir_all(job_dir).await?;
    if let Some(logs) = log_path.parent() {
        tokio::fs::create_dir_all(logs).await?;
    }
    tokio::fs::write(log_path, b"").await
}

fn unpack(package: &Path, dest: &Path) -> Result<(), String> {
    let file = std::fs::File::open(package)
        .map_err(|err| format!("opening {}: {err}", package.display()))?;
    crate::jobs::archive::unpack(std::io::BufReader::new(file), dest, &Default::default())
        .map(|_| ())
        .map_err(|err| err.to_string())
}

/// The entrypoint's environment on top of the agent's: the job's own variables, then what troupe
/// sets (which the job cannot override).
fn environment(agent: &NodeAgent, request: &StartJobRequest) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = request.env.clone().into_iter().collect();
    vars.sort();
    if !request.env.contains_key("PYTHONUNBUFFERED") {
        vars.push(("PYTHONUNBUFFERED".to_string(), "1".to_string()));
    }
    vars.extend([
        (
            crate::jobs::JOB_ID_ENV.to_string(),
            request.submission_id.clone(),
        ),
        (
            crate::jobs::ADDRESS_ENV.to_string(),
            agent.config.head_address.clone(),
        ),
        (
            crate::rpc::auth::TOKEN_ENV.to_string(),
            agent.config.token.as_str().to_string(),
        ),
    ]);
    if !request.gpu_ids.is_empty() {
        let devices: Vec<String> = request.gpu_ids.iter().map(|id| id.to_string()).collect();
        vars.push(("CUDA_VISIBLE_DEVICES".to_string(), devices.join(",")));
    }
    if request.cpu_milli > 0 {
        vars.push((
            super::service_env::NUM_CPUS.to_string(),
            format!("{}", request.cpu_milli as f64 / 1000.0),
        ));
    }
    vars
}

/// Streams the entrypoint's output to the head until it exits, then reports the exit.
async fn watch(
    agent: Arc<NodeAgent>,
    id: String,
    mut child: tokio::process::Child,
    log_path: PathBuf,
) {
    // The entrypoint leads its own process group, whose id is its pid.
    let pgid = child.id().unwrap_or(0);
    let mut sent = 0_u64;
    let status = loop {
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = tokio::time::sleep(POLL) => None,
        };
        if let Some(status) = exited {
            // Reaped: from now on its pid may be another process's, so no signal may use it.
            agent.jobs.exited(&id);
            // Processes the entrypoint left behind in its group end with it.
            kill_group(pgid);
            break status;
        }
        sent = forward(&agent, &id, &log_path, sent).await;
    };
    // Every byte reaches the head before the exit is reported (the head may be restarting).
    let deadline = tokio::time::Instant::now() + REPORT_PATIENCE;
    loop {
        sent = forward(&agent, &id, &log_path, sent).await;
        let total = std::fs::metadata(&log_path)
            .map(|meta| meta.len())
            .unwrap_or(0);
        if sent >= total || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (exit_code, signal) = match status {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            (status.code().unwrap_or(-1), status.signal().unwrap_or(0))
        }
        Err(_) => (-1, 0),
    };
    tracing::info!(
        job = id,
        exit_code,
        signal,
        log_bytes = sent,
        "job entrypoint exited"
    );
    let report = JobExitedRequest {
        node_id: agent.node_id(),
        submission_id: id.clone(),
        exit_code,
        signal,
    };
    let complete = sent
        >= std::fs::metadata(&log_path)
            .map(|meta| meta.len())
            .unwrap_or(0);
    if report_exit(&agent, report).await && complete {
        // The head holds the whole log and the outcome: the node's copies can go.
        let _ = tokio::fs::remove_dir_all(agent.jobs.job_dir(&id)).await;
        let _ = tokio::fs::remove_file(&log_path).await;
    }
    agent.jobs.let_go(&id);
}

/// Tells the head how an entrypoint ended, retrying while the head is unreachable (it may be
/// restarting) for up to `REPORT_PATIENCE`. Returns whether the head took the report.
async fn report_exit(agent: &Arc<NodeAgent>, report: JobExitedRequest) -> bool {
    let id = report.submission_id.clone();
    let deadline = tokio::time::Instant::now() + REPORT_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        let mut head = agent.head.clone();
        let mut report = report.clone();
        report.node_id = agent.node_id();
        match tokio::time::timeout(Duration::from_secs(5), head.job_exited(report)).await {
            Ok(Ok(_)) => return true,
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => return false,
            _ if tokio::time::Instant::now() > deadline => {
                tracing::warn!(job = id, "could not report a job's exit to the head");
                return false;
            }
            _ => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Sends the log from `sent` on to the head; returns how far the head now holds it. Stops early
/// (to try again on the next poll) when the head does not answer; kills the entrypoint when the
/// head no longer counts it as running here.
async fn forward(agent: &Arc<NodeAgent>, id: &str, log_path: &Path, mut sent: u64) -> u64 {
    loop {
        let path = log_path.to_path_buf();
        let data = tokio::task::spawn_blocking(move || read_from(&path, sent))
            .await
            .unwrap_or_default();
        if data.is_empty() {
            return sent;
        }
        let append = JobLogAppend {
            node_id: agent.node_id(),
            submission_id: id.to_string(),
            offset: sent,
            data: data.into(),
        };
        let mut head = agent.head.clone();
        match tokio::time::timeout(Duration::from_secs(5), head.append_job_log(append)).await {
            Ok(Ok(ack)) => {
                let ack = ack.into_inner();
                if ack.unknown {
                    if let Some(pid) = agent.jobs.pid_of(id) {
                        tracing::warn!(
                            job = id,
                            "the head does not count this job as running here: killing it"
                        );
                        kill(pid);
                    }
                    return ack.stored;
                }
                sent = ack.stored;
            }
            _ => return sent,
        }
    }
}

/// Up to `APPEND_BYTES` of the file from `offset`.
fn read_from(path: &Path, offset: u64) -> Vec<u8> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return Vec::new();
    }
    let mut data = Vec::new();
    let _ = file.take(APPEND_BYTES as u64).read_to_end(&mut data);
    data
}
