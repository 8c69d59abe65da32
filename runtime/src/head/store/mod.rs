//! The head's durable state: one redb file, `state.redb`, under its data directory, with a
//! table per kind of record (jobs, actors, placement groups, scheduler holders, nodes, the
//! key-value store) and a `meta` table naming the format. Records are opaque bytes here; the
//! state machine encodes and decodes them (`state/durable.rs`). The file is read once when the
//! head starts; afterwards `writer.rs` commits every change, in order, off the state lock.

mod writer;

pub(crate) use writer::StateWriter;

use crate::error::{Error, Result};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The kinds of records, one redb table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Table {
    Jobs,
    Actors,
    Groups,
    Holders,
    Nodes,
    Kv,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Jobs,
        Table::Actors,
        Table::Groups,
        Table::Holders,
        Table::Nodes,
        Table::Kv,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Jobs => "jobs",
            Table::Actors => "actors",
            Table::Groups => "groups",
            Table::Holders => "holders",
            Table::Nodes => "nodes",
            Table::Kv => "kv",
        }
    }

    fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

/// One change: a record's new bytes, or `None` when it was removed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    pub table: Table,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// Every record read back when the head starts, by table, in key order.
pub(crate) type Snapshot = BTreeMap<Table, Vec<(String, Vec<u8>)>>;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format";
const EPOCH_KEY: &str = "epoch_unix_ms";
/// Bumped whenever a record's encoding changes in a way older heads cannot read.
pub(crate) const FORMAT: &str = "troupe-head-state/2";
/// The file name under the data directory.
pub(crate) const FILE_NAME: &str = "state.redb";
/// Job records of heads before the durable control plane (format 0), moved in on first start.
const OLD_JOBS_FILE: &str = "jobs.redb";

pub(crate) struct StateStore {
    db: Database,
    path: PathBuf,
}

fn store_error(path: &Path, context: &str, err: impl std::fmt::Display) -> Error {
    Error::io(
        format!("the head's state in {}: {context}", path.display()),
        std::io::Error::other(err.to_string()),
    )
}

