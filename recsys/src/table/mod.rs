//! One shard's part of an embedding table, as plain data (the shard actor wraps it): a row per
//! distinct feature id (no collisions), created on first sight once the id has been seen
//! `min_count` times (admission), evicted when its last event is older than the TTL, trained by
//! Adagrad with a per-row, per-dimension accumulator, and read in batches. Each row holds `dim`
//! embedding values and one linear weight. Updates carry the trainer's step, so one applied
//! twice (a retried batch, a replayed log) changes nothing the second time. Changed rows are
//! tracked for the serving replicas (see `seal`).

mod persist;
mod rebalance;
mod seal;

pub(crate) use persist::write_atomically;
pub use persist::{ShardFiles, TableState};
pub use rebalance::RowsExport;
pub use seal::Delta;

use crate::error::RecsysError;
use crate::features::{mix64, shard_of, SlotSet};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;

/// How a table is shaped and trained.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableConfig {
    /// Embedding width; each row holds `dim + 1` values (the last is the linear weight).
    pub dim: usize,
    /// The slots whose ids the table takes.
    pub slots: SlotSet,
    /// Times an id must be seen in training before it gets a row of its own (1: at once).
    pub min_count: u32,
    /// Seconds of event time after which a row not seen again is evicted (0: never).
    pub ttl_s: u64,
    /// Adagrad's learning rate and starting accumulator.
    pub learning_rate: f32,
    pub initial_accumulator: f32,
    /// New embeddings are uniform in `[-init_scale, init_scale]`, a function of the id and
    /// `seed` alone, so a replayed log creates the same rows.
    pub init_scale: f32,
    pub seed: u64,
    /// Seals kept for replicas that are behind.
    pub retained_seals: usize,
}

impl TableConfig {
    pub fn width(&self) -> usize {
        self.dim + 1
    }
}

/// One step's gradients for the rows of one shard: ids (distinct), how many events in the step
/// carried each (for admission), and `width` gradient values per id.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct UpdateBatch {
    pub step: u64,
    /// Newest event time in the step (seconds).
    pub event_time: u64,
    pub ids: Vec<u64>,
    pub counts: Vec<u32>,
    pub grads: Vec<f32>,
}

