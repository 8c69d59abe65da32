//! Asynchronous RL with bounded staleness: the experience side of the graph (every stage not on
//! the trainer group) runs ahead of the learning side (the trainer group's stages) by at most
//! `max_staleness` steps; after each learning step the weight-sync edge runs and the new version
//! is used by experience made from then on. Every sample carries the version that made it.

use super::graph::{Pipeline, PipelineError};
use super::run::StepReport;
use crate::actor::BoxFuture;
use crate::data::Batch;
use tokio::sync::{mpsc, watch};

impl Pipeline {
    /// Runs `steps` steps. `input(step)` makes each step's source batch; `sync()` carries out the
    /// weight-sync edge after each learning step and returns the new weight version. With
    /// `max_staleness = 0` this is the synchronous loop; with `k`, experience for step `i + k`
    /// may be produced while step `i` trains.
    pub async fn run_with_staleness<I, S>(
        &self,
        steps: usize,
        max_staleness: usize,
        input: I,
        sync: S,
    ) -> Result<Vec<StepReport>, PipelineError>
    where
        I: Fn(usize) -> Batch,
        S: Fn() -> BoxFuture<crate::Result<u64>>,
    {
        self.run_observed(steps, max_staleness, 0, input, sync, |_| {
            Box::pin(async { Ok(()) })
        })
        .await
    }

    /// As `run_with_staleness`, starting from weights of version `start_version` (the
    /// rollouts' version when the run begins, after a warm start say), and calling
    /// `observe(report)` after each step's weight sync and before the next learning step
    /// (progress, metrics, evaluations); an error from it stops the run. Rollouts for later
    /// steps may keep running meanwhile, within the staleness bound.
    pub async fn run_observed<I, S, O>(
        &self,
        steps: usize,
        max_staleness: usize,
        start_version: u64,
        input: I,
        sync: S,
        mut observe: O,
    ) -> Result<Vec<StepReport>, PipelineError>
    where
        I: Fn(usize) -> Batch,
        S: Fn() -> BoxFuture<crate::Result<u64>>,
        O: FnMut(&StepReport) -> BoxFuture<crate::Result<()>>,
    {
        let (trainer, _) = self.weight_sync.clone().ok_or_else(|| PipelineError::Run {
            stage: "(staleness)".to_string(),
            why: "bounded staleness needs a weight-sync edge (trainer group -> rollout group)"
                .to_string(),
        })?;
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
                    why: format!("reads a column the trainer group `{trainer}` produces, so it cannot run ahead of training"),
                });
            }
        }
        // trained: how many learning steps have finished; version: the weights experience uses.
        let (trained_tx, mut trained_rx) = watch::channel((0_usize, start_version));
        let (batches_tx, mut batches_rx) =
            mpsc::channel::<(usize, u64, Batch, Vec<super::StageTiming>)>(max_staleness + 1);
        let producing = async move {
            for step in 0..steps {
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
                let mut batch = input(step);
                batch.set_meta_all("weight_version", &version.to_string());
                let (made, timings) = self.run_stages(&experience, batch).await?;
                if batches_tx
                    .send((step, version, made, timings))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            Ok::<(), PipelineError>(())
        };
        let learning_side = async move {
            let mut reports = Vec::with_capacity(steps);
            let mut version = start_version;
            for _ in 0..steps {
                let Some((step, made_with, batch, mut timings)) = batches_rx.recv().await else {
                    break;
                };
                let (output, learned) = self.run_stages(&learning, batch).await?;
                timings.extend(learned);
                version = sync().await.map_err(|err| PipelineError::WeightSync {
                    from: trainer.clone(),
                    to: "rollout".to_string(),
                    why: err.to_string(),
                })?;
                let _ = trained_tx.send((step + 1, version));
                let report = StepReport {
                    step,
                    output,
                    timings,
                    weight_version: made_with,
                };
                observe(&report).await.map_err(|err| PipelineError::Run {
                    stage: "(observer)".to_string(),
                    why: err.to_string(),
                })?;
                reports.push(report);
            }
            let _ = version;
            Ok::<Vec<StepReport>, PipelineError>(reports)
        };
        let (produced, learned) = tokio::join!(producing, learning_side);
        produced?;
        learned
    }
}
