//! Running a pipeline step: stages whose inputs are ready run together, each dispatched over its
//! group; the driver sends each member a `StageCall` (the step's metadata, its rows, and where
//! its inputs are) and gets a receipt back, while the batches stay on the members and move
//! between them directly. The step's figures come back as the receipts' step scalars.

use super::graph::{Dispatch, Pipeline, PipelineError};
use super::publish::DriverSpan;
use super::step_data::{CallParts, InputWire, StageCall, StageReceipt, StageWiring};
use super::SyncOutcome;
use crate::data::{split_ranges, Batch, StepMeta};
use crate::timeline::{SpanKind, StepTag};
use petgraph::Direction;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

/// One stage's time in a step.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTiming {
    pub stage: String,
    /// From dispatch to the last receipt, on the driver.
    pub seconds: f64,
    /// The slowest member's time fetching inputs, and from receiving its call to keeping its
    /// output (`seconds` less this is the calls' travel and dispatch), to 100 µs, rounded up.
    pub fetch_seconds: f64,
    pub member_seconds: f64,
    pub rows: usize,
    pub rows_per_s: f64,
}

/// What a step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The step's index in its run (0 for a lone `run_step`).
    pub step: usize,
    /// The weight version the step's experience was made with.
    pub weight_version: u64,
    /// The step's rows.
    pub rows: usize,
    /// Every stage's step scalars (for a group, rank 0's where members disagree).
    pub scalars: BTreeMap<String, f64>,
    /// Every stage's step counts, summed over the members that report them.
    pub counts: BTreeMap<String, f64>,
    /// Per stage, in the order they ran.
    pub timings: Vec<StageTiming>,
    /// Bytes of batch data the stages used as inputs and kept as outputs: what a driver that
    /// carried the batches would have received and sent.
    pub stage_bytes: u64,
    /// The weight sync after the step's learning, when the pipeline has one.
    pub weight_sync: Option<SyncOutcome>,
}

/// A step in flight, on the driver.
pub(crate) struct StepState {
    pub step: usize,
    pub meta: StepMeta,
    pub rows: Option<usize>,
    pub source: Option<Batch>,
    pub receipts: BTreeMap<usize, Vec<StageReceipt>>,
    pub timings: Vec<StageTiming>,
    pub stage_bytes: u64,
    pub keep_steps: u64,
}

impl StepState {
    pub(crate) fn new(step: usize, weight_version: u64, input: Batch, keep_steps: u64) -> Self {
        let mut meta = StepMeta::new(step as u64, weight_version);
        meta.scalars = input.step_meta().scalars.clone();
        meta.counts = input.step_meta().counts.clone();
        let has_columns = input.column_names().next().is_some();
        StepState {
            step,
            meta,
            rows: has_columns.then_some(input.rows()),
            source: has_columns.then_some(input),
            receipts: BTreeMap::new(),
            timings: Vec::new(),
            stage_bytes: 0,
            keep_steps,
        }
    }

    pub(crate) fn report(self, weight_sync: Option<SyncOutcome>) -> StepReport {
        let mut scalars = StepMeta::default();
        for receipts in self.receipts.values() {
            for receipt in receipts {
                scalars.absorb(&receipt.meta);
            }
        }
        StepReport {
            step: self.step,
            weight_version: self.meta.weight_version,
            rows: self.rows.unwrap_or(0),
            scalars: scalars.scalars,
            counts: scalars.counts,
            timings: self.timings,
            stage_bytes: self.stage_bytes,
            weight_sync,
        }
    }
}

