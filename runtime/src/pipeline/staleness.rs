//! Asynchronous RL with bounded staleness: the experience side of the graph (every stage not on
//! the trainer group) runs ahead of the learning side (the trainer group's stages) by at most
//! `max_staleness` steps; after each learning step the weight-sync edge runs and the new version
//! is used by experience made from then on. Every sample carries the version that made it.

use super::graph::{Pipeline, PipelineError};
use super::run::{StepReport, StepState};
use crate::data::Batch;
use tokio::sync::{mpsc, watch};

/// An error from a step observer (progress, metrics, evaluations), kept with its cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Follows a run step by step: called after each step's learning and weight sync, before the
/// next learning step (progress, metrics, evaluations); an error stops the run. It may hold
/// mutable state: the run calls it from one task, one step at a time.
pub trait StepObserver: Send {
    fn observe<'a>(
        &'a mut self,
        report: &'a StepReport,
    ) -> futures::future::BoxFuture<'a, Result<(), BoxError>>;
}

/// Observes nothing.
pub struct NoObserver;

impl StepObserver for NoObserver {
    fn observe<'a>(
        &'a mut self,
        _report: &'a StepReport,
    ) -> futures::future::BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async { Ok(()) })
    }
}

impl Pipeline {
    /// Runs `steps` steps from weight version 0. `input(step)` makes each step's source batch
    /// (an empty `Batch::new(0)` when a stage makes the rows). With `max_staleness = 0` this is
    /// the synchronous loop; with `k`, experience for step `i + k` may be produced while step
    /// `i` trains.
    pub async fn run_with_staleness<I>(
        &self,
        steps: usize,
        max_staleness: usize,
        input: I,
    ) -> Result<Vec<StepReport>, PipelineError>
    where
        I: Fn(usize) -> Batch,
    {
        self.run_observed(steps, max_staleness, 0, input, &mut NoObserver)
            .await
    }

    /// As `run_with_staleness`, starting from weights of version `start_version` (the
    /// generators' version when the run begins, after a warm start say), running the
    /// weight-sync edge after each learning step, and calling `observe(report)` after each
    /// step's sync and before the next learning step (progress, metrics, evaluations); an error
    /// from it stops the run. Rollouts for later steps may keep running meanwhile, within the
    /// staleness bound.
    pub async fn run_observed<I>(
        &self,
        steps: usize,
        max_staleness: usize,
        start_version: u64,
        input: I,
        observer: &mut dyn StepObserver,
    ) -> Result<Vec<StepReport>, PipelineError>
    where
        I: Fn(usize) -> Batch,
    {
        self.run_observed_from(0, steps, max_staleness, start_version, input, observer)
            .await
    }

    /// As `run_observed`, for steps `first_step..steps` only: a run that goes on after a
    /// failure (from the step that failed, or from the step of the checkpoint it went back to)
    /// with weights of `start_version`.
    pub async fn run_observed_from<I>(
        &self,
        first_step: usize,
        steps: usize,
        max_staleness: usize,
        start_version: u64,
        input: I,
        observer: &mut dyn StepObserver,
    ) -> Result<Vec<StepReport>, PipelineError>
    where
        I: Fn(usize) -> Batch,
    {
        let trainer = self
            .weight_sync
            .as_ref()
            .map(|edge| edge.learning_group().to_string())
            .ok_or_else(|| PipelineError::Run {
                stage: "(staleness)".to_string(),
                why: "bounded staleness needs a weight-sync edge (learning group -> generating group)"
                    .to_string(),
            })?;
        self.connect().await?;
        let learning: Vec<usize> = (0..self.stages.len())
            .filter(|i| self.stages[*i].group == trainer)
            .collect();
        let experience: Vec<usize> = (0..self.stages.len())
            .filter(|i| self.stages[*i].group != trainer)
            .collect();
        for index in &experience {
            let node = self.nodes[*index];
            let fed_by_learning = self
                .graph
                .neighbors_directed(node, petgraph::Direction::Incoming)
                .any(|from| from != self.source && learning.contains(&self.graph[from]));
            if fed_by_learning {
                return Err(PipelineError::Run {
                    stage: self.stages[*index].name.clone(),
                    why: format!("reads a column the learning group `{trainer}` produces, so it cannot run ahead of training"),
                });
            }
        }
        // Experience of step i must stay on its members until step i trains.
        let keep_steps = self.keep_steps.max(max_staleness as u64 + 2);
        // trained: how many learning steps have finished; version: the weights experience uses.
        let (trained_tx, mut trained_rx) = watch::channel((first_step, start_version));
        let (states_tx, mut states_rx) = mpsc::channel::<StepState>(max_staleness + 1);
        let producing = async move {
            for step in first_step..steps {
                // Wait until this step is within `max_staleness` of the learning side.
                let version = loop {
                    let (trained, version) = *trained_rx.borrow_and_update();
                    if step <= trained + max_staleness {
                        break version;
                    }
                    if trained_rx.changed().await.is_err() {
                        return Ok(());
                    }
                };
                let batch = input(step);
                self.check_source(&batch)?;
                let mut state = StepState::new(step, version, batch, keep_steps);
                self.run_stages(&experience, &mut state).await?;
                if states_tx.send(state).await.is_err() {
                    return Ok(());
                }
            }
            Ok::<(), PipelineError>(())
        };
        let learning_side = async move {
            let mut reports = Vec::with_capacity(steps.saturating_sub(first_step));
            for _ in first_step..steps {
                let Some(mut state) = states_rx.recv().await else {
                    break;
                };
                self.run_stages(&learning, &mut state).await?;
                let synced = self.sync_weights().await?;
                let _ = trained_tx.send((state.step + 1, synced.version));
                let report = state.report(Some(synced));
                self.publish(&report);
                observer
                    .observe(&report)
                    .await
                    .map_err(|source| PipelineError::Observer { source })?;
                reports.push(report);
            }
            Ok::<Vec<StepReport>, PipelineError>(reports)
        };
        let (produced, learned) = tokio::join!(producing, learning_side);
        produced?;
        learned
    }
}