impl StateStore {
    /// Opens (or creates) `data_dir/state.redb`, refusing a file of another format or one redb
    /// cannot read, and moves in the job records of an older head's `jobs.redb`.
    pub(crate) fn open(data_dir: &Path) -> Result<StateStore> {
        let path = data_dir.join(FILE_NAME);
        let existed = path.exists();
        let db = Database::create(&path).map_err(|err| Error::Invalid {
            what: format!("head state file {}", path.display()),
            why: match err {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "another head (or process) has it open: two heads cannot share a data \
                     directory. Stop the other head, or give this one its own --data-dir"
                        .to_string()
                }
                err => format!(
                    "redb cannot open it ({err}). It is damaged or not a troupe state file. \
                     Restore it from a backup, or move it aside to start the head with an empty \
                     cluster (every actor, placement group, name and job it recorded is then \
                     forgotten)"
                ),
            },
        })?;
        let store = StateStore { db, path };
        store.check_or_write_format(existed)?;
        store.migrate_old_jobs(data_dir)?;
        Ok(store)
    }

    fn check_or_write_format(&self, existed: bool) -> Result<()> {
        let found = {
            let read = self
                .db
                .begin_read()
                .map_err(|err| store_error(&self.path, "starting a read", err))?;
            match read.open_table(META) {
                Ok(table) => table
                    .get(FORMAT_KEY)
                    .map_err(|err| store_error(&self.path, "reading the format", err))?
                    .map(|value| String::from_utf8_lossy(value.value()).into_owned()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(err) => return Err(store_error(&self.path, "opening the meta table", err)),
            }
        };
        match found {
            Some(format) if format == FORMAT => Ok(()),
            Some(format) => Err(Error::Invalid {
                what: format!("head state file {}", self.path.display()),
                why: format!(
                    "it was written in format `{format}`, and this head reads `{FORMAT}`. Start \
                     the troupe version that wrote it, or give this head a fresh --data-dir"
                ),
            }),
            None if existed && self.has_records()? => Err(Error::Invalid {
                what: format!("head state file {}", self.path.display()),
                why: "it holds records but names no format (it was not written by a troupe head, \
                      or its first write was cut short). Move it aside to start with an empty \
                      cluster"
                    .to_string(),
            }),
            None => self.put_meta(FORMAT_KEY, FORMAT.as_bytes(), true),
        }
    }

    /// Writes one `meta` entry (and, with `create_tables`, every table, so a new file has them).
    fn put_meta(&self, key: &str, value: &[u8], create_tables: bool) -> Result<()> {
        let write = self
            .db
            .begin_write()
            .map_err(|err| store_error(&self.path, "starting a write", err))?;
        {
            let mut meta = write
                .open_table(META)
                .map_err(|err| store_error(&self.path, "opening the meta table", err))?;
            meta.insert(key, value)
                .map_err(|err| store_error(&self.path, &format!("writing `{key}`"), err))?;
            if create_tables {
                for table in Table::ALL {
                    write
                        .open_table(table.definition())
                        .map_err(|err| store_error(&self.path, "creating a table", err))?;
                }
            }
        }
        write
            .commit()
            .map_err(|err| store_error(&self.path, "committing", err))
    }

    fn has_records(&self) -> Result<bool> {
        let read = self
            .db
            .begin_read()
            .map_err(|err| store_error(&self.path, "starting a read", err))?;
        for table in Table::ALL {
            match read.open_table(table.definition()) {
                Ok(open) => {
                    if open
                        .len()
                        .map_err(|err| store_error(&self.path, "counting records", err))?
                        > 0
                    {
                        return Ok(true);
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(err) => return Err(store_error(&self.path, "opening a table", err)),
            }
        }
        Ok(false)
    }

    /// Moves the job records of a head that kept only jobs (in `jobs.redb`) into this file, then
    /// renames the old file so it is not read twice.
    fn migrate_old_jobs(&self, data_dir: &Path) -> Result<()> {
        let old_path = data_dir.join(OLD_JOBS_FILE);
        if !old_path.exists() {
            return Ok(());
        }
        let rows = {
            let old = Database::open(&old_path).map_err(|err| Error::Invalid {
                what: format!("old job records {}", old_path.display()),
                why: format!(
                    "redb cannot open them ({err}); move the file aside to go on without them"
                ),
            })?;
            let read = old
                .begin_read()
                .map_err(|err| store_error(&old_path, "starting a read", err))?;
            let mut rows = Vec::new();
            match read.open_table(Table::Jobs.definition()) {
                Ok(table) => {
                    for row in table
                        .iter()
                        .map_err(|err| store_error(&old_path, "reading", err))?
                    {
                        let (key, value) =
                            row.map_err(|err| store_error(&old_path, "reading", err))?;
                        rows.push(Change {
                            table: Table::Jobs,
                            key: key.value().to_string(),
                            value: Some(value.value().to_vec()),
                        });
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(err) => return Err(store_error(&old_path, "opening the jobs table", err)),
            }
            rows
        };
        self.write(&rows)?;
        let moved = old_path.with_extension("redb.migrated");
        std::fs::rename(&old_path, &moved)
            .map_err(|err| Error::io(format!("renaming {}", old_path.display()), err))?;
        tracing::info!(
            jobs = rows.len(),
            from = %old_path.display(),
            "moved job records of an older head into {FILE_NAME}"
        );
        Ok(())
    }

    /// When this data directory's cluster began, in wall-clock milliseconds (written at the first
    /// start), so the scheduler's clock (how long work has held its resources) goes on across
    /// restarts.
    pub(crate) fn epoch_unix_ms(&self) -> Result<u64> {
        let read = self
            .db
            .begin_read()
            .map_err(|err| store_error(&self.path, "starting a read", err))?;
        let meta = read
            .open_table(META)
            .map_err(|err| store_error(&self.path, "opening the meta table", err))?;
        if let Some(value) = meta
            .get(EPOCH_KEY)
            .map_err(|err| store_error(&self.path, "reading the epoch", err))?
        {
            let bytes: [u8; 8] = value.value().try_into().map_err(|_| Error::Invalid {
                what: format!("head state file {}", self.path.display()),
                why: "its epoch record is not 8 bytes: the file is damaged".to_string(),
            })?;
            return Ok(u64::from_le_bytes(bytes));
        }
        drop(meta);
        drop(read);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or(0);
        self.put_meta(EPOCH_KEY, &now.to_le_bytes(), false)?;
        Ok(now)
    }

    /// Every record, by table.
    pub(crate) fn load(&self) -> Result<Snapshot> {
        let read = self
            .db
            .begin_read()
            .map_err(|err| store_error(&self.path, "starting a read", err))?;
        let mut snapshot = Snapshot::new();
        for table in Table::ALL {
            let open = read
                .open_table(table.definition())
                .map_err(|err| store_error(&self.path, "opening a table", err))?;
            let mut rows = Vec::new();
            for row in open
                .iter()
                .map_err(|err| store_error(&self.path, "reading", err))?
            {
                let (key, value) = row.map_err(|err| store_error(&self.path, "reading", err))?;
                rows.push((key.value().to_string(), value.value().to_vec()));
            }
            snapshot.insert(table, rows);
        }
        Ok(snapshot)
    }

    /// Writes changes in one transaction (fsync'd on commit).
    pub(crate) fn write(&self, changes: &[Change]) -> Result<()> {
        let write = self
            .db
            .begin_write()
            .map_err(|err| store_error(&self.path, "starting a write", err))?;
        {
            let mut tables = BTreeMap::new();
            for change in changes {
                let table = match tables.entry(change.table) {
                    std::collections::btree_map::Entry::Occupied(open) => open.into_mut(),
                    std::collections::btree_map::Entry::Vacant(slot) => slot.insert(
                        write
                            .open_table(change.table.definition())
                            .map_err(|err| store_error(&self.path, "opening a table", err))?,
                    ),
                };
                match &change.value {
                    Some(bytes) => {
                        table
                            .insert(change.key.as_str(), bytes.as_slice())
                            .map_err(|err| store_error(&self.path, "writing", err))?;
                    }
                    None => {
                        table
                            .remove(change.key.as_str())
                            .map_err(|err| store_error(&self.path, "removing", err))?;
                    }
                }
            }
        }
        write
            .commit()
            .map_err(|err| store_error(&self.path, "committing", err))
    }
}

#[cfg(test)]
mod tests;
