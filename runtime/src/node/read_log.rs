//! Reading a worker's log for `ReadWorkerLog`: a byte range from the start or from the end,
//! capped at `MAX_READ`, with the file's size; a missing file is NOT_FOUND naming it.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use tonic::Status;
use troupe_proto::{LogChunk, ReadWorkerLogRequest};

/// Most bytes one read returns.
pub(crate) const MAX_READ: u64 = 1 << 20;

pub(super) fn read(path: &Path, request: &ReadWorkerLogRequest) -> Result<LogChunk, Status> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(Status::not_found(format!(
                "this node has no log of incarnation {} of actor {} (it never started here, or \
                 its log was removed)",
                request.incarnation, request.actor_id
            )))
        }
        Err(err) => {
            return Err(Status::internal(format!(
                "opening {}: {err}",
                path.display()
            )))
        }
    };
    let size = file
        .metadata()
        .map_err(|err| Status::internal(format!("reading {}: {err}", path.display())))?
        .len();
    let start = if request.from_end {
        size.saturating_sub(request.offset)
    } else {
        request.offset.min(size)
    };
    let wanted = match request.max_bytes {
        0 => MAX_READ,
        max => max.min(MAX_READ),
    };
    file.seek(SeekFrom::Start(start))
        .map_err(|err| Status::internal(format!("reading {}: {err}", path.display())))?;
    let mut data = Vec::with_capacity(wanted.min(size - start) as usize);
    file.take(wanted)
        .read_to_end(&mut data)
        .map_err(|err| Status::internal(format!("reading {}: {err}", path.display())))?;
    Ok(LogChunk {
        offset: start,
        next_offset: start + data.len() as u64,
        data: data.into(),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ranges_from_either_end_and_names_a_missing_log() {
        let dir = std::env::temp_dir().join(format!("troupe-readlog-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a-1.log");
        std::fs::write(&path, b"0123456789").unwrap();
        let request = |offset, from_end, max_bytes| ReadWorkerLogRequest {
            actor_id: "a".into(),
            incarnation: 1,
            offset,
            from_end,
            max_bytes,
        };
        let chunk = read(&path, &request(2, false, 3)).unwrap();
        assert_eq!(
            (&chunk.data[..], chunk.offset, chunk.next_offset, chunk.size),
            (&b"234"[..], 2, 5, 10)
        );
        let chunk = read(&path, &request(4, true, 0)).unwrap();
        assert_eq!((&chunk.data[..], chunk.offset), (&b"6789"[..], 6));
        let chunk = read(&path, &request(99, false, 0)).unwrap();
        assert!(chunk.data.is_empty() && chunk.offset == 10);
        let chunk = read(&path, &request(99, true, 0)).unwrap();
        assert_eq!(chunk.data.len(), 10);
        let err = read(&dir.join("b-1.log"), &request(0, false, 0)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(
            err.message().contains("incarnation 1 of actor a"),
            "{}",
            err.message()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
