//! The supervised warm start before RL: the trainers learn the task from worked answers until
//! held-out accuracy passes a threshold (checked every few steps), not for a fixed count: the
//! supervised curve is a phase transition, and a warm start left to run would leave RL nothing
//! to learn.

use super::metrics::MetricsLog;
use super::progress::Progress;
use super::setup::{PolicyActors, Result};
use crate::tasks::arithmetic::{AdditionTask, Problem};
use crate::train::optim::{AdamWConfig, Decay, LrSchedule};
use serde::{Deserialize, Serialize};
use std::time::Instant;

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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WarmStartOutcome {
    pub steps: usize,
    pub heldout_accuracy: f64,
    pub seconds: f64,
    pub reached_target: bool,
}

/// Prompts and the targets that follow them, for supervised steps.
pub type PromptsAndTargets = (Vec<Vec<u32>>, Vec<Vec<u32>>);

/// `problems` cut into `ranks` near-equal parts of (prompts, targets), in rank order (a part is
/// empty when there are fewer problems than ranks).
pub fn supervised_parts(problems: &[Problem], ranks: usize) -> Vec<PromptsAndTargets> {
    let per_rank = problems.len().div_ceil(ranks.max(1)).max(1);
    let mut parts: Vec<PromptsAndTargets> = problems
        .chunks(per_rank)
        .map(|chunk| {
            (
                chunk.iter().map(Problem::prompt_tokens).collect(),
                chunk.iter().map(Problem::target_tokens).collect(),
            )
        })
        .collect();
    parts.resize(ranks, (Vec::new(), Vec::new()));
    parts
}

/// Runs the warm start on `actors`' trainers and leaves the rollouts holding its weights.
/// Each step's loss (and accuracy when evaluated) goes to `log`.
pub async fn warm_start(
    actors: &mut PolicyActors,
    task: &mut AdditionTask,
    config: &WarmStartConfig,
    log: &mut MetricsLog,
) -> Result<WarmStartOutcome> {
    if config.max_steps == 0 || config.eval_every == 0 || config.batch == 0 {
        return Err(super::RecipeError::Config(format!(
            "warm start: max_steps {}, eval_every {} and batch {} must all be at least 1",
            config.max_steps, config.eval_every, config.batch
        )));
    }
    let started = Instant::now();
    let schedule = LrSchedule {
        peak: config.lr,
        warmup_steps: config.warmup_steps,
        total_steps: config.max_steps as u64,
        min_ratio: 1.0,
        decay: Decay::Constant,
    };
    actors
        .trainers
        .broadcast(|trainer| async move {
            trainer
                .start_phase(AdamWConfig::default(), schedule, 1.0)
                .await
        })
        .await?;
    let held_out: Vec<Problem> = task.held_out().to_vec();
    let ranks = actors.trainers.world_size();
    let progress = Progress::new("sft", config.max_steps as u64, config.eval_every as u64);
    let mut accuracy = 0.0;
    let mut steps = 0;
    let mut reached = false;
    for step in 1..=config.max_steps {
        let parts = supervised_parts(&task.sample(config.batch), ranks);
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
            actors.sync_weights().await?;
            accuracy = actors.heldout_accuracy(&held_out).await?;
            row["heldout_accuracy"] = accuracy.into();
            reached = accuracy >= config.target_accuracy;
        }
        log.append(row).map_err(|err| {
            super::RecipeError::io(format!("writing {}", log.path().display()), err)
        })?;
        progress.update(
            step as u64,
            &format!("loss {loss:.3} | held-out {:.1}%", accuracy * 100.0),
        );
        if reached {
            break;
        }
    }
    progress.finish();
    Ok(WarmStartOutcome {
        steps,
        heldout_accuracy: accuracy,
        seconds: started.elapsed().as_secs_f64(),
        reached_target: reached,
    })
}