/// What a shard has done since it started (or was recovered).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableStats {
    pub shard: u32,
    pub shards: u32,
    pub rows: u64,
    pub pending_ids: u64,
    pub version: u64,
    pub lookups: u64,
    pub row_updates: u64,
    pub admitted: u64,
    pub evicted: u64,
    /// Gradients for ids still below the admission count (counted, not applied).
    pub not_admitted_updates: u64,
    pub replayed_steps: u64,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct RowMeta {
    pub(crate) id: u64,
    pub(crate) last_seen: u64,
    pub(crate) changed_at: u64,
    pub(crate) live: bool,
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Pending {
    pub(crate) count: u32,
    pub(crate) last_seen: u64,
}

/// One shard of an embedding table.
pub struct EmbeddingTable {
    pub(crate) config: TableConfig,
    pub(crate) shard: u32,
    pub(crate) shards: u32,
    pub(crate) index: FxHashMap<u64, u32>,
    pub(crate) values: Vec<f32>,
    pub(crate) accum: Vec<f32>,
    pub(crate) meta: Vec<RowMeta>,
    pub(crate) free: Vec<u32>,
    pub(crate) pending: FxHashMap<u64, Pending>,
    /// The last step applied.
    pub(crate) version: u64,
    pub(crate) event_time: u64,
    pub(crate) last_sweep: u64,
    /// Rows changed since the last seal (slots; may repeat).
    pub(crate) dirty: Vec<u32>,
    /// Rows evicted since the last seal.
    pub(crate) removed: Vec<u64>,
    pub(crate) seals: VecDeque<Arc<Delta>>,
    pub(crate) sealed_version: u64,
    pub(crate) full_requested: bool,
    pub(crate) stats: TableStats,
}

impl EmbeddingTable {
    /// An empty shard `shard` of `shards`.
    pub fn new(config: TableConfig, shard: u32, shards: u32) -> Result<Self, RecsysError> {
        if config.dim == 0 || shards == 0 || shard >= shards {
            return Err(RecsysError::BadBatch(format!(
                "a table needs dim > 0 and shard < shards (dim {}, shard {shard} of {shards})",
                config.dim
            )));
        }
        // Adagrad divides by the root of the accumulator: it must start above zero.
        let positive = |value: f32| value.is_finite() && value > 0.0;
        if !positive(config.learning_rate) || !positive(config.initial_accumulator) {
            return Err(RecsysError::BadBatch(format!(
                "a table needs a positive learning rate and initial accumulator (given {} and {})",
                config.learning_rate, config.initial_accumulator
            )));
        }
        Ok(EmbeddingTable {
            config,
            shard,
            shards,
            index: FxHashMap::default(),
            values: Vec::new(),
            accum: Vec::new(),
            meta: Vec::new(),
            free: Vec::new(),
            pending: FxHashMap::default(),
            version: 0,
            event_time: 0,
            last_sweep: 0,
            dirty: Vec::new(),
            removed: Vec::new(),
            seals: VecDeque::new(),
            sealed_version: 0,
            full_requested: false,
            stats: TableStats::default(),
        })
    }

    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn rows(&self) -> usize {
        self.index.len()
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            shard: self.shard,
            shards: self.shards,
            rows: self.index.len() as u64,
            pending_ids: self.pending.len() as u64,
            version: self.version,
            ..self.stats.clone()
        }
    }

    /// Refuses ids of undeclared slots and ids that belong to another shard.
    fn check_ids(&self, ids: &[u64]) -> Result<(), RecsysError> {
        self.config.slots.check(ids)?;
        if self.shards > 1 {
            for &id in ids {
                let owner = shard_of(id, self.shards);
                if owner != self.shard {
                    return Err(RecsysError::BadFeature {
                        id,
                        why: format!(
                            "sent to shard {} of {}, but it belongs to shard {owner}",
                            self.shard, self.shards
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// `width` values per id, in order; ids without a row (unseen or not admitted) read zeros.
    pub fn lookup(&mut self, ids: &[u64]) -> Result<Vec<f32>, RecsysError> {
        self.check_ids(ids)?;
        let width = self.config.width();
        let mut out = vec![0.0f32; ids.len() * width];
        for (chunk, id) in out.chunks_exact_mut(width).zip(ids) {
            if let Some(&slot) = self.index.get(id) {
                let start = slot as usize * width;
                chunk.copy_from_slice(&self.values[start..start + width]);
            }
        }
        self.stats.lookups += ids.len() as u64;
        Ok(out)
    }

    /// Applies one step's gradients (Adagrad), admitting ids that reach the count and evicting
    /// rows past their TTL. A step at or below the table's version was applied already: returns
    /// `false` and changes nothing.
    pub fn apply(&mut self, batch: &UpdateBatch) -> Result<bool, RecsysError> {
        self.check_batch(batch)?;
        if self.is_stale(batch.step) {
            return Ok(false);
        }
        self.apply_checked(batch);
        Ok(true)
    }

    /// Whether step `step` was applied already, or sealed without it (an update of a step the
    /// trainer gave up on, arriving late: applying it would change rows no seal sends).
    pub fn is_stale(&self, step: u64) -> bool {
        step <= self.version || step <= self.sealed_version
    }

    /// Whether `apply` would take the batch (lengths, finite gradients, the ids' slots and
    /// shard); a shard checks before it logs.
    pub fn check_batch(&self, batch: &UpdateBatch) -> Result<(), RecsysError> {
        let width = self.config.width();
        if batch.grads.len() != batch.ids.len() * width || batch.counts.len() != batch.ids.len() {
            return Err(RecsysError::BadBatch(format!(
                "{} ids need {} counts and {} gradient values (width {width}); got {} and {}",
                batch.ids.len(),
                batch.ids.len(),
                batch.ids.len() * width,
                batch.counts.len(),
                batch.grads.len()
            )));
        }
        if let Some(bad) = batch.grads.iter().position(|g| !g.is_finite()) {
            return Err(RecsysError::BadBatch(format!(
                "gradient {} of feature {:#x} is not finite",
                bad % width,
                batch.ids[bad / width]
            )));
        }
        self.check_ids(&batch.ids)
    }

    fn apply_checked(&mut self, batch: &UpdateBatch) {
        let width = self.config.width();
        let step = batch.step;
        let time = batch.event_time;
        for ((&id, &count), grad) in batch
            .ids
            .iter()
            .zip(&batch.counts)
            .zip(batch.grads.chunks_exact(width))
        {
            let slot = match self.index.get(&id) {
                Some(&slot) => slot,
                None => match self.admit(id, count.max(1), time) {
                    Some(slot) => slot,
                    None => {
                        self.stats.not_admitted_updates += 1;
                        continue;
                    }
                },
            };
            self.adagrad(slot, grad);
            let meta = &mut self.meta[slot as usize];
            meta.last_seen = meta.last_seen.max(time);
            if meta.changed_at <= self.sealed_version {
                self.dirty.push(slot);
            }
            meta.changed_at = step;
            self.stats.row_updates += 1;
        }
        self.version = step;
        self.event_time = self.event_time.max(time);
        self.sweep();
    }

    fn adagrad(&mut self, slot: u32, grad: &[f32]) {
        let width = self.config.width();
        let start = slot as usize * width;
        let rate = self.config.learning_rate;
        let values = &mut self.values[start..start + width];
        let accum = &mut self.accum[start..start + width];
        for ((value, acc), &g) in values.iter_mut().zip(accum.iter_mut()).zip(grad) {
            *acc += g * g;
            *value -= rate * g / acc.sqrt();
        }
    }

    /// Counts a sighting of an id without a row; gives it a row once it reaches the count.
    fn admit(&mut self, id: u64, count: u32, time: u64) -> Option<u32> {
        let pending = self.pending.entry(id).or_insert(Pending {
            count: 0,
            last_seen: time,
        });
        pending.count = pending.count.saturating_add(count);
        pending.last_seen = pending.last_seen.max(time);
        if pending.count < self.config.min_count {
            return None;
        }
        self.pending.remove(&id);
        self.stats.admitted += 1;
        let values = self.initial_row(id);
        Some(self.insert_row(id, &values, None, time, self.version + 1))
    }

    /// The starting values of an id's row: a function of the id and the seed only.
    pub(crate) fn initial_row(&self, id: u64) -> Vec<f32> {
        let width = self.config.width();
        let mut state = mix64(id ^ self.config.seed);
        let mut row: Vec<f32> = (0..self.config.dim)
            .map(|_| {
                state = mix64(state);
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
                (unit * 2.0 - 1.0) * self.config.init_scale
            })
            .collect();
        row.resize(width, 0.0);
        row
    }

    /// Stores a row in a free slot (or a new one); returns the slot.
    pub(crate) fn insert_row(
        &mut self,
        id: u64,
        values: &[f32],
        accum: Option<&[f32]>,
        last_seen: u64,
        changed_at: u64,
    ) -> u32 {
        let width = self.config.width();
        let initial = self.config.initial_accumulator;
        let meta = RowMeta {
            id,
            last_seen,
            changed_at,
            live: true,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                let start = slot as usize * width;
                self.values[start..start + width].copy_from_slice(values);
                match accum {
                    Some(accum) => self.accum[start..start + width].copy_from_slice(accum),
                    None => self.accum[start..start + width].fill(initial),
                }
                self.meta[slot as usize] = meta;
                slot
            }
            None => {
                self.values.extend_from_slice(values);
                match accum {
                    Some(accum) => self.accum.extend_from_slice(accum),
                    None => self.accum.resize(self.accum.len() + width, initial),
                }
                self.meta.push(meta);
                (self.meta.len() - 1) as u32
            }
        };
        self.index.insert(id, slot);
        if changed_at > self.sealed_version {
            self.dirty.push(slot);
        }
        slot
    }

    /// Frees a row's slot; returns its id.
    pub(crate) fn remove_slot(&mut self, slot: u32) -> u64 {
        let meta = &mut self.meta[slot as usize];
        meta.live = false;
        let id = meta.id;
        self.index.remove(&id);
        self.free.push(slot);
        id
    }

    /// Evicts rows (and forgets pending ids) unseen for the TTL, at most every quarter TTL of
    /// event time.
    fn sweep(&mut self) {
        let ttl = self.config.ttl_s;
        if ttl == 0 || self.event_time < self.last_sweep + ttl.div_ceil(4) {
            return;
        }
        self.last_sweep = self.event_time;
        let horizon = self.event_time.saturating_sub(ttl);
        let expired: Vec<u32> = self
            .meta
            .iter()
            .enumerate()
            .filter(|(_, meta)| meta.live && meta.last_seen < horizon)
            .map(|(slot, _)| slot as u32)
            .collect();
        for slot in expired {
            let id = self.remove_slot(slot);
            self.removed.push(id);
            self.stats.evicted += 1;
        }
        self.pending
            .retain(|_, pending| pending.last_seen >= horizon);
    }
}

#[cfg(test)]
mod tests;
