//! `--json PATH` for benches and examples: every program that reports figures also writes them
//! as JSON, through these two helpers.

use std::path::{Path, PathBuf};

/// The path after `--json` on the command line, if any.
pub fn json_path_arg() -> Option<PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == "--json")
        .and_then(|at| args.get(at + 1))
        .map(PathBuf::from)
}

/// Writes `report` (pretty-printed) to `path`, creating its directory; returns the path written.
pub fn write_json(path: &Path, report: &serde_json::Value) -> std::io::Result<PathBuf> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)?;
    }
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, text)?;
    Ok(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
}
