//! Running a pipeline step: stages whose inputs are ready run together; each gets the columns it
//! reads, dispatched over its group's members; its outputs join the step's batch; the weight
//! version is stamped on every row.

use super::graph::{Dispatch, Pipeline, PipelineError};
use crate::data::Batch;
use petgraph::Direction;
use std::collections::BTreeSet;
use std::time::Instant;

/// One stage's time in a step.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTiming {
    pub stage: String,
    pub seconds: f64,
    pub rows: usize,
    pub rows_per_s: f64,
}

/// What a step produced.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The step's index in its run (0 for a lone `run_step`).
    pub step: usize,
    /// The input's columns and every stage's outputs; row metadata holds `weight_version`.
    pub output: Batch,
    /// Per stage, in the order they finished.
    pub timings: Vec<StageTiming>,
    pub weight_version: u64,
}

impl Pipeline {
    /// Runs one step on `input`, which must hold the source columns, made with weights of
    /// `weight_version`.
    pub async fn run_step(
        &self,
        mut input: Batch,
        weight_version: u64,
    ) -> Result<StepReport, PipelineError> {
        input.set_meta_all("weight_version", &weight_version.to_string());
        let all: Vec<usize> = (0..self.stages.len()).collect();
        let (output, timings) = self.run_stages(&all, input).await?;
        Ok(StepReport {
            step: 0,
            output,
            timings,
            weight_version,
        })
    }

    /// Runs the stages in `subset` (stages outside it count as done: their columns must already
    /// be in `input`), each as soon as its inputs are ready.
    pub(crate) async fn run_stages(
        &self,
        subset: &[usize],
        mut input: Batch,
    ) -> Result<(Batch, Vec<StageTiming>), PipelineError> {
        let mut done: BTreeSet<usize> = (0..self.stages.len())
            .filter(|index| !subset.contains(index))
            .collect();
        let mut timings = Vec::new();
        while done.len() < self.stages.len() {
            let ready: Vec<usize> = (0..self.stages.len())
                .filter(|index| !done.contains(index))
                .filter(|index| {
                    self.graph
                        .neighbors_directed(self.nodes[*index], Direction::Incoming)
                        .all(|from| from == self.source || done.contains(&self.graph[from]))
                })
                .collect();
            if ready.is_empty() {
                return Err(PipelineError::Run {
                    stage: "(scheduler)".to_string(),
                    why: "no stage can run".to_string(),
                });
            }
            let runs = ready.iter().map(|index| self.run_stage(*index, &input));
            let results = futures::future::join_all(runs).await;
            for (index, result) in ready.iter().zip(results) {
                let (output, timing) = result?;
                let stage = &self.stages[*index];
                input.merge(output).map_err(|err| PipelineError::Run {
                    stage: stage.name.clone(),
                    why: err.to_string(),
                })?;
                timings.push(timing);
                done.insert(*index);
            }
        }
        Ok((input, timings))
    }

    async fn run_stage(
        &self,
        index: usize,
        batch: &Batch,
    ) -> Result<(Batch, StageTiming), PipelineError> {
        let stage = &self.stages[index];
        let fail = |why: String| PipelineError::Run {
            stage: stage.name.clone(),
            why,
        };
        let members = self.groups.get(&stage.group).copied().unwrap_or(1).max(1);
        let input = batch
            .project(&stage.inputs)
            .map_err(|err| fail(err.to_string()))?;
        let started = Instant::now();
        let output = match stage.dispatch {
            Dispatch::RankZero => (stage.run)(0, input)
                .await
                .map_err(|err| fail(err.to_string()))?,
            Dispatch::Broadcast => {
                let calls = (0..members).map(|rank| (stage.run)(rank, input.clone()));
                let mut results = futures::future::join_all(calls).await.into_iter();
                let first = results
                    .next()
                    .ok_or_else(|| fail("the group has no members".to_string()))?;
                for other in results {
                    other.map_err(|err| fail(err.to_string()))?;
                }
                first.map_err(|err| fail(err.to_string()))?
            }
            Dispatch::Split => {
                let parts = input.split(members).map_err(|err| fail(err.to_string()))?;
                let calls = parts
                    .into_iter()
                    .enumerate()
                    .map(|(rank, part)| (stage.run)(rank, part));
                let results: Vec<Batch> = futures::future::join_all(calls)
                    .await
                    .into_iter()
                    .collect::<crate::Result<_>>()
                    .map_err(|err| fail(err.to_string()))?;
                Batch::concat(&results).map_err(|err| fail(err.to_string()))?
            }
        };
        for column in &stage.outputs {
            if output.column(column).is_none() {
                return Err(fail(format!("did not produce its column `{column}`")));
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let timing = StageTiming {
            stage: stage.name.clone(),
            seconds,
            rows: batch.rows(),
            rows_per_s: batch.rows() as f64 / seconds.max(1e-9),
        };
        Ok((output, timing))
    }
}
