//! Job records on disk: one redb table under the head's data directory, keyed by submission id,
//! holding each job's `JobInfo` as protobuf bytes. Written under the head's state lock whenever a
//! job changes, read once when the head starts, so records survive a restart.

use crate::error::{Error, Result};
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use troupe_proto::JobInfo;

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

    /// Writes the jobs named in `changed` as `jobs` has them now (removing those it lacks), in
    /// one transaction.
    pub(crate) fn write<R>(
        &self,
        changed: &BTreeSet<String>,
        jobs: &BTreeMap<String, R>,
        info_of: impl Fn(&R) -> &JobInfo,
    ) -> Result<()> {
        let write = self
            .db
            .begin_write()
            .map_err(|err| store_error("starting a write", err))?;
        {
            let mut table = write
                .open_table(JOBS)
                .map_err(|err| store_error("opening the table", err))?;
            for id in changed {
                match jobs.get(id) {
                    Some(record) => {
                        let bytes = info_of(record).encode_to_vec();
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
            store.write(&changed, &jobs, |info| info).unwrap();
            jobs.remove("a");
            store.write(&changed, &jobs, |info| info).unwrap();
        }
        let store = JobStore::open(&path).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].submission_id, "b");
        assert_eq!(loaded[0].message, "job b");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
