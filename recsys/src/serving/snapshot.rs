//! What a serving replica answers from: one consistent version of every row and of the dense
//! parameters. A sync never changes the snapshot requests are reading: it builds the next one
//! and swaps it in whole (an `Arc` behind a lock held only to clone or replace it). To avoid
//! copying every row each sync the replica keeps two snapshots, live and standby: the standby
//! (the version before) catches up by replaying the deltas it missed, takes the new ones, and
//! becomes live; the old live one becomes the standby once no request holds it (else it is
//! dropped and the next sync starts from a copy).

use crate::features::shard_of;
use crate::model::{DenseParams, RowSource};
use crate::table::Delta;
use rustc_hash::FxHashMap;
use std::sync::{Arc, RwLock};

/// One served version.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    /// The shard count the rows were laid out in (a full copy from shard s replaces the rows
    /// that jump hashing puts on s).
    pub shards: u32,
    pub rows: FxHashMap<u64, Box<[f32]>>,
    pub dense: Option<Arc<DenseParams>>,
    /// When this version became the one served (microseconds since the Unix epoch).
    pub live_since_unix_us: u64,
}

impl RowSource for Snapshot {
    fn get(&self, id: u64) -> Option<&[f32]> {
        self.rows.get(&id).map(|row| &row[..])
    }
}

impl Snapshot {
    fn apply(&mut self, delta: &Delta, shards: u32) {
        if delta.full {
            self.rows
                .retain(|id, _| shard_of(*id, shards) != delta.shard);
        }
        for id in &delta.removed {
            self.rows.remove(id);
        }
        let width = if delta.ids.is_empty() {
            0
        } else {
            delta.values.len() / delta.ids.len()
        };
        for (row, &id) in delta.ids.iter().enumerate() {
            let values = &delta.values[row * width..(row + 1) * width];
            match self.rows.get_mut(&id) {
                Some(existing) if existing.len() == width => existing.copy_from_slice(values),
                _ => {
                    self.rows.insert(id, values.into());
                }
            }
        }
    }
}

/// The next version: its deltas (in order, every shard's), dense parameters and layout.
#[derive(Clone)]
pub struct Update {
    pub version: u64,
    pub shards: u32,
    pub deltas: Vec<Arc<Delta>>,
    pub dense: Arc<DenseParams>,
}

impl Update {
    fn apply_to(&self, snapshot: &mut Snapshot) {
        for delta in &self.deltas {
            snapshot.apply(delta, self.shards);
        }
        snapshot.version = self.version;
        snapshot.shards = self.shards;
        snapshot.dense = Some(self.dense.clone());
    }
}

/// The live snapshot, shared with the request handlers, and the standby.
pub struct Versions {
    live: Arc<RwLock<Arc<Snapshot>>>,
    standby: Option<Snapshot>,
    /// The update the standby has not seen (the one that made the live snapshot).
    missed: Option<Update>,
}

impl Default for Versions {
    fn default() -> Self {
        Versions {
            live: Arc::new(RwLock::new(Arc::new(Snapshot::default()))),
            standby: None,
            missed: None,
        }
    }
}

impl Versions {
    /// What the request handlers read.
    pub fn shared(&self) -> Arc<RwLock<Arc<Snapshot>>> {
        self.live.clone()
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.live.read().expect("live snapshot").clone()
    }

    /// Builds the next version and makes it live; returns when it went live.
    pub fn install(&mut self, update: Update) -> u64 {
        let mut next = match (self.standby.take(), self.missed.take()) {
            (Some(mut standby), Some(missed)) => {
                missed.apply_to(&mut standby);
                standby
            }
            _ => (*self.current()).clone(),
        };
        update.apply_to(&mut next);
        let live_since = crate::unix_micros();
        next.live_since_unix_us = live_since;
        let old = std::mem::replace(
            &mut *self.live.write().expect("live snapshot"),
            Arc::new(next),
        );
        if let Ok(old) = Arc::try_unwrap(old) {
            self.standby = Some(old);
            self.missed = Some(update);
        }
        live_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelShape;

    fn dense() -> Arc<DenseParams> {
        Arc::new(DenseParams::init(
            ModelShape {
                fields: 1,
                dim: 1,
                hidden: 1,
            },
            1,
        ))
    }

    fn delta(
        shard: u32,
        after: u64,
        version: u64,
        rows: &[(u64, f32)],
        removed: &[u64],
    ) -> Arc<Delta> {
        Arc::new(Delta {
            shard,
            after,
            version,
            full: false,
            ids: rows.iter().map(|(id, _)| *id).collect(),
            values: rows.iter().flat_map(|(_, v)| [*v, *v]).collect(),
            removed: removed.to_vec(),
        })
    }

    #[test]
    fn a_held_snapshot_never_changes_and_the_standby_catches_up() {
        let mut versions = Versions::default();
        let update = |version, deltas| Update {
            version,
            shards: 1,
            deltas,
            dense: dense(),
        };
        versions.install(update(1, vec![delta(0, 0, 1, &[(1, 1.0), (2, 2.0)], &[])]));
        let held = versions.current();
        versions.install(update(2, vec![delta(0, 1, 2, &[(1, 5.0)], &[2])]));
        // A request that held version 1 still reads version 1.
        assert_eq!(held.version, 1);
        assert_eq!(held.get(1).unwrap()[0], 1.0);
        assert_eq!(held.get(2).unwrap()[0], 2.0);
        drop(held);
        versions.install(update(3, vec![delta(0, 2, 3, &[(3, 3.0)], &[])]));
        versions.install(update(4, vec![delta(0, 3, 4, &[(1, 7.0)], &[])]));
        let now = versions.current();
        assert_eq!(now.version, 4);
        assert_eq!(now.get(1).unwrap()[0], 7.0);
        assert!(now.get(2).is_none());
        assert_eq!(now.get(3).unwrap()[0], 3.0);
        // The standby (version 3) caught up by replaying what it missed.
        let standby = versions.standby.as_ref().unwrap();
        assert_eq!(standby.version, 3);
        assert_eq!(standby.get(1).unwrap()[0], 5.0);
        assert_eq!(standby.get(3).unwrap()[0], 3.0);
    }

    #[test]
    fn a_full_copy_replaces_only_its_shards_rows() {
        let ids: Vec<u64> = (0..50).collect();
        let mut snapshot = Snapshot::default();
        let all: Vec<(u64, f32)> = ids.iter().map(|id| (*id, 1.0)).collect();
        snapshot.apply(&delta(0, 0, 1, &all, &[]), 2);
        let on_shard_1: Vec<(u64, f32)> = ids
            .iter()
            .filter(|id| shard_of(**id, 2) == 1)
            .take(3)
            .map(|id| (*id, 9.0))
            .collect();
        let mut full = (*delta(1, 0, 2, &on_shard_1, &[])).clone();
        full.full = true;
        snapshot.apply(&full, 2);
        let shard_0 = ids.iter().filter(|id| shard_of(**id, 2) == 0).count();
        assert_eq!(snapshot.rows.len(), shard_0 + 3);
        assert_eq!(snapshot.get(on_shard_1[0].0).unwrap()[0], 9.0);
    }
}
