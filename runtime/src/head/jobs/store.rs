//! Job records on disk: one redb table under the head's data directory, keyed by submission id,
//! holding each job's `JobInfo` as protobuf bytes. The head hands every change, in order, to a
//! writer thread that commits them (batched, fsync'd) off the state lock; they are read once when
//! the head starts, so records survive a restart.

use crate::error::{Error, Result};
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use troupe_proto::JobInfo;

/// One change: a job's id and its record, or `None` when it was deleted.
pub(crate) type Change = (String, Option<Vec<u8>>);

/// The changes to `changed` as `jobs` has them now.
pub(crate) fn changes<R>(
    changed: &BTreeSet<String>,
    jobs: &BTreeMap<String, R>,
    info_of: impl Fn(&R) -> &JobInfo,
) -> Vec<Change> {
    changed
        .iter()
        .map(|id| {
            (
                id.clone(),
                jobs.get(id).map(|record| info_of(record).encode_to_vec()),
            )
        })
        .collect()
}

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

pub(crate) struct JobStore {
    db: Database,
}

fn store_error(context: &str, err: impl std::fmt::Display) -> Error {
    Error::io(
        format!("job records: {context}"),
        std::io::Error::other(err.to_string()),
    )
}

impl JobStore {
    /// Opens (or creates) the record file.
    pub(crate) fn open(path: &Path) -> Result<JobStore> {
        let db = Database::create(path)
            .map_err(|err| store_error(&format!("opening {}", path.display()), err))?;
        let write = db
            .begin_write()
            .map_err(|err| store_error("starting a write", err))?;
        write
            .open_table(JOBS)
            .map_err(|err| store_error("creating the table", err))?;
        write
            .commit()
            .map_err(|err| store_error("committing", err))?;
        Ok(JobStore { db })
    }

    /// Every stored job. A record that does not decode is skipped with a warning.
    pub(crate) fn load(&self) -> Result<Vec<JobInfo>> {
        let read = self
            .db
            .begin_read()
            .map_err(|err| store_error("starting a read", err))?;
        let table = read
            .open_table(JOBS)
            .map_err(|err| store_error("opening the table", err))?;
        let mut jobs = Vec::new();
        for row in table.iter().map_err(|err| store_error("reading", err))? {
            let (key, value) = row.map_err(|err| store_error("reading", err))?;
            match JobInfo::decode(value.value()) {
                Ok(info) => jobs.push(info),
                Err(err) => {
                    tracing::warn!(job = key.value(), %err, "skipping a job record that does not decode")
                }
            }
        }
        Ok(jobs)
    }

    /// Writes changes in one transaction.
    pub(crate) fn write(&self, changes: &[Change]) -> Result<()> {
        let write = self
            .db
            .begin_write()
            .map_err(|err| store_error("starting a write", err))?;
        {
            let mut table = write
                .open_table(JOBS)
                .map_err(|err| store_error("opening the table", err))?;
            for (id, record) in changes {
                match record {
                    Some(bytes) => {
                        table
                            .insert(id.as_str(), bytes.as_slice())
                            .map_err(|err| store_error("writing", err))?;
                    }
                    None => {
                        table
                            .remove(id.as_str())
                            .map_err(|err| store_error("removing", err))?;
                    }
                }
            }
        }
        write
            .commit()
            .map_err(|err| store_error("committing", err))?;
        Ok(())
    }

    /// Moves the store to a writer thread; changes sent to the returned writer are committed in
    /// the order they were sent, as many at a time as have queued up.
    pub(crate) fn into_writer(self) -> Result<JobWriter> {
        let (sender, receiver) = std::sync::mpsc::channel::<(u64, Vec<Change>)>();
        let (committed, _) = tokio::sync::watch::channel(0_u64);
        let report = committed.clone();
        std::thread::Builder::new()
            .name("troupe-job-store".to_string())
            .spawn(move || {
                while let Ok((mut upto, mut batch)) = receiver.recv() {
                    while let Ok((more_upto, more)) = receiver.try_recv() {
                        upto = more_upto;
                        batch.extend(more);
                    }
                    if let Err(err) = self.write(&batch) {
                        tracing::error!(%err, "could not write job records");
                    }
                    // Waiters go on either way: a failed write is logged, not retried.
                    report.send_replace(upto);
                }
            })
            .map_err(|err| Error::io("starting the job record writer", err))?;
        Ok(JobWriter {
            sender,
            queued: std::sync::atomic::AtomicU64::new(0),
            committed,
        })
    }
}

/// Hands changes to the writer thread without waiting for the disk; `durable` waits for what
/// was handed over so far to be on disk.
pub(crate) struct JobWriter {
    sender: std::sync::mpsc::Sender<(u64, Vec<Change>)>,
    /// Sequence number of the last batch handed over.
    queued: std::sync::atomic::AtomicU64,
    /// Sequence number of the last batch committed.
    committed: tokio::sync::watch::Sender<u64>,
}

/// Longest `durable` waits for the disk.
const DURABLE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

impl JobWriter {
    /// Queues changes (call under the state lock, so batches keep the order of the changes).
    pub(crate) fn send(&self, changes: Vec<Change>) {
        let upto = self
            .queued
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if self.sender.send((upto, changes)).is_err() {
            tracing::error!("the job record writer is gone: records are not saved");
        }
    }

    /// Waits until every change queued so far is committed (at most 10 s; a slower disk is
    /// logged and not waited for).
    pub(crate) async fn durable(&self) {
        let wanted = self.queued.load(std::sync::atomic::Ordering::SeqCst);
        let mut committed = self.committed.subscribe();
        let reached =
            tokio::time::timeout(DURABLE_PATIENCE, committed.wait_for(|done| *done >= wanted))
                .await;
        if reached.is_err() {
            tracing::warn!("job records not on disk after 10 s; going on");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_deletions_stick() {
        let dir = std::env::temp_dir().join(format!("troupe-jobstore-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jobs.redb");
        let mut jobs = BTreeMap::new();
        for id in ["a", "b"] {
            jobs.insert(
                id.to_string(),
                JobInfo {
                    submission_id: id.to_string(),
                    message: format!("job {id}"),
                    ..JobInfo::default()
                },
            );
        }
        let changed: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        {
            let store = JobStore::open(&path).unwrap();
            store.write(&changes(&changed, &jobs, |info| info)).unwrap();
            jobs.remove("a");
            store.write(&changes(&changed, &jobs, |info| info)).unwrap();
        }
        let store = JobStore::open(&path).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].submission_id, "b");
        assert_eq!(loaded[0].message, "job b");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
