//! Job logs on the head's disk: one file per job under `data_dir/jobs/logs`, appended at the
//! offsets node agents send (a repeated or overlapping append is absorbed, a gap is answered with
//! what the head holds so the agent resends from there), read by offset, and their last lines.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Mutex;

pub(crate) struct LogFiles {
    dir: PathBuf,
    /// Appends and removals one at a time.
    writing: Mutex<()>,
}

impl LogFiles {
    pub(crate) fn open(dir: PathBuf) -> std::io::Result<LogFiles> {
        std::fs::create_dir_all(&dir)?;
        Ok(LogFiles {
            dir,
            writing: Mutex::new(()),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Bytes held for `id`.
    pub(crate) fn len(&self, id: &str) -> u64 {
        std::fs::metadata(self.path(id))
            .map(|meta| meta.len())
            .unwrap_or(0)
    }

    /// Writes `data`, which belongs at `offset`, and returns how many bytes the log holds after.
    pub(crate) fn append_at(&self, id: &str, offset: u64, data: &[u8]) -> std::io::Result<u64> {
        let _one = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(id))?;
        let held = file.metadata()?.len();
        let end = offset.saturating_add(data.len() as u64);
        if offset > held || end <= held {
            return Ok(held);
        }
        let skip = (held - offset) as usize;
        file.write_all(&data[skip..])?;
        Ok(end)
    }

    /// Up to `max` bytes from `offset`.
    pub(crate) fn read(&self, id: &str, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
        let mut file = match std::fs::File::open(self.path(id)) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut data = Vec::with_capacity(max.min(1 << 20));
        file.take(max as u64).read_to_end(&mut data)?;
        Ok(data)
    }

    /// The last `lines` lines (from at most the last 8 KiB).
    pub(crate) fn tail(&self, id: &str, lines: usize) -> String {
        crate::node::log_tail(&self.path(id), lines)
    }

    pub(crate) fn remove(&self, id: &str) {
        let _one = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = std::fs::remove_file(self.path(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_absorb_repeats_and_report_gaps() {
        let dir = std::env::temp_dir().join(format!("troupe-logs-{}", uuid::Uuid::new_v4()));
        let logs = LogFiles::open(dir.clone()).unwrap();
        assert_eq!(logs.append_at("j", 0, b"hello ").unwrap(), 6);
        assert_eq!(
            logs.append_at("j", 0, b"hello ").unwrap(),
            6,
            "a repeat changes nothing"
        );
        assert_eq!(
            logs.append_at("j", 3, b"lo world").unwrap(),
            11,
            "an overlap adds the new part"
        );
        assert_eq!(
            logs.append_at("j", 20, b"late").unwrap(),
            11,
            "a gap answers what is held"
        );
        assert_eq!(logs.read("j", 0, 100).unwrap(), b"hello world");
        assert_eq!(logs.read("j", 6, 3).unwrap(), b"wor");
        assert_eq!(logs.read("missing", 0, 10).unwrap(), b"");
        assert_eq!(logs.tail("j", 1), "hello world");
        logs.remove("j");
        assert_eq!(logs.len("j"), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
