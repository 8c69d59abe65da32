//! Worker processes of one node: starting them (through the spawner), their log files, stopping
//! them, and noticing when they exit.

use super::spawner::{kill, terminate, Process, Spawner};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How long an exit report waits for the worker's last output to reach its log.
const OUTPUT_DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Everything needed to start one worker.
pub(crate) struct Launch {
    pub actor_id: String,
    pub incarnation: u64,
    pub executable: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// A worker that is running.
struct Running {
    incarnation: u64,
    pid: u32,
}

/// How a worker process ended.
pub(crate) struct Exit {
    pub actor_id: String,
    pub incarnation: u64,
    pub exit_code: i32,
    pub signal: i32,
    pub log_tail: String,
}

pub(crate) struct WorkerTable {
    log_dir: PathBuf,
    running: Arc<Mutex<HashMap<String, Running>>>,
    /// Highest incarnation the head asked this node to stop, per actor: a start for it or an
    /// older one that arrives late is killed at once.
    stopped: Mutex<HashMap<String, u64>>,
    spawner: Spawner,
}

impl WorkerTable {
    pub(crate) fn new(log_dir: PathBuf, spawner: Spawner) -> Self {
        WorkerTable {
            log_dir,
            running: Arc::new(Mutex::new(HashMap::new())),
            stopped: Mutex::new(HashMap::new()),
            spawner,
        }
    }

    /// Where the worker of this actor incarnation writes its output.
    pub(crate) fn log_path(&self, actor_id: &str, incarnation: u64) -> PathBuf {
        self.log_dir.join(format!("{actor_id}-{incarnation}.log"))
    }

    /// Starts a worker and returns its pid and a receiver for its exit.
    pub(crate) async fn start(
        &self,
        launch: Launch,
    ) -> std::io::Result<(u32, oneshot::Receiver<Exit>)> {
        let log_path = self.log_path(&launch.actor_id, launch.incarnation);
        let actor_id = launch.actor_id.clone();
        let incarnation = launch.incarnation;
        let spawned = self
            .spawner
            .spawn(Process {
                program: launch.executable,
                args: launch.args,
                env: launch.env,
                cwd: None,
                log_path: log_path.clone(),
                records: true,
            })
            .await?;
        let (mut child, output) = (spawned.child, spawned.output);
        let pid = child.id().unwrap_or(0);
        let stopped_already = self
            .stopped
            .lock()
            .map(|stopped| {
                stopped
                    .get(&actor_id)
                    .is_some_and(|upto| *upto >= incarnation)
            })
            .unwrap_or(false);
        if let Ok(mut running) = self.running.lock() {
            let newer_running = running
                .get(&actor_id)
                .is_some_and(|entry| entry.incarnation > incarnation);
            if stopped_already || newer_running {
                // A late start: the head moved on while this process was being started.
                kill(pid);
            } else if let Some(previous) =
                running.insert(actor_id.clone(), Running { incarnation, pid })
            {
                // An older incarnation still listed: it must not keep running.
                kill(previous.pid);
            }
        }
        let (exited, exit) = oneshot::channel();
        let running = self.running.clone();
        let tail_path = log_path.clone();
        let actor_id_for_table = actor_id.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Reaped: its pid may be reused, so no stop may signal it any more (pid 0), but it
            // stays listed (heartbeats must not report it gone before its exit is reported).
            if let Ok(mut table) = running.lock() {
                if let Some(entry) = table
                    .get_mut(&actor_id)
                    .filter(|entry| entry.incarnation == incarnation)
                {
                    entry.pid = 0;
                }
            }
            // Its last words reach the log before the exit is reported (bounded: a process it
            // started may hold the pipes open).
            if let Some(output) = output {
                let _ = tokio::time::timeout(OUTPUT_DRAIN_WAIT, output).await;
            }
            let (exit_code, signal) = match status {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    (status.code().unwrap_or(-1), status.signal().unwrap_or(0))
                }
                Err(_) => (-1, 0),
            };
            let _ = exited.send(Exit {
                actor_id,
                incarnation,
                exit_code,
                signal,
                log_tail: record_tail(&tail_path, 20),
            });
            if let Ok(mut table) = running.lock() {
                if table
                    .get(&actor_id_for_table)
                    .is_some_and(|entry| entry.incarnation == incarnation)
                {
                    table.remove(&actor_id_for_table);
                }
            }
        });
        Ok((pid, exit))
    }

    /// Stops the worker of `actor_id` (only `incarnation`, unless it is 0) with SIGKILL, or
    /// SIGTERM first when `grace` is given.
    pub(crate) fn stop(
        &self,
        actor_id: &str,
        incarnation: u64,
        grace: std::time::Duration,
    ) -> bool {
        if incarnation > 0 {
            if let Ok(mut stopped) = self.stopped.lock() {
                let upto = stopped.entry(actor_id.to_string()).or_insert(0);
                *upto = (*upto).max(incarnation);
            }
        }
        let pid = match self.running.lock() {
            Ok(table) => match table.get(actor_id) {
                Some(entry) if incarnation == 0 || entry.incarnation == incarnation => entry.pid,
                _ => return false,
            },
            Err(_) => return false,
        };
        if grace.is_zero() {
            kill(pid);
        } else {
            terminate(pid);
            let running = self.running.clone();
            let actor_id = actor_id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let still = running
                    .lock()
                    .map(|table| table.get(&actor_id).is_some_and(|entry| entry.pid == pid))
                    .unwrap_or(false);
                if still {
                    kill(pid);
                }
            });
        }
        true
    }

    /// "actor_id:incarnation" for each running worker.
    pub(crate) fn running(&self) -> Vec<String> {
        self.running
            .lock()
            .map(|table| {
                table
                    .iter()
                    .map(|(actor, entry)| format!("{actor}:{}", entry.incarnation))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SIGKILLs every worker.
    pub(crate) fn kill_all(&self) {
        if let Ok(table) = self.running.lock() {
            for entry in table.values() {
                kill(entry.pid);
            }
        }
    }
}

/// The text of the last `lines` records of a worker's log (reads at most its last 8 KiB).
fn record_tail(path: &Path, lines: usize) -> String {
    crate::logs::tail_text(&log_tail(path, lines), lines)
}

/// The last `lines` lines of a log file (reads at most its last 8 KiB).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let start = len.saturating_sub(8192);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buffer = Vec::new();
    if file.read_to_end(&mut buffer).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buffer);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
