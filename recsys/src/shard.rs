//! `EmbeddingShard`: one shard of an embedding table as a troupe actor, placed by the scheduler
//! like any other. With a directory it logs every update batch before applying it and writes a
//! checkpoint every few steps, so a restarted shard (its constructor runs again) comes back
//! with exactly the rows it had, and tells replicas to take a full copy from it.

use crate::error::RecsysError;
use crate::table::{
    Delta, EmbeddingTable, RowsExport, ShardFiles, TableConfig, TableStats, UpdateBatch,
};
use std::path::PathBuf;

/// What a shard is made from.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ShardSpec {
    pub config: TableConfig,
    pub shard: u32,
    pub shards: u32,
    /// Checkpoint and update log; `None` keeps the shard in memory only.
    pub dir: Option<PathBuf>,
    /// Steps between checkpoints (the log holds the ones between).
    pub checkpoint_every: u64,
}

/// What a seal froze.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SealSummary {
    pub shard: u32,
    pub version: u64,
    pub rows_changed: u64,
    pub rows_removed: u64,
    pub full: bool,
    pub delta_bytes: u64,
    /// Bytes of every row the shard holds: what a full copy would send.
    pub full_copy_bytes: u64,
}

impl SealSummary {
    pub(crate) fn of(delta: &Delta, table: &EmbeddingTable) -> SealSummary {
        let width = table.config().width() as u64;
        SealSummary {
            shard: delta.shard,
            version: delta.version,
            rows_changed: delta.ids.len() as u64,
            rows_removed: delta.removed.len() as u64,
            full: delta.full,
            delta_bytes: delta.payload_bytes(),
            full_copy_bytes: table.rows() as u64 * (8 + 4 * width),
        }
    }
}

pub struct EmbeddingShard {
    table: EmbeddingTable,
    files: Option<ShardFiles>,
    checkpoint_every: u64,
}

#[troupe::actor]
impl EmbeddingShard {
    pub fn new(spec: ShardSpec) -> Result<Self, RecsysError> {
        let fresh = || EmbeddingTable::new(spec.config.clone(), spec.shard, spec.shards);
        let (files, table) = match &spec.dir {
            Some(dir) => {
                let (files, table, replayed) = ShardFiles::open(dir, fresh)?;
                tracing::info!(
                    shard = table.stats().shard,
                    version = table.version(),
                    rows = table.rows(),
                    replayed,
                    "embedding shard opened"
                );
                (Some(files), table)
            }
            None => (None, fresh()?),
        };
        Ok(EmbeddingShard {
            table,
            files,
            checkpoint_every: spec.checkpoint_every.max(1),
        })
    }

    /// `width` values per id; ids without a row read zeros.
    pub fn lookup(&mut self, ids: Vec<u64>) -> Result<Vec<f32>, RecsysError> {
        self.table.lookup(&ids)
    }

    /// Logs and applies one step's gradients; `false` when the step was applied before.
    pub fn update(&mut self, batch: UpdateBatch) -> Result<bool, RecsysError> {
        self.table.check_batch(&batch)?;
        if self.table.is_stale(batch.step) {
            return Ok(false);
        }
        if let Some(files) = &mut self.files {
            files.log(&batch)?;
        }
        let applied = self.table.apply(&batch)?;
        if let Some(files) = &mut self.files {
            if files.logged_since_checkpoint() >= self.checkpoint_every {
                files.checkpoint(&self.table)?;
            }
        }
        Ok(applied)
    }

    /// Freezes the rows changed since the last seal, at the trainer's step `version`.
    pub fn seal(&mut self, version: u64) -> Result<SealSummary, RecsysError> {
        let delta = self.table.seal(version)?;
        Ok(SealSummary::of(&delta, &self.table))
    }

    /// The seals that take a replica from version `after` to `upto`.
    pub fn changes(&mut self, after: u64, upto: u64) -> Result<Vec<Delta>, RecsysError> {
        Ok(self
            .table
            .changes(after, upto)?
            .into_iter()
            .map(|delta| (*delta).clone())
            .collect())
    }

    pub fn stats(&self) -> TableStats {
        self.table.stats()
    }

    /// Hands over the rows that belong elsewhere in the layout `shard` of `shards`.
    pub fn export_moving(&mut self, shard: u32, shards: u32) -> Result<RowsExport, RecsysError> {
        self.table.export_moving(shard, shards)
    }

    /// Hands over every row (the shard is being retired).
    pub fn export_all(&mut self) -> RowsExport {
        self.table.export_all()
    }

    /// Takes rows handed over by other shards; `synced_at` is the seal every replica holds.
    pub fn import(&mut self, rows: RowsExport, synced_at: u64) -> Result<(), RecsysError> {
        self.table.import(&rows, synced_at)
    }

    /// Writes a checkpoint now (after a layout change, or before a planned stop).
    pub fn checkpoint(&mut self) -> Result<(), RecsysError> {
        match &mut self.files {
            Some(files) => files.checkpoint(&self.table),
            None => Ok(()),
        }
    }
}
