//! The `local` provider: node agents as `troupe node` processes on this machine, each in its
//! own process group, stopped with SIGTERM (then SIGKILL) and never left behind: dropping the
//! provider stops every agent it started, and an agent gets SIGTERM when the head's process
//! dies, however it dies.

use super::provider::{LaunchSpec, NodeProvider, ProviderError};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Starts `troupe node` processes.
pub struct LocalProvider {
    /// The `troupe` executable.
    binary: PathBuf,
    log_dir: PathBuf,
    children: Mutex<BTreeMap<String, std::process::Child>>,
}

impl LocalProvider {
    pub fn new(binary: PathBuf, log_dir: PathBuf) -> Self {
        Self {
            binary,
            log_dir,
            children: Mutex::new(BTreeMap::new()),
        }
    }

    fn children(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, std::process::Child>> {
        match self.children.lock() {
            Ok(children) => children,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn start(&self, spec: &LaunchSpec) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|e| format!("creating {}: {e}", self.log_dir.display()))?;
        let log_path = self.log_dir.join(format!("{}.log", spec.launch_id));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let err_log = log.try_clone().map_err(|e| e.to_string())?;
        let work_dir = self.log_dir.join(&spec.launch_id);
        let mut command = std::process::Command::new(&self.binary);
        // SAFETY: prctl is async-signal-safe. The agent (and, through its own stop, its
        // workers) goes when the head's process does, even on SIGKILL: no orphaned agents.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command
            .args(spec.node_args())
            .arg("--work-dir")
            .arg(&work_dir)
            .arg("--token-file")
            .arg(&spec.token_file)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        tracing::info!(launch = spec.launch_id, pid = child.id(), log = %log_path.display(), "started a local node agent");
        self.children().insert(spec.launch_id.clone(), child);
        Ok(())
    }

    /// SIGTERM to the agent's process group, SIGKILL after `patience`.
    fn stop(mut child: std::process::Child, patience: Duration) {
        let group = child.id() as i32;
        // SAFETY: kill(2) on a process group this provider created.
        unsafe {
            libc::kill(-group, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + patience;
        while std::time::Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; the group may already be gone.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = child.wait();
    }
}

impl NodeProvider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn create(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async move {
            self.start(&spec).map_err(|why| ProviderError::Failed {
                provider: "local",
                action: "start",
                launch_id: spec.launch_id.clone(),
                why,
            })
        })
    }

    fn delete(&self, launch_id: String) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async move {
            let child = self.children().remove(&launch_id);
            let Some(child) = child else {
                // Never started here, or already exited and dropped: nothing runs under that
                // id (agents of an earlier head die with it), so nothing is left to stop.
                return Ok(());
            };
            {
                tokio::task::spawn_blocking(move || Self::stop(child, Duration::from_secs(10)))
                    .await
                    .map_err(|e| ProviderError::Failed {
                        provider: "local",
                        action: "stop",
                        launch_id: launch_id.clone(),
                        why: e.to_string(),
                    })?;
            }
            Ok(())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, ProviderError>> {
        Box::pin(async move {
            let mut children = self.children();
            // Agents that exited on their own are gone.
            children.retain(|_, child| matches!(child.try_wait(), Ok(None)));
            Ok(children.keys().cloned().collect())
        })
    }
}

impl Drop for LocalProvider {
    fn drop(&mut self) {
        let children = std::mem::take(&mut *self.children());
        for (_, child) in children {
            Self::stop(child, Duration::from_secs(5));
        }
    }
}
