//! A shard's files: a checkpoint of the whole table and a write-ahead log of the update batches
//! applied since. Each batch is appended (length, CRC-32, encoded batch) before it is applied, so
//! a shard whose process dies is rebuilt exactly by loading the checkpoint and replaying the log;
//! a record torn by the death is detected by its length or checksum, and the log is cut there.
//! Writes go to the operating system without fsync per batch: a process death loses nothing;
//! a machine's power loss may lose the batches logged since the last checkpoint (they are not
//! re-sent: the shard comes back at its checkpoint's step). A checkpoint is written beside,
//! synced and renamed over the old one (the directory synced too), then the log restarts.

use super::{EmbeddingTable, RowsExport, TableConfig, TableStats, UpdateBatch};
use crate::error::RecsysError;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Everything a shard needs to come back: its layout, rows, optimizer state and counts.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct TableState {
    config: TableConfig,
    shard: u32,
    shards: u32,
    version: u64,
    event_time: u64,
    last_sweep: u64,
    /// Every row and every id waiting for admission.
    rows: RowsExport,
    stats: TableStats,
}

impl EmbeddingTable {
    pub fn to_state(&self) -> TableState {
        let all: Vec<(u64, u32)> = self.index.iter().map(|(id, slot)| (*id, *slot)).collect();
        let mut rows = self.copy_rows(&all);
        rows.pending = self.pending.iter().map(|(id, p)| (*id, *p)).collect();
        TableState {
            config: self.config.clone(),
            shard: self.shard,
            shards: self.shards,
            version: self.version,
            event_time: self.event_time,
            last_sweep: self.last_sweep,
            rows,
            stats: self.stats.clone(),
        }
    }

    pub fn from_state(state: TableState) -> Result<EmbeddingTable, RecsysError> {
        let mut table = EmbeddingTable::new(state.config, state.shard, state.shards)?;
        table.import(&state.rows, 0)?;
        table.version = state.version;
        table.event_time = state.event_time;
        table.last_sweep = state.last_sweep;
        table.stats = state.stats;
        Ok(table)
    }
}

/// A shard's checkpoint and update log in one directory.
pub struct ShardFiles {
    dir: PathBuf,
    log: File,
    logged_since_checkpoint: u64,
}

pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RecsysError {
    let path = path.display().to_string();
    move |source| RecsysError::Io { what, path, source }
}

impl ShardFiles {
    fn checkpoint_path(dir: &Path) -> PathBuf {
        dir.join("checkpoint.bin")
    }

    fn log_path(dir: &Path) -> PathBuf {
        dir.join("updates.log")
    }

