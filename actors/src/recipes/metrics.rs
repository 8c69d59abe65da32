//! A recipe's record of its run: one JSON object per step in `metrics.jsonl` (written as the run
//! goes, so a crash keeps what was done), and the summary table printed at the end.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends one JSON line per step to a file.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
    rows: Vec<Value>,
}

impl MetricsLog {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::File::create(path)?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
            rows: Vec::new(),
        })
    }

    /// Writes `row` as one line and flushes it.
    pub fn append(&mut self, row: Value) -> std::io::Result<()> {
        self.write_line(&row)?;
        self.rows.push(row);
        Ok(())
    }

    /// Writes `event` as one line (a recovery, say) without counting it as a step.
    pub fn note(&mut self, event: Value) -> std::io::Result<()> {
        self.write_line(&event)
    }

    fn write_line(&mut self, value: &Value) -> std::io::Result<()> {
        let line = serde_json::to_string(value).map_err(std::io::Error::other)?;
        writeln!(self.file, "{line}")?;
        self.file.flush()
    }

    /// Forgets the rows of steps after `step` (they will be run again); the file keeps them,
    /// followed by the rows of the steps run again.
    pub fn forget_after(&mut self, step: usize) {
        self.rows
            .retain(|row| row["step"].as_u64().is_none_or(|s| s as usize <= step));
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rows(&self) -> &[Value] {
        &self.rows
    }

    /// `(step, value)` for every row where `key` is a number.
    pub fn series(&self, key: &str) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .filter_map(|row| Some((row["step"].as_f64()?, row[key].as_f64()?)))
            .collect()
    }
}

/// A two-column table of (what, value), aligned, with a title.
pub fn summary_table(title: &str, rows: &[(&str, String)]) -> String {
    let key_width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let value_width = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let rule = format!(
        "+-{}-+-{}-+",
        "-".repeat(key_width),
        "-".repeat(value_width)
    );
    let mut out = format!("{title}\n{rule}\n");
    for (key, value) in rows {
        out.push_str(&format!("| {key:<key_width$} | {value:>value_width$} |\n"));
    }
    out.push_str(&rule);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_written_as_they_come_and_read_back_as_series() {
        let dir = std::env::temp_dir().join(format!("troupe-metrics-{}", std::process::id()));
        let path = dir.join("metrics.jsonl");
        let mut log = MetricsLog::create(&path).unwrap();
        log.append(serde_json::json!({"step": 1, "reward": 0.5}))
            .unwrap();
        log.append(serde_json::json!({"step": 2, "reward": 0.75, "accuracy": 0.4}))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let second: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(second["accuracy"], 0.4);
        assert_eq!(log.series("reward"), vec![(1.0, 0.5), (2.0, 0.75)]);
        assert_eq!(log.series("accuracy"), vec![(2.0, 0.4)]);
        std::fs::remove_dir_all(dir).unwrap();
        let table = summary_table(
            "Run",
            &[("steps", "2".into()), ("accuracy", "40.0%".into())],
        );
        assert!(table.contains("| accuracy | 40.0% |"));
    }
}
