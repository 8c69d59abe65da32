//! A stage's data path, on the member that runs it: the driver sends a `StageCall` (the step's
//! metadata, the rows this member handles, and once per member the stage's wiring: which
//! producer holds each input column); the member fetches its inputs from the producers peer to
//! peer (`StageCall::inputs`), works, and keeps its output where it is (`StageCall::finish`),
//! answering with a small `StageReceipt`. The driver handles calls and receipts only, never the
//! batch bytes. Outputs are named by (pipeline, step, stage, rank), so consumers find them
//! without a reference travelling through the driver, and each member drops its outputs of
//! steps older than the pipeline's retention.

use crate::data::{split_ranges, Batch, StepMeta};
use crate::error::{Error, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where one input column comes from.
#[derive(Debug, Clone, PartialEq, Hash, Serialize, Deserialize)]
pub(crate) struct InputWire {
    pub column: String,
    /// The producing stage's index, or `None` for the driver's source columns (they travel in
    /// the call).
    pub producer: Option<u32>,
    /// The producer's members' addresses, by rank.
    pub owners: Vec<String>,
    /// Whether the producer's rows were split over its members (else rank 0 holds them all).
    pub split: bool,
}

/// What a member needs to know about its stage, sent once (and again when a producer moved).
#[derive(Debug, Clone, PartialEq, Hash, Serialize, Deserialize)]
pub(crate) struct StageWiring {
    pub stage_name: String,
    pub inputs: Vec<InputWire>,
    pub outputs: Vec<String>,
    /// Outputs of steps more than this many steps old are dropped when a new one is kept.
    pub keep_steps: u64,
}

/// One stage's work on one member for one step; the argument of a role method that serves as a
/// pipeline stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageCall {
    pub(crate) pipeline: u64,
    pub(crate) stage: u32,
    pub(crate) rank: u32,
    /// The step's rows this member handles, `[start, end)`, and the step's row count.
    pub(crate) rows: (u64, u64),
    pub(crate) step_rows: u64,
    pub(crate) meta: StepMeta,
    pub(crate) wiring_hash: u64,
    pub(crate) wiring: Option<StageWiring>,
    /// The driver's source columns for these rows, when the stage reads any.
    pub(crate) source: Option<Batch>,
    #[serde(skip)]
    bytes_in: u64,
    /// When this member received the call, and how long it spent fetching inputs.
    #[serde(skip, default = "Instant::now")]
    received: Instant,
    #[serde(skip)]
    fetch_seconds: f64,
}

/// What a member answers: enough for the driver to wire the next stages and report the step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReceipt {
    /// Rows the member produced.
    pub rows: u64,
    /// Where its output can be fetched (its worker address; empty in a driver process).
    pub owner: String,
    /// The output's step scalars (a loss, a mean reward).
    pub meta: StepMeta,
    /// Bytes of column data the member used as inputs (the rows and columns it read, not
    /// whole fetched objects) and kept as output.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The wiring the member used (the driver stops resending it).
    pub wiring_hash: u64,
    /// The member's time fetching its inputs, and from receiving the call to keeping its
    /// output (fetching included), in ticks of 100 µs, rounded up (a small varint on the wire:
    /// receipts are most of what the driver carries). Read them with `fetch_seconds` and
    /// `busy_seconds`.
    pub(crate) fetch_ticks: u32,
    pub(crate) busy_ticks: u32,
}

/// The receipts' unit of time.
const TICK_SECONDS: f64 = 1e-4;

fn ticks(seconds: f64) -> u32 {
    (seconds / TICK_SECONDS).ceil().min(u32::MAX as f64) as u32
}

impl StageReceipt {
    /// Seconds the member spent fetching its inputs (0: it fetched none).
    pub fn fetch_seconds(&self) -> f64 {
        f64::from(self.fetch_ticks) * TICK_SECONDS
    }

    /// Seconds from the member receiving its call to keeping its output.
    pub fn busy_seconds(&self) -> f64 {
        f64::from(self.busy_ticks) * TICK_SECONDS
    }
}

/// (pipeline, stage) -> (wiring hash, wiring).
type WiringTable = HashMap<(u64, u32), (u64, Arc<StageWiring>)>;

