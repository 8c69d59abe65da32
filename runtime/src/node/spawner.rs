//! Starting the node's processes (workers and job entrypoints) from one long-lived thread, so that
//! the parent-death signal that kills them when their agent dies is tied to the agent's life, not
//! to some short-lived thread; each leads its own process group, its output goes to a log file,
//! and stopping one stops what it started.

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use tokio::sync::oneshot;

/// A process to start.
pub(crate) struct Process {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Working directory; the agent's own when `None`.
    pub cwd: Option<PathBuf>,
    /// Where its stdout and stderr go (appended).
    pub log_path: PathBuf,
    /// Write each line as a timestamped record (`crate::logs`) through pipes, rather than the
    /// raw bytes straight into the file.
    pub records: bool,
}

/// A started process; `output` fires once its captured output is all in the log (records only).
pub(crate) struct Spawned {
    pub child: tokio::process::Child,
    pub output: Option<oneshot::Receiver<()>>,
}

type SpawnJob = (Process, oneshot::Sender<std::io::Result<Spawned>>);

/// The spawner thread's mailbox. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Spawner {
    jobs: Arc<Mutex<std_mpsc::Sender<SpawnJob>>>,
}

impl Spawner {
    /// Starts the spawner thread on the current tokio runtime.
    pub(crate) fn start() -> Result<Spawner> {
        let (jobs, receiver) = std_mpsc::channel::<SpawnJob>();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("troupe-spawner".to_string())
            .spawn(move || {
                let _entered = runtime.enter();
                while let Ok((process, reply)) = receiver.recv() {
                    let _ = reply.send(spawn_process(&process));
                }
            })
            .map_err(|err| Error::io("starting the spawner thread", err))?;
        Ok(Spawner {
            jobs: Arc::new(Mutex::new(jobs)),
        })
    }

    /// Starts `process` from the spawner thread.
    pub(crate) async fn spawn(&self, process: Process) -> std::io::Result<Spawned> {
        let (reply, child) = oneshot::channel();
        self.jobs
            .lock()
            .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
            .send((process, reply))
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        child
            .await
            .map_err(|_| std::io::Error::other("the spawner thread dropped the request"))?
    }
}

/// SIGTERMs a process's group (a worker or an entrypoint and everything it started).
pub(crate) fn terminate(pid: u32) {
    if pid > 0 {
        // SAFETY: kill(2) on the process group of a process this agent started.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGTERM);
        }
    }
}

/// SIGKILLs a worker and every process it started (each worker leads its own process group).
pub(crate) fn kill(pid: u32) {
    if pid > 0 {
        // SAFETY: kill(2) on a worker this agent started and on its process group.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// SIGKILLs whatever is left of a process group whose leader was just reaped. Call it right
/// then: while members are left the kernel hands out no pid equal to the group's id, but once the
/// group is empty a new process may get that number.
pub(crate) fn kill_group(pgid: u32) {
    if pgid > 0 {
        // SAFETY: kill(2) on a process group this agent created.
        unsafe {
            libc::kill(-(pgid as i32), libc::SIGKILL);
        }
    }
}

fn spawn_process(process: &Process) -> std::io::Result<Spawned> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&process.log_path)?;
    let mut command = tokio::process::Command::new(&process.program);
    if let Some(cwd) = &process.cwd {
        command.current_dir(cwd);
    }
    command
        .args(&process.args)
        .envs(process.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(false);
    if process.records {
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
    } else {
        command.stdout(log.try_clone()?).stderr(log.try_clone()?);
    }
    let parent = std::process::id() as i32;
    // SAFETY: only async-signal-safe calls (setpgid, prctl, getppid, _exit) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // Its own process group, so that stopping it also stops what it started.
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let output = match (child.stdout.take(), child.stderr.take()) {
        (Some(stdout), Some(stderr)) => Some(super::output::capture(stdout, stderr, log)),
        _ => None,
    };
    Ok(Spawned { child, output })
}
