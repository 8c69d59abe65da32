//! Changed-row tracking for the serving replicas. Between two training steps the trainer seals
//! every shard at its step: the shard freezes the rows changed since its previous seal (their
//! values now) and the rows evicted since, as one immutable `Delta`, and keeps the last few.
//! A replica at version `v` catching up to version `V` takes the seals in `(v, V]`, which hold
//! the same state on every shard whatever the trainer did after `V`. A replica too far behind
//! (or any replica after the shard restarted) gets a full copy with the next seal.

use super::EmbeddingTable;
use crate::error::RecsysError;
use std::sync::Arc;

/// The rows of one shard that changed between two seals, or all of them (`full`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delta {
    pub shard: u32,
    /// The seal this one follows (0 with `full`).
    pub after: u64,
    pub version: u64,
    /// Every live row: the replica drops what it held from this shard first.
    pub full: bool,
    pub ids: Vec<u64>,
    /// `width` values per id.
    pub values: Vec<f32>,
    /// Rows evicted since `after`.
    pub removed: Vec<u64>,
}

impl Delta {
    /// Bytes of the delta on the wire (ids, values, removed ids).
    pub fn payload_bytes(&self) -> u64 {
        (self.ids.len() * 8 + self.values.len() * 4 + self.removed.len() * 8) as u64
    }
}

impl EmbeddingTable {
    /// Seals the shard at `version` (the trainer's step; no later update has been applied).
    pub fn seal(&mut self, version: u64) -> Result<Arc<Delta>, RecsysError> {
        // The same seal asked again (a retried call whose answer was lost): the same delta.
        if let Some(last) = self.seals.back() {
            if last.version == version && version == self.sealed_version {
                return Ok(last.clone());
            }
        }
        if version < self.version || version <= self.sealed_version {
            return Err(RecsysError::BadBatch(format!(
                "seal at version {version}: shard {} has applied step {} and sealed {}",
                self.shard, self.version, self.sealed_version
            )));
        }
        let width = self.config.width();
        let mut delta = Delta {
            shard: self.shard,
            after: self.sealed_version,
            version,
            ..Delta::default()
        };
        if self.full_requested {
            delta.full = true;
            delta.after = 0;
            for (&id, &slot) in &self.index {
                delta.ids.push(id);
                let start = slot as usize * width;
                delta
                    .values
                    .extend_from_slice(&self.values[start..start + width]);
            }
            self.full_requested = false;
        } else {
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for slot in dirty {
                let meta = self.meta[slot as usize];
                if meta.live && meta.changed_at > self.sealed_version {
                    delta.ids.push(meta.id);
                    let start = slot as usize * width;
                    delta
                        .values
                        .extend_from_slice(&self.values[start..start + width]);
                }
            }
            delta.removed = std::mem::take(&mut self.removed);
        }
        self.dirty.clear();
        self.removed.clear();
        self.sealed_version = version;
        let delta = Arc::new(delta);
        self.seals.push_back(delta.clone());
        while self.seals.len() > self.config.retained_seals.max(1) {
            self.seals.pop_front();
        }
        Ok(delta)
    }

    /// The seals that take a replica from `after` to `upto`, in order. A replica whose `after`
    /// the shard no longer holds gets `TooFarBehind`, and a full copy comes with the next seal.
    pub fn changes(&mut self, after: u64, upto: u64) -> Result<Vec<Arc<Delta>>, RecsysError> {
        if upto > self.sealed_version {
            return Err(RecsysError::NotSealed {
                shard: self.shard,
                wanted: upto,
                sealed: self.sealed_version,
            });
        }
        let mut chain: Vec<Arc<Delta>> = self
            .seals
            .iter()
            .filter(|seal| seal.version > after && seal.version <= upto)
            .cloned()
            .collect();
        // From the last full copy on: what came before it is replaced.
        if let Some(from) = chain.iter().rposition(|seal| seal.full) {
            chain.drain(..from);
        }
        let starts_right = match chain.first() {
            Some(first) => first.full || first.after == after,
            None => after >= upto,
        };
        let reaches = chain.last().map(|last| last.version).unwrap_or(after) >= upto;
        if starts_right && reaches {
            return Ok(chain);
        }
        self.full_requested = true;
        Err(RecsysError::TooFarBehind {
            shard: self.shard,
            after,
            oldest: self
                .seals
                .front()
                .map(|seal| seal.after)
                .unwrap_or(self.sealed_version),
        })
    }

    /// Asks for a full copy with the next seal (a replica starting, or after a restart).
    pub fn request_full(&mut self) {
        self.full_requested = true;
    }
}
