//! Following a recipe's steps as they finish: each step's figures are read off the pipeline's
//! report, held-out accuracy is measured every few steps, and the figures go to the progress
//! bar and to `metrics.jsonl`; the whole run's figures stay for the plot and the summary.

use super::metrics::MetricsLog;
use super::progress::Progress;
use super::setup::{as_troupe, evaluate};
use crate::roles::rollout::RolloutHandle;
use crate::tasks::arithmetic::Problem;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use troupe::pipeline::StepReport;
use troupe::{ActorGroup, BoxFuture};

/// A recipe's per-step figures.
pub trait StepRow: Serialize + Clone + Send + 'static {
    /// 1-based step.
    fn step(&self) -> usize;
    fn set_heldout_accuracy(&mut self, accuracy: f64);
    fn set_elapsed(&mut self, seconds: f64);
    /// The progress bar's message, given the latest held-out accuracy.
    fn message(&self, last_accuracy: Option<f64>) -> String;
}

/// What a run has recorded so far.
pub struct RunRecord<F> {
    pub log: MetricsLog,
    pub progress: Progress,
    pub figures: Vec<F>,
    /// (step, held-out accuracy) for every evaluation, step 0 being the start.
    pub accuracy: Vec<(usize, f64)>,
}

impl<F> RunRecord<F> {
    pub fn new(log: MetricsLog, progress: Progress, start_accuracy: f64) -> Self {
        RunRecord {
            log,
            progress,
            figures: Vec::new(),
            accuracy: vec![(0, start_accuracy)],
        }
    }

    pub fn last_accuracy(&self) -> Option<f64> {
        self.accuracy.last().map(|(_, accuracy)| *accuracy)
    }
}

fn poisoned() -> troupe::Error {
    troupe::Error::Invalid {
        what: "recipe".to_string(),
        why: "the run's record was poisoned by a panic".to_string(),
    }
}

/// The pipeline observer: `figures(report)` reads a step's figures; every `eval_every` steps
/// and at the last one, the rollouts answer `held_out` greedily; then the record is updated.
pub fn observer<F: StepRow>(
    record: Arc<Mutex<RunRecord<F>>>,
    rollouts: ActorGroup<RolloutHandle>,
    held_out: Vec<Problem>,
    (eval_every, steps): (usize, usize),
    started: Instant,
    mut figures: impl FnMut(&StepReport) -> Result<F, super::RecipeError>,
) -> impl FnMut(&StepReport) -> BoxFuture<troupe::Result<()>> {
    move |report: &StepReport| {
        let made = figures(report);
        let step = report.step + 1;
        let evaluate_now = step.is_multiple_of(eval_every.max(1)) || step == steps;
        let (record, rollouts, held_out) = (record.clone(), rollouts.clone(), held_out.clone());
        Box::pin(async move {
            let mut row = made.map_err(as_troupe)?;
            let accuracy = if evaluate_now {
                let accuracy = evaluate(&rollouts, &held_out).await.map_err(as_troupe)?;
                row.set_heldout_accuracy(accuracy);
                Some(accuracy)
            } else {
                None
            };
            row.set_elapsed(started.elapsed().as_secs_f64());
            let mut record = record.lock().map_err(|_| poisoned())?;
            if let Some(accuracy) = accuracy {
                record.accuracy.push((step, accuracy));
            }
            let message = row.message(record.last_accuracy());
            record.progress.update(step as u64, &message);
            let json = serde_json::to_value(&row).map_err(|err| troupe::Error::Invalid {
                what: "metrics".to_string(),
                why: err.to_string(),
            })?;
            record
                .log
                .append(json)
                .map_err(|err| troupe::Error::Invalid {
                    what: "metrics.jsonl".to_string(),
                    why: err.to_string(),
                })?;
            record.figures.push(row);
            Ok(())
        })
    }
}

/// The mean of `values` (0 when empty).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Means of the first and of the last `n` values.
pub fn first_and_last(values: &[f64], n: usize) -> (f64, f64) {
    (
        mean(&values[..values.len().min(n)]),
        mean(&values[values.len().saturating_sub(n)..]),
    )
}
