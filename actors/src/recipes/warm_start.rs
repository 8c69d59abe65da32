//! The supervised warm start before RL: the trainers learn the task from its worked answers until
//! held-out accuracy passes a threshold (checked every few steps), not for a fixed count: the
//! supervised curve is a phase transition, and a warm start left to run would leave RL nothing
//! to learn.

use super::error::{RecipeError, Result};
use super::metrics::MetricsLog;
use super::policy::PolicyActors;
use super::progress::Progress;
use crate::tasks::{Task, TaskSpec};
use crate::train::optim::{Decay, LrSchedule};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use troupe::pipeline::Pipeline;

/// How the warm start runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WarmStartConfig {
    /// Problems per step (split over the trainers).
    pub batch: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Stop once greedy held-out accuracy reaches this share.
    pub target_accuracy: f64,
    /// Evaluate every this many steps.
    pub eval_every: usize,
    /// Stop here even if the target was not reached.
    pub max_steps: usize,
}

impl Default for WarmStartConfig {
    fn default() -> Self {
        WarmStartConfig {
            batch: 128,
            lr: 1e-3,
            warmup_steps: 50,
            target_accuracy: 0.15,
            eval_every: 10,
            max_steps: 600,
        }
    }
}

/// Where the warm start ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmStartOutcome {
    pub steps: usize,
    /// The weight version the rollouts hold at the end.
    pub version: u64,
    pub heldout_accuracy: f64,
    /// How long it took (when loaded: how long it took when it ran).
    pub seconds: f64,
    pub reached_target: bool,
    /// The saved warm start this run started from (`--warm-start-from`), if any.
    #[serde(default)]
    pub loaded_from: Option<std::path::PathBuf>,
}

/// Prompts and the targets that follow them, for supervised steps.
pub type PromptsAndTargets = (Vec<Vec<u32>>, Vec<Vec<u32>>);

/// Training problems `first..first + count` of `task` as (prompt, demonstration) token ids, cut
/// into `ranks` near-equal parts in rank order (a part is empty when there are fewer problems
/// than ranks).
pub fn supervised_parts(
    task: &dyn Task,
    first: u64,
    count: usize,
    ranks: usize,
) -> crate::Result<Vec<PromptsAndTargets>> {
    troupe::data::split_ranges(count, ranks)
        .into_iter()
        .map(|range| {
            let mut part: PromptsAndTargets = (Vec::new(), Vec::new());
            for offset in range {
                let problem = task.train_problem(first + offset as u64);
                part.0.push(task.prompt_ids(&problem)?);
                part.1.push(task.demonstration_ids(&problem)?);
            }
            Ok(part)
        })
        .collect()
}

/// Where the warm start's problems start in a task's training sequence (far from the RL
/// steps', which start at 0).
const WARM_START_PROBLEMS: u64 = 1 << 31;

/// Runs the warm start on `actors`' trainers (weights reach the rollouts over `pipeline`'s
/// weight-sync edge before each evaluation) and leaves the rollouts holding its weights. Each
/// step's loss (and held-out success when measured) goes to `log`.
pub async fn warm_start(
    actors: &PolicyActors,
    pipeline: &Pipeline,
    spec: &TaskSpec,
    config: &WarmStartConfig,
    log: &mut MetricsLog,
) -> Result<WarmStartOutcome> {
    let task = spec.build()?;
    if config.max_steps == 0 || config.eval_every == 0 || config.batch == 0 {
        return Err(RecipeError::Config(format!(
            "warm start: max_steps {}, eval_every {} and batch {} must all be at least 1",
            config.max_steps, config.eval_every, config.batch
        )));
    }
    let started = Instant::now();
    actors
        .start_phase(LrSchedule {
            peak: config.lr,
            warmup_steps: config.warmup_steps,
            total_steps: config.max_steps as u64,
            min_ratio: 1.0,
            decay: Decay::Constant,
        })
        .await?;
    let ranks = actors.trainers.world_size();
    let progress = Progress::new("sft", config.max_steps as u64, config.eval_every as u64);
    let mut accuracy = 0.0;
    let mut steps = 0;
    let mut reached = false;
    let mut version = 0;
    for step in 1..=config.max_steps {
        let first = WARM_START_PROBLEMS + ((step - 1) * config.batch) as u64;
        let parts = supervised_parts(task.as_ref(), first, config.batch, ranks)?;
        let stats = actors
            .trainers
            .per_rank(parts, |trainer, (prompts, targets)| async move {
                trainer.sft_step(prompts, targets).await
            })
            .await?;
        let loss = stats.first().map(|s| s.loss).unwrap_or(f64::NAN);
        steps = step;
        let mut row = serde_json::json!({
            "step": step,
            "loss": loss,
            "lr": stats.first().map(|s| s.lr).unwrap_or(0.0),
            "elapsed_s": started.elapsed().as_secs_f64(),
        });
        if step % config.eval_every == 0 || step == config.max_steps {
            version = pipeline.sync_weights().await?.version;
            accuracy = actors.heldout_accuracy(spec).await?;
            row["heldout_accuracy"] = accuracy.into();
            reached = accuracy >= config.target_accuracy;
        }
        log.append(row)
            .map_err(|err| RecipeError::io(format!("writing {}", log.path().display()), err))?;
        progress.update(
            step as u64,
            &format!("loss {loss:.3} | held-out {:.1}%", accuracy * 100.0),
        );
        if reached {
            break;
        }
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "warm start: {steps} steps, {seconds:.1} s, held-out success {:.1}%",
        accuracy * 100.0
    );
    Ok(WarmStartOutcome {
        steps,
        version,
        heldout_accuracy: accuracy,
        seconds,
        reached_target: reached,
        loaded_from: None,
    })
}