/// The wiring each (pipeline, stage) has on this process.
static WIRING: Mutex<Option<WiringTable>> = Mutex::new(None);

fn output_prefix(pipeline: u64) -> String {
    format!("step/{pipeline:x}/")
}

/// The name a stage output is kept under.
pub(crate) fn output_name(pipeline: u64, step: u64, stage: u32, rank: u32) -> String {
    format!("{}{step}/{stage}/{rank}", output_prefix(pipeline))
}

fn step_of_name(name: &str, prefix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.split('/').next()?.parse().ok()
}

impl StageCall {
    /// The step's metadata: its index, the weight version experience is made with, and the
    /// scalars the driver set.
    pub fn meta(&self) -> &StepMeta {
        &self.meta
    }

    pub fn step(&self) -> u64 {
        self.meta.step
    }

    /// This member's rank in its stage's group.
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    fn wiring(&self) -> Result<Arc<StageWiring>> {
        let key = (self.pipeline, self.stage);
        let mut table = WIRING.lock().map_err(|_| Error::Invalid {
            what: "stage wiring".to_string(),
            why: "its table was poisoned by a panic".to_string(),
        })?;
        let table = table.get_or_insert_with(HashMap::new);
        if let Some(wiring) = &self.wiring {
            let wiring = Arc::new(wiring.clone());
            table.insert(key, (self.wiring_hash, wiring.clone()));
            return Ok(wiring);
        }
        match table.get(&key) {
            Some((hash, wiring)) if *hash == self.wiring_hash => Ok(wiring.clone()),
            _ => Err(Error::Invalid {
                what: format!("pipeline stage {}", self.stage),
                why: "this member has no (or outdated) wiring for it: was it restarted?"
                    .to_string(),
            }),
        }
    }

    /// The stage's input columns for this member's rows, fetched from the members that made
    /// them (each producer's output once), with the step's metadata.
    pub async fn inputs(&mut self) -> Result<Batch> {
        let started = Instant::now();
        let batch = self.fetch_inputs().await;
        self.fetch_seconds += started.elapsed().as_secs_f64();
        batch
    }

    async fn fetch_inputs(&mut self) -> Result<Batch> {
        let wiring = self.wiring()?;
        let (start, end) = (self.rows.0 as usize, self.rows.1 as usize);
        let mut batch = Batch::new(end - start).with_step_meta(self.meta.clone());
        let mut fetched: BTreeMap<(u32, usize), Batch> = BTreeMap::new();
        for input in &wiring.inputs {
            let Some(producer) = input.producer else {
                let source = self.source.as_ref().ok_or_else(|| Error::Invalid {
                    what: format!("stage `{}`", wiring.stage_name),
                    why: format!("source column `{}` missing from the call", input.column),
                })?;
                let column = source.project(std::slice::from_ref(&input.column))?;
                self.bytes_in += column
                    .column(&input.column)
                    .map_or(0, |c| c.data.len() as u64);
                batch.merge(column)?;
                continue;
            };
            let holders = self.holders(input, start, end);
            let mut pieces = Vec::with_capacity(holders.len());
            for (rank, from, to) in holders {
                let key = (producer, rank);
                if let std::collections::btree_map::Entry::Vacant(slot) = fetched.entry(key) {
                    let owner = input.owners.get(rank).ok_or_else(|| Error::Invalid {
                        what: format!("stage `{}`", wiring.stage_name),
                        why: format!("no address for rank {rank} of its producer"),
                    })?;
                    let name = output_name(self.pipeline, self.meta.step, producer, rank as u32);
                    let bytes = crate::objects::fetch_named(owner, &name).await?;
                    slot.insert(Batch::decode(bytes)?);
                }
                let whole = &fetched[&key];
                let piece = whole
                    .project(std::slice::from_ref(&input.column))?
                    .slice(from, to)?;
                self.bytes_in += piece
                    .column(&input.column)
                    .map_or(0, |column| column.data.len() as u64);
                pieces.push(piece);
            }
            batch.merge(Batch::concat(&pieces)?)?;
        }
        // The producers' own figures are theirs to report, not this stage's input.
        Ok(batch.with_step_meta(self.meta.clone()))
    }

