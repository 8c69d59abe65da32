//! A warm start kept on disk, so that several runs can start from the very same one: the
//! policy's checkpoint (Hugging Face layout, with the task's tokenizer), `warm_start.json` (the
//! task it was made for, the policy's depth, where and after how long it ended) and
//! `heldout.jsonl` (the held-out problems, prompt and reference, for tools outside troupe such
//! as `benches/compare_trl.sh`). A run given `--warm-start-from` reads it back, refuses one made
//! for another task or another depth, and measures the loaded policy before it trains.

use super::error::{RecipeError, Result};
use super::policy::PolicyActors;
use super::warm_start::WarmStartOutcome;
use crate::tasks::{Task, TaskSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The record beside a saved warm start's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedWarmStart {
    /// The task (name, parameters, seed, held-out size) the warm start was made for.
    pub task: TaskSpec,
    /// The policy's decoder layers.
    pub layers: usize,
    /// Where the warm start ended, and how long it took when it ran.
    pub outcome: WarmStartOutcome,
}

const RECORD: &str = "warm_start.json";
const HELD_OUT: &str = "heldout.jsonl";

/// Saves the policy the warm start left (rank-0 trainer's checkpoint), its tokenizer, the record
/// and the held-out problems into `dir`; returns `dir` made absolute.
pub async fn save(
    actors: &PolicyActors,
    task: &dyn Task,
    record: &SavedWarmStart,
    dir: &Path,
    max_positions: usize,
) -> Result<PathBuf> {
    let dir = actors.save_checkpoint(dir).await?;
    task.write_tokenizer(&dir, max_positions)?;
    let text = serde_json::to_string_pretty(record)
        .map_err(|err| RecipeError::Config(format!("encoding {RECORD}: {err}")))?;
    write(&dir.join(RECORD), text)?;
    let mut lines = String::new();
    for problem in task.held_out() {
        let line = serde_json::json!({"prompt": problem.prompt, "reference": problem.reference});
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    write(&dir.join(HELD_OUT), lines)?;
    Ok(dir)
}

fn write(path: &Path, text: String) -> Result<()> {
    std::fs::write(path, text)
        .map_err(|err| RecipeError::io(format!("writing {}", path.display()), err))
}

/// Reads the record of the warm start saved in `dir` and checks that it was made for `task`
/// with a `layers`-layer policy; each mismatch is named.
pub fn load(dir: &Path, task: &TaskSpec, layers: usize) -> Result<SavedWarmStart> {
    let path = dir.join(RECORD);
    let text = std::fs::read_to_string(&path).map_err(|err| {
        RecipeError::io(
            format!(
                "reading {} (is {} a warm start a GRPO run saved?)",
                path.display(),
                dir.display()
            ),
            err,
        )
    })?;
    let saved: SavedWarmStart = serde_json::from_str(&text)
        .map_err(|err| RecipeError::Config(format!("{}: {err}", path.display())))?;
    let differences = differences(&saved, task, layers);
    if !differences.is_empty() {
        return Err(RecipeError::Config(format!(
            "the warm start in {} was made for another run: {}",
            dir.display(),
            differences.join("; ")
        )));
    }
    Ok(saved)
}

fn differences(saved: &SavedWarmStart, task: &TaskSpec, layers: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut compare = |what: &str, theirs: String, ours: String| {
        if theirs != ours {
            out.push(format!("{what} {theirs} there, {ours} here"));
        }
    };
    compare("task", saved.task.name.clone(), task.name.clone());
    compare(
        "task parameters",
        saved.task.params.to_string(),
        task.params.to_string(),
    );
    compare("seed", saved.task.seed.to_string(), task.seed.to_string());
    compare(
        "held-out problems",
        saved.task.held_out.to_string(),
        task.held_out.to_string(),
    );
    compare("layers", saved.layers.to_string(), layers.to_string());
    out
}

/// The outcome of a run that starts from `saved` (whose checkpoint `actors` were built from):
/// the held-out success is measured again on the loaded policy, the steps and seconds are the
/// saved warm start's, the weight version starts at 0.
pub async fn resume(
    actors: &PolicyActors,
    task: &TaskSpec,
    saved: &SavedWarmStart,
    dir: &Path,
) -> Result<WarmStartOutcome> {
    let measured = actors.heldout_accuracy(task).await?;
    if (measured - saved.outcome.heldout_accuracy).abs() > 0.01 {
        tracing::warn!(
            saved = saved.outcome.heldout_accuracy,
            measured,
            "the loaded warm start scores differently from when it was saved"
        );
    }
    eprintln!(
        "warm start loaded from {}: {} steps ({:.1} s when it ran), held-out success {:.1}%",
        dir.display(),
        saved.outcome.steps,
        saved.outcome.seconds,
        measured * 100.0
    );
    Ok(WarmStartOutcome {
        version: 0,
        heldout_accuracy: measured,
        loaded_from: Some(dir.to_path_buf()),
        ..saved.outcome.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved() -> SavedWarmStart {
        SavedWarmStart {
            task: TaskSpec::new("arithmetic", 3, 500),
            layers: 2,
            outcome: WarmStartOutcome {
                steps: 190,
                version: 19,
                heldout_accuracy: 0.186,
                seconds: 64.0,
                reached_target: true,
                loaded_from: None,
            },
        }
    }

    #[test]
    fn a_saved_record_reads_back_and_a_mismatch_is_named() {
        let dir = std::env::temp_dir().join(format!("troupe-saved-ws-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let record = saved();
        write(&dir.join(RECORD), serde_json::to_string(&record).unwrap()).unwrap();
        assert_eq!(load(&dir, &record.task, 2).unwrap(), record);
        let error = load(&dir, &TaskSpec::new("arithmetic", 4, 500), 4)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("seed 3 there, 4 here") && error.contains("layers 2 there, 4 here"),
            "{error}"
        );
        let missing = load(&dir.join("nowhere"), &record.task, 2).unwrap_err();
        assert!(
            format!("{missing}").contains("warm_start.json"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
