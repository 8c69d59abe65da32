//! The engine host as a child process: started with its settings, answered one JSON line per
//! request with a deadline on every wait, its stderr forwarded to the actor's log with the last
//! lines kept for error messages, and killed when dropped (the host also exits by itself when
//! its parent is gone, so a SIGKILLed actor leaves no engine behind).

use serde_json::Value;
use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How many of the host's last stderr lines an error quotes.
const TAIL_LINES: usize = 12;

/// Why a request to the host did not get an answer, or got a refusal.
#[derive(Debug, thiserror::Error)]
pub enum HostFailure {
    #[error("the engine process could not be started: {0}")]
    Spawn(std::io::Error),
    #[error("the engine process exited ({status}); its last log lines:\n{tail}")]
    Died { status: String, tail: String },
    #[error("no answer within {seconds:.0} s to `{what}`; its last log lines:\n{tail}")]
    Timeout {
        what: String,
        seconds: f64,
        tail: String,
    },
    /// The host answered, with an error of vLLM's.
    #[error("{0}")]
    Refused(String),
    #[error("an unreadable answer: {0}")]
    Garbled(String),
}

impl HostFailure {
    /// Whether the process is gone (or stuck) and must be started again.
    pub fn needs_restart(&self) -> bool {
        matches!(self, HostFailure::Died { .. } | HostFailure::Timeout { .. })
    }
}

/// A running engine host.
pub struct HostProcess {
    child: Child,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// The task copying stderr; done once the process has closed it.
    log_forwarder: Option<tokio::task::JoinHandle<()>>,
}

impl HostProcess {
    /// Starts `python script settings` with `env` added, and waits up to `timeout` for its
    /// start answer (which must say `ready`).
    pub async fn start(
        python: &Path,
        script: &Path,
        settings: &Value,
        env: &[(String, String)],
        timeout: Duration,
    ) -> Result<(Self, Value), HostFailure> {
        let mut command = Command::new(python);
        command
            .arg(script)
            .arg(settings.to_string())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // No PR_SET_PDEATHSIG: it fires when the forking *thread* exits, and a runtime's
        // threads come and go. The host watches its parent itself (`exit_with_parent`).
        let mut child = command.spawn().map_err(HostFailure::Spawn)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(HostFailure::Spawn(std::io::Error::other(
                "the child's pipes were not set up",
            )));
        };
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let log_forwarder =
            tokio::spawn(forward_log(stderr, child.id().unwrap_or(0), tail.clone()));
        let mut host = HostProcess {
            child,
            stdin,
            answers: BufReader::new(stdout).lines(),
            tail,
            log_forwarder: Some(log_forwarder),
        };
        let ready = host.answer("start", timeout).await?;
        if ready.get("ready").and_then(Value::as_bool) != Some(true) {
            return Err(HostFailure::Garbled(format!(
                "the start answer has no `ready`: {ready}"
            )));
        }
        Ok((host, ready))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `request` and waits up to `timeout` for its answer.
    pub async fn call(&mut self, request: &Value, timeout: Duration) -> Result<Value, HostFailure> {
        let what = request
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("request")
            .to_string();
        let mut line = request.to_string();
        line.push('\n');
        let started = Instant::now();
        let written = tokio::time::timeout(timeout, self.stdin.write_all(line.as_bytes())).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(self.died().await),
            Err(_) => return Err(self.timed_out(&what, timeout)),
        }
        let left = timeout.saturating_sub(started.elapsed());
        self.answer(&what, left).await
    }

    /// Reads one answer line: `ok: true` gives the answer, `ok: false` its error.
    async fn answer(&mut self, what: &str, timeout: Duration) -> Result<Value, HostFailure> {
        let line = match tokio::time::timeout(timeout, self.answers.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => return Err(self.died().await),
            Err(_) => return Err(self.timed_out(what, timeout)),
        };
        let value: Value = serde_json::from_str(&line)
            .map_err(|err| HostFailure::Garbled(format!("{err}: {line}")))?;
        if value.get("ok").and_then(Value::as_bool) == Some(true) {
            Ok(value)
        } else {
            let error = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("an error without a message");
            Err(HostFailure::Refused(error.to_string()))
        }
    }

    /// The process has closed its pipes: waits (briefly) for its exit status.
    async fn died(&mut self) -> HostFailure {
        let status = match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(status)) => describe_exit(status),
            Ok(Err(err)) => format!("its status is unknown: {err}"),
            Err(_) => {
                let _ = self.child.start_kill();
                "its pipes closed but it did not exit; killed".to_string()
            }
        };
        // Its last words are what explains the exit: let the forwarder read them.
        if let Some(forwarder) = self.log_forwarder.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), forwarder).await;
        }
        HostFailure::Died {
            status,
            tail: self.tail(),
        }
    }

    fn timed_out(&mut self, what: &str, timeout: Duration) -> HostFailure {
        let _ = self.child.start_kill();
        HostFailure::Timeout {
            what: what.to_string(),
            seconds: timeout.as_secs_f64(),
            tail: self.tail(),
        }
    }

    fn tail(&self) -> String {
        let lines = match self.tail.lock() {
            Ok(lines) => lines,
            Err(poisoned) => poisoned.into_inner(),
        };
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Whether the process has exited, without waiting.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Copies the host's stderr into this process's (the actor's log), keeping the last lines.
async fn forward_log(
    stderr: tokio::process::ChildStderr,
    pid: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("[vllm {pid}] {line}");
        let mut kept = match tail.lock() {
            Ok(kept) => kept,
            Err(poisoned) => poisoned.into_inner(),
        };
        if kept.len() == TAIL_LINES {
            kept.pop_front();
        }
        kept.push_back(line);
    }
}