    /// For rows `[start, end)` of the step: which producer ranks hold them, and which of their
    /// rows (relative to each rank's output).
    fn holders(&self, input: &InputWire, start: usize, end: usize) -> Vec<(usize, usize, usize)> {
        if !input.split {
            return vec![(0, start, end)];
        }
        split_ranges(self.step_rows as usize, input.owners.len())
            .into_iter()
            .enumerate()
            .filter_map(|(rank, range)| {
                let (from, to) = (start.max(range.start), end.min(range.end));
                (from < to).then(|| (rank, from - range.start, to - range.start))
            })
            .collect()
    }

    /// Keeps `output` on this member for the stages that read it, and drops this stage's
    /// outputs of steps past the pipeline's retention. Its row count must be this member's
    /// share of the step (or any count for a stage with no inputs, which decides the step's
    /// rows), and it must hold every output column the stage declared.
    pub fn finish(&self, output: Batch) -> Result<StageReceipt> {
        let wiring = self.wiring()?;
        let expected = self.rows.1 - self.rows.0;
        let decides_rows = wiring.inputs.is_empty();
        if !decides_rows && output.rows() as u64 != expected {
            return Err(Error::Invalid {
                what: format!("stage `{}` output", wiring.stage_name),
                why: format!("{} rows for {expected} input rows", output.rows()),
            });
        }
        if let Some(missing) = wiring
            .outputs
            .iter()
            .find(|column| output.column(column).is_none())
        {
            return Err(Error::Invalid {
                what: format!("stage `{}` output", wiring.stage_name),
                why: format!("it did not produce its column `{missing}`"),
            });
        }
        let rows = output.rows() as u64;
        let scalars = StepMeta {
            scalars: output.step_meta().scalars.clone(),
            counts: output.step_meta().counts.clone(),
            ..self.meta.clone()
        };
        let bytes: Bytes = output.encode()?;
        let bytes_out = output
            .column_names()
            .filter_map(|name| output.column(name))
            .map(|column| column.data.len() as u64)
            .sum();
        let step = self.meta.step;
        let name = output_name(self.pipeline, step, self.stage, self.rank);
        crate::objects::hold_named(name, bytes)?;
        let prefix = output_prefix(self.pipeline);
        let suffix = format!("/{}/{}", self.stage, self.rank);
        let keep = wiring.keep_steps;
        crate::objects::remove_named(&prefix, |name| {
            name.ends_with(&suffix)
                && step_of_name(name, &prefix).is_some_and(|old| old + keep < step)
        });
        Ok(StageReceipt {
            rows,
            owner: crate::objects::own_address(),
            meta: scalars,
            bytes_in: self.bytes_in,
            bytes_out,
            wiring_hash: self.wiring_hash,
            fetch_ticks: ticks(self.fetch_seconds),
            busy_ticks: ticks(self.received.elapsed().as_secs_f64()),
        })
    }
}

/// A call the driver builds (the pipeline runner).
pub(crate) struct CallParts {
    pub pipeline: u64,
    pub stage: u32,
    pub rank: u32,
    pub rows: (u64, u64),
    pub step_rows: u64,
    pub meta: StepMeta,
    pub wiring: Arc<StageWiring>,
    pub wiring_hash: u64,
    pub send_wiring: bool,
    pub source: Option<Batch>,
}

impl From<CallParts> for StageCall {
    fn from(parts: CallParts) -> Self {
        StageCall {
            pipeline: parts.pipeline,
            stage: parts.stage,
            rank: parts.rank,
            rows: parts.rows,
            step_rows: parts.step_rows,
            meta: parts.meta,
            wiring_hash: parts.wiring_hash,
            wiring: parts.send_wiring.then(|| (*parts.wiring).clone()),
            source: parts.source,
            bytes_in: 0,
            received: Instant::now(),
            fetch_seconds: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_step() {
        let name = output_name(0xab, 12, 3, 1);
        assert_eq!(step_of_name(&name, &output_prefix(0xab)), Some(12));
        assert_eq!(step_of_name(&name, &output_prefix(0xac)), None);
    }
}
