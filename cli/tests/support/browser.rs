//! A real browser for tests: Debian's headless `chromium` driven over WebDriver by
//! `chromedriver` (started on a free port, in its own process group, with a fresh profile),
//! through the fantoccini client. `Browser::find_tools` says whether both are installed; the
//! guard kills chromedriver and the browser it started when dropped: chromedriver's process
//! group, then every process whose command line names this run's profile directory (chromium
//! may leave its group), then the profile.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The executables a browser test needs.
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// Looks for `chromium` (or `chromium-browser`) and `chromedriver` on PATH; the error names
/// what is missing and how to install it.
pub fn find_tools() -> Result<Tools, String> {
    let chromium = ["chromium", "chromium-browser"]
        .iter()
        .find_map(|name| on_path(name));
    let chromedriver = on_path("chromedriver");
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Ok(Tools {
            chromium,
            chromedriver,
        }),
        (chromium, chromedriver) => {
            let mut missing = Vec::new();
            if chromium.is_none() {
                missing.push("chromium");
            }
            if chromedriver.is_none() {
                missing.push("chromedriver");
            }
            Err(format!(
                "{} not found on PATH (install with `apt-get install chromium chromium-driver`; scripts/test.sh does)",
                missing.join(" and ")
            ))
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// chromedriver and the browser session it drives.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop(&mut self.driver, &self.profile);
    }
}

/// Kills chromedriver's process group (it and every chromium process it started), then any
/// process left whose command line holds `--user-data-dir=<profile>`, and removes the profile.
fn stop(driver: &mut Child, profile: &Path) {
    // SAFETY: kill(2) on the group of a child this guard started (its pid is the pgid).
    unsafe {
        libc::kill(-(driver.id() as i32), libc::SIGKILL);
    }
    let _ = driver.kill();
    let _ = driver.wait();
    let flag = format!("--user-data-dir={}", profile.display());
    for pid in processes_with_arg(&flag) {
        // SAFETY: kill(2) of a process running with this run's own profile directory.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let _ = std::fs::remove_dir_all(profile);
}

/// The pids of the processes (other than this one) with `arg` among their arguments.
fn processes_with_arg(arg: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id() as i32;
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|byte| *byte == 0)
                    .any(|word| word == arg.as_bytes())
            })
        })
        .collect()
}

impl Browser {
    /// Starts chromedriver (its output in `log`) and opens a headless chromium session with a
    /// window of `width` x `height`; fails after 30 s.
    pub async fn start(tools: &Tools, log: &Path, width: u32, height: u32) -> anyhow::Result<Self> {
        let port = free_port()?;
        let file = std::fs::File::create(log)?;
        let mut command = Command::new(&tools.chromedriver);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        // SAFETY: setpgid and prctl are async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let driver = command.spawn()?;
        let profile =
            std::env::temp_dir().join(format!("troupe-chromium-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)?;
        // Owns the child from here, so a failure below still kills it.
        let mut guard = PartialBrowser {
            driver: Some(driver),
            profile: profile.clone(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "chromedriver did not listen within 30 s; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut capabilities = fantoccini::wd::Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".to_string(),
            serde_json::json!({
                "binary": tools.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            fantoccini::ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&url),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!("chromium did not start within 30 s; see {}", log.display())
        })??;
        let driver = guard
            .driver
            .take()
            .ok_or_else(|| anyhow::anyhow!("no driver"))?;
        Ok(Browser {
            client,
            driver,
            profile,
        })
    }

    /// Ends the session (the browser quits), then the guard stops chromedriver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
    }
}

/// chromedriver before its session exists: killed (with its group) if starting fails.
struct PartialBrowser {
    driver: Option<Child>,
    profile: PathBuf,
}

impl Drop for PartialBrowser {
    fn drop(&mut self) {
        if let Some(mut driver) = self.driver.take() {
            stop(&mut driver, &self.profile);
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