impl Pipeline {
    /// Runs one step on `input` (the driver's source columns, if the graph reads any, and the
    /// step scalars its stages should see), made with weights of `weight_version`. Does not
    /// sync weights. Each call is a new step of the pipeline (its index in the report), so
    /// calls never read each other's outputs.
    pub async fn run_step(
        &self,
        input: Batch,
        weight_version: u64,
    ) -> Result<StepReport, PipelineError> {
        self.check_source(&input)?;
        let step = self
            .next_step
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut state = StepState::new(step, weight_version, input, self.keep_steps);
        let all: Vec<usize> = (0..self.stages.len()).collect();
        self.run_stages(&all, &mut state).await?;
        let report = state.report(None);
        self.publish(&report);
        Ok(report)
    }

    pub(crate) fn check_source(&self, input: &Batch) -> Result<(), PipelineError> {
        for column in &self.source_columns {
            if input.column(column).is_none() {
                return Err(PipelineError::Run {
                    stage: "(source)".to_string(),
                    why: format!("the step's input has no column `{column}`"),
                });
            }
        }
        Ok(())
    }

    /// Runs the stages in `subset` (stages outside it count as done: their receipts must be in
    /// `state`) in waves: every stage whose inputs are ready runs, together with the others
    /// ready at that moment.
    pub(crate) async fn run_stages(
        &self,
        subset: &[usize],
        state: &mut StepState,
    ) -> Result<(), PipelineError> {
        let mut done: BTreeSet<usize> = (0..self.stages.len())
            .filter(|index| !subset.contains(index))
            .collect();
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
            let state_view: &StepState = state;
            let runs = ready.iter().map(|index| self.run_stage(*index, state_view));
            let results = futures::future::join_all(runs).await;
            for (index, result) in ready.iter().zip(results) {
                let (receipts, timing, rows) = result?;
                state.rows.get_or_insert(rows);
                state.stage_bytes += receipts
                    .iter()
                    .map(|r| r.bytes_in + r.bytes_out)
                    .sum::<u64>();
                state.receipts.insert(*index, receipts);
                state.timings.push(timing);
                done.insert(*index);
            }
        }
        Ok(())
    }

    /// Which stage produces each column (`None`: the driver's source).
    fn producer_of(&self, column: &str) -> Option<usize> {
        self.stages
            .iter()
            .position(|stage| stage.outputs.iter().any(|c| c == column))
    }

    fn wiring(&self, index: usize, state: &StepState) -> Result<StageWiring, PipelineError> {
        let stage = &self.stages[index];
        let inputs = stage
            .inputs
            .iter()
            .map(|column| {
                let Some(producer) = self.producer_of(column) else {
                    return Ok(InputWire {
                        column: column.clone(),
                        producer: None,
                        owners: Vec::new(),
                        split: false,
                    });
                };
                let receipts = state
                    .receipts
                    .get(&producer)
                    .ok_or_else(|| PipelineError::Run {
                        stage: stage.name.clone(),
                        why: format!("its input `{column}` has not been produced this step"),
                    })?;
                Ok(InputWire {
                    column: column.clone(),
                    producer: Some(producer as u32),
                    owners: receipts.iter().map(|r| r.owner.clone()).collect(),
                    split: self.stages[producer].dispatch == Dispatch::Split,
                })
            })
            .collect::<Result<Vec<_>, PipelineError>>()?;
        Ok(StageWiring {
            stage_name: stage.name.clone(),
            inputs,
            outputs: stage.outputs.clone(),
            keep_steps: state.keep_steps,
        })
    }

    async fn run_stage(
        &self,
        index: usize,
        state: &StepState,
    ) -> Result<(Vec<StageReceipt>, StageTiming, usize), PipelineError> {
        let stage = &self.stages[index];
        let fail = |why: String| PipelineError::Run {
            stage: stage.name.clone(),
            why,
        };
        let members = self.groups.get(&stage.group).copied().unwrap_or(1).max(1);
        let wiring = Arc::new(self.wiring(index, state)?);
        let wiring_hash = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            wiring.hash(&mut hasher);
            hasher.finish()
        };
        let step_rows = match (state.rows, stage.inputs.is_empty()) {
            (Some(rows), _) => rows,
            (None, true) => 0,
            (None, false) => return Err(fail("the step's rows are not known yet".to_string())),
        };
        let ranges = match stage.dispatch {
            Dispatch::Split if state.rows.is_none() => {
                return Err(fail(
                    "a stage with no inputs decides the step's rows: dispatch it to rank 0"
                        .to_string(),
                ))
            }
            Dispatch::Split => split_ranges(step_rows, members),
            Dispatch::Broadcast => vec![0..step_rows; members],
            Dispatch::RankZero => std::iter::once(0..step_rows).collect(),
        };
        let reads_source: Vec<String> = stage
            .inputs
            .iter()
            .filter(|column| self.producer_of(column).is_none())
            .cloned()
            .collect();
        let wired = self
            .wired
            .lock()
            .map(|wired| wired.clone())
            .unwrap_or_default();
        let started = Instant::now();
        let started_unix_us = crate::timeline::unix_us_now();
        let tag = StepTag {
            step: Some(state.meta.step),
            weight_version: Some(state.meta.weight_version),
        };
        let mut calls = Vec::with_capacity(ranges.len());
        for (rank, range) in ranges.iter().enumerate() {
            let source = match (&state.source, reads_source.is_empty()) {
                (Some(batch), false) => Some(
                    batch
                        .project(&reads_source)
                        .and_then(|b| b.slice(range.start, range.end))
                        .map_err(|source| PipelineError::Data {
                            stage: stage.name.clone(),
                            source,
                        })?,
                ),
                _ => None,
            };
            calls.push(StageCall::from(CallParts {
                pipeline: self.id,
                stage: index as u32,
                rank: rank as u32,
                rows: (range.start as u64, range.end as u64),
                step_rows: step_rows as u64,
                meta: state.meta.clone(),
                wiring: wiring.clone(),
                wiring_hash,
                send_wiring: wired.get(&(index, rank)) != Some(&wiring_hash),
                source,
            }));
        }
        let stage_calls = crate::timeline::with_step(tag, (stage.run)(calls));
        let outcome = tokio::time::timeout(self.stage_deadline, stage_calls).await;
        let (bytes_in, bytes_out) = match &outcome {
            Ok(Ok(receipts)) => receipts
                .iter()
                .fold((0, 0), |(i, o), r| (i + r.bytes_in, o + r.bytes_out)),
            _ => (0, 0),
        };
        self.record_span(DriverSpan {
            kind: SpanKind::Stage,
            name: &stage.name,
            group: &stage.group,
            start_unix_us: started_unix_us,
            duration: started.elapsed(),
            tag,
            bytes_in,
            bytes_out,
            failed: !matches!(outcome, Ok(Ok(_))),
        });
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(_) => {
                if let Ok(mut wired) = self.wired.lock() {
                    wired.retain(|(stage_index, _), _| *stage_index != index);
                }
                return Err(PipelineError::Deadline {
                    what: format!("stage `{}` (group `{}`)", stage.name, stage.group),
                    seconds: self.stage_deadline.as_secs_f64(),
                });
            }
        };
        let mut receipts = match outcome {
            Ok(receipts) => receipts,
            Err(source) => {
                // A member may have restarted without the wiring: send it again next time.
                if let Ok(mut wired) = self.wired.lock() {
                    wired.retain(|(stage_index, _), _| *stage_index != index);
                }
                return Err(PipelineError::Stage {
                    stage: stage.name.clone(),
                    group: stage.group.clone(),
                    source: Box::new(source),
                });
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        if stage.dispatch == Dispatch::Broadcast {
            // Every member did the same work on the same rows: count it once.
            for receipt in receipts.iter_mut().skip(1) {
                receipt.meta.counts.clear();
                receipt.bytes_in = 0;
                receipt.bytes_out = 0;
            }
        }
        if let Ok(mut wired) = self.wired.lock() {
            for (rank, receipt) in receipts.iter().enumerate() {
                wired.insert((index, rank), receipt.wiring_hash);
            }
        }
        let rows = match state.rows {
            Some(rows) => {
                if stage.dispatch == Dispatch::Split {
                    let made: u64 = receipts.iter().map(|r| r.rows).sum();
                    if made != rows as u64 {
                        return Err(fail(format!("made {made} rows of a {rows}-row step")));
                    }
                }
                rows
            }
            None => receipts.first().map(|r| r.rows as usize).unwrap_or(0),
        };
        let slowest = |of: fn(&StageReceipt) -> f64| receipts.iter().map(of).fold(0.0, f64::max);
        let timing = StageTiming {
            stage: stage.name.clone(),
            seconds,
            fetch_seconds: slowest(StageReceipt::fetch_seconds),
            member_seconds: slowest(StageReceipt::busy_seconds),
            rows,
            rows_per_s: rows as f64 / seconds.max(1e-9),
        };
        Ok((receipts, timing, rows))
    }

    /// Joins the weight-sync edge (once; later calls return at once, until `reconnect`).
    pub async fn connect(&self) -> Result<(), PipelineError> {
        let Some(edge) = &self.weight_sync else {
            return Ok(());
        };
        let mut connected = self.connected.lock().await;
        if *connected {
            return Ok(());
        }
        let what = format!(
            "connecting the weight sync from `{}` to `{}`",
            edge.learning_group(),
            edge.generating_group()
        );
        self.within_deadline(what, edge.connect())
            .await?
            .map_err(|source| PipelineError::WeightSync {
                from: edge.learning_group().to_string(),
                to: edge.generating_group().to_string(),
                source: Box::new(source),
            })?;
        *connected = true;
        Ok(())
    }

    /// Joins the weight-sync edge again (after a member restarted and lost its place in the
    /// old group), and forgets which members have the stages' wiring, so every member is sent
    /// it again.
    pub async fn reconnect(&self) -> Result<(), PipelineError> {
        *self.connected.lock().await = false;
        if let Ok(mut wired) = self.wired.lock() {
            wired.clear();
        }
        self.connect().await
    }

    async fn within_deadline<T>(
        &self,
        what: String,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, PipelineError> {
        tokio::time::timeout(self.stage_deadline, work)
            .await
            .map_err(|_| PipelineError::Deadline {
                what,
                seconds: self.stage_deadline.as_secs_f64(),
            })
    }

    /// Runs the weight-sync edge now (connecting it first if needed).
    pub async fn sync_weights(&self) -> Result<SyncOutcome, PipelineError> {
        let edge = self
            .weight_sync
            .as_ref()
            .ok_or_else(|| PipelineError::Run {
                stage: "(weight sync)".to_string(),
                why: "the pipeline has no weight-sync edge".to_string(),
            })?;
        self.connect().await?;
        let what = format!(
            "the weight sync from `{}` to `{}`",
            edge.learning_group(),
            edge.generating_group()
        );
        let started_unix_us = crate::timeline::unix_us_now();
        let started = Instant::now();
        let outcome = self.within_deadline(what, edge.sync()).await;
        let synced = match &outcome {
            Ok(Ok(synced)) => Some(synced),
            _ => None,
        };
        self.record_span(DriverSpan {
            kind: SpanKind::Sync,
            name: "weight_sync",
            group: edge.generating_group(),
            start_unix_us: started_unix_us,
            duration: started.elapsed(),
            tag: StepTag {
                step: None,
                weight_version: synced.map(|s| s.version),
            },
            bytes_in: 0,
            bytes_out: synced.map_or(0, |s| s.bytes),
            failed: synced.is_none(),
        });
        let synced = outcome?.map_err(|source| PipelineError::WeightSync {
            from: edge.learning_group().to_string(),
            to: edge.generating_group().to_string(),
            source: Box::new(source),
        })?;
        self.publish_sync(&synced);
        Ok(synced)
    }
}
