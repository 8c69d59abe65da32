//! Moving rows between shards when the shard count changes: each shard hands over the rows (and
//! the admission counts of ids without rows) that jump hashing now places elsewhere, with their
//! optimizer state, and the receiving shard takes them as they are. Rows that move are not
//! changes: a replica already holds their values.

use super::{EmbeddingTable, Pending};
use crate::error::RecsysError;
use crate::features::shard_of;

/// Rows leaving a shard, with everything that makes them the same rows elsewhere.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RowsExport {
    pub ids: Vec<u64>,
    pub values: Vec<f32>,
    pub accum: Vec<f32>,
    pub last_seen: Vec<u64>,
    pub changed_at: Vec<u64>,
    pub(crate) pending: Vec<(u64, Pending)>,
}

impl RowsExport {
    /// The part of the export that belongs to shard `to` of `shards`.
    pub fn for_shard(&self, to: u32, shards: u32, width: usize) -> RowsExport {
        let mut part = RowsExport::default();
        for (row, &id) in self.ids.iter().enumerate() {
            if shard_of(id, shards) == to {
                part.ids.push(id);
                part.values
                    .extend_from_slice(&self.values[row * width..(row + 1) * width]);
                part.accum
                    .extend_from_slice(&self.accum[row * width..(row + 1) * width]);
                part.last_seen.push(self.last_seen[row]);
                part.changed_at.push(self.changed_at[row]);
            }
        }
        part.pending = self
            .pending
            .iter()
            .filter(|(id, _)| shard_of(*id, shards) == to)
            .copied()
            .collect();
        part
    }

    /// Adds another export's rows.
    pub fn append(&mut self, other: RowsExport) {
        self.ids.extend(other.ids);
        self.values.extend(other.values);
        self.accum.extend(other.accum);
        self.last_seen.extend(other.last_seen);
        self.changed_at.extend(other.changed_at);
        self.pending.extend(other.pending);
    }
}

impl EmbeddingTable {
    /// Takes out the rows and pending ids that belong elsewhere among `shards`, and becomes
    /// shard `shard` of `shards`.
    pub fn export_moving(&mut self, shard: u32, shards: u32) -> Result<RowsExport, RecsysError> {
        if shards == 0 || shard >= shards {
            return Err(RecsysError::BadBatch(format!(
                "a new layout needs shard < shards (shard {shard} of {shards})"
            )));
        }
        let export = self.export_where(|id| shard_of(id, shards) != shard);
        self.shard = shard;
        self.shards = shards;
        Ok(export)
    }

    /// Takes out every row and pending id (a shard being retired).
    pub fn export_all(&mut self) -> RowsExport {
        self.export_where(|_| true)
    }

    fn export_where(&mut self, leaves: impl Fn(u64) -> bool) -> RowsExport {
        let moving: Vec<(u64, u32)> = self
            .index
            .iter()
            .filter(|(id, _)| leaves(**id))
            .map(|(id, slot)| (*id, *slot))
            .collect();
        let mut export = self.copy_rows(&moving);
        for (_, slot) in moving {
            self.remove_slot(slot);
        }
        let pending_moving: Vec<u64> = self
            .pending
            .keys()
            .filter(|id| leaves(**id))
            .copied()
            .collect();
        for id in pending_moving {
            if let Some(pending) = self.pending.remove(&id) {
                export.pending.push((id, pending));
            }
        }
        export
    }

    /// A copy of the rows in `slots` (id, slot), with everything that makes them the same rows
    /// elsewhere; no pending ids.
    pub(crate) fn copy_rows(&self, slots: &[(u64, u32)]) -> RowsExport {
        let width = self.config.width();
        let mut rows = RowsExport::default();
        for &(id, slot) in slots {
            let span = slot as usize * width..(slot as usize + 1) * width;
            rows.ids.push(id);
            rows.values.extend_from_slice(&self.values[span.clone()]);
            rows.accum.extend_from_slice(&self.accum[span]);
            let meta = self.meta[slot as usize];
            rows.last_seen.push(meta.last_seen);
            rows.changed_at.push(meta.changed_at);
        }
        rows
    }

    /// Takes rows handed over by other shards (already in this shard's layout). `synced_at` is
    /// the seal every replica holds (the driver seals and syncs before moving rows): the shard
    /// counts as sealed there, so rows unchanged since are not sent again and a new shard's
    /// first seal follows on from it.
    pub fn import(&mut self, rows: &RowsExport, synced_at: u64) -> Result<(), RecsysError> {
        if synced_at > self.sealed_version {
            self.sealed_version = synced_at;
            self.dirty
                .retain(|slot| self.meta[*slot as usize].changed_at > synced_at);
        }
        self.version = self.version.max(synced_at);
        let width = self.config.width();
        let count = rows.ids.len();
        if rows.values.len() != count * width
            || rows.accum.len() != count * width
            || rows.last_seen.len() != count
            || rows.changed_at.len() != count
        {
            return Err(RecsysError::BadBatch(format!(
                "an import of {count} rows needs {} values and accumulators and {count} times",
                count * width
            )));
        }
        self.check_ids(&rows.ids)?;
        for (row, &id) in rows.ids.iter().enumerate() {
            if self.index.contains_key(&id) {
                return Err(RecsysError::BadFeature {
                    id,
                    why: format!("imported into shard {}, which holds it already", self.shard),
                });
            }
            let span = row * width..(row + 1) * width;
            self.insert_row(
                id,
                &rows.values[span.clone()],
                Some(&rows.accum[span]),
                rows.last_seen[row],
                rows.changed_at[row],
            );
        }
        for (id, pending) in &rows.pending {
            self.pending.insert(*id, *pending);
        }
        Ok(())
    }
}