    /// Opens `dir` (creating it) and rebuilds the table it holds: the checkpoint, then every
    /// logged batch after it. Without a checkpoint, `fresh` makes the starting table. Returns
    /// the table and how many logged batches were replayed.
    pub fn open(
        dir: &Path,
        fresh: impl FnOnce() -> Result<EmbeddingTable, RecsysError>,
    ) -> Result<(ShardFiles, EmbeddingTable, u64), RecsysError> {
        std::fs::create_dir_all(dir).map_err(io("shard directory", dir))?;
        let checkpoint = Self::checkpoint_path(dir);
        let mut recovered = true;
        let mut table = match std::fs::read(&checkpoint) {
            Ok(bytes) => {
                let state: TableState =
                    troupe::codec::decode(&bytes).map_err(|err| RecsysError::Corrupt {
                        what: "checkpoint",
                        path: checkpoint.display().to_string(),
                        why: err.to_string(),
                    })?;
                EmbeddingTable::from_state(state)?
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                recovered = false;
                fresh()?
            }
            Err(err) => return Err(io("checkpoint", &checkpoint)(err)),
        };
        let log_path = Self::log_path(dir);
        let (batches, good_len) = read_log(&log_path)?;
        let mut replayed = 0;
        for batch in &batches {
            if table.apply(batch)? {
                replayed += 1;
            }
        }
        table.stats.replayed_steps += replayed;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io("update log", &log_path))?;
        // A torn last record is cut so appends follow the last whole one.
        if log.metadata().map_err(io("update log", &log_path))?.len() != good_len {
            tracing::warn!(path = %log_path.display(), good_len, "update log ends in a torn record; cut");
            log.set_len(good_len).map_err(io("update log", &log_path))?;
        }
        // A shard that came back has lost its seals: its replicas need a full copy.
        if recovered || !batches.is_empty() {
            table.request_full();
        }
        Ok((
            ShardFiles {
                dir: dir.to_path_buf(),
                log,
                logged_since_checkpoint: batches.len() as u64,
            },
            table,
            replayed,
        ))
    }

    /// Appends a batch to the log (before it is applied).
    pub fn log(&mut self, batch: &UpdateBatch) -> Result<(), RecsysError> {
        let path = Self::log_path(&self.dir);
        let payload = troupe::codec::encode(batch).map_err(|err| RecsysError::Corrupt {
            what: "update batch",
            path: path.display().to_string(),
            why: err.to_string(),
        })?;
        let mut record = Vec::with_capacity(payload.len() + 8);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        self.log
            .write_all(&record)
            .map_err(io("update log", &path))?;
        self.logged_since_checkpoint += 1;
        Ok(())
    }

    pub fn logged_since_checkpoint(&self) -> u64 {
        self.logged_since_checkpoint
    }

    /// Writes a checkpoint of `table` and empties the log.
    pub fn checkpoint(&mut self, table: &EmbeddingTable) -> Result<(), RecsysError> {
        let path = Self::checkpoint_path(&self.dir);
        let bytes =
            troupe::codec::encode(&table.to_state()).map_err(|err| RecsysError::Corrupt {
                what: "checkpoint",
                path: path.display().to_string(),
                why: err.to_string(),
            })?;
        write_atomically(&path, &bytes, "checkpoint")?;
        let log_path = Self::log_path(&self.dir);
        self.log.set_len(0).map_err(io("update log", &log_path))?;
        self.logged_since_checkpoint = 0;
        Ok(())
    }
}

/// Writes `bytes` beside `path`, syncs them and renames them over it: a reader sees the old
/// file or the new one, never half of one.
pub(crate) fn write_atomically(
    path: &Path,
    bytes: &[u8],
    what: &'static str,
) -> Result<(), RecsysError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut file = File::create(&partial).map_err(io(what, &partial))?;
    file.write_all(bytes).map_err(io(what, &partial))?;
    file.sync_all().map_err(io(what, &partial))?;
    std::fs::rename(&partial, path).map_err(io(what, path))?;
    // The rename itself survives a power loss once the directory is synced.
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io(what, dir))?;
    }
    Ok(())
}

/// The whole records of a log and the length they take. A record cut short by the end of the
/// file (a header or a body that does not fit in what remains) is a write torn by a crash and
/// ends the log; a whole record whose checksum or encoding is wrong is corruption and refused,
/// since the records after it were applied.
fn read_log(path: &Path) -> Result<(Vec<UpdateBatch>, u64), RecsysError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(err) => return Err(io("update log", path)(err)),
    };
    let corrupt = |at: usize, why: String| RecsysError::Corrupt {
        what: "update log record",
        path: format!("{} at byte {at}", path.display()),
        why,
    };
    let mut batches = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        // A length past the end, or a zero length (no batch encodes to nothing: zeros left by a
        // power loss), is a torn tail.
        if len == 0 || len > bytes.len() - at - 8 {
            break;
        }
        let payload = &bytes[at + 8..at + 8 + len];
        if crc32fast::hash(payload) != crc {
            return Err(corrupt(
                at,
                "checksum mismatch in a whole record".to_string(),
            ));
        }
        let batch = troupe::codec::decode::<UpdateBatch>(payload)
            .map_err(|err| corrupt(at, err.to_string()))?;
        batches.push(batch);
        at += 8 + len;
    }
    Ok((batches, at as u64))
}
