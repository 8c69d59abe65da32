//! Capturing a worker's output: its stdout and stderr come through pipes, and each line is
//! appended to the worker's log file as one record stamped with the time it was read (see
//! `crate::logs`). A line longer than `MAX_LINE` is cut into records; a last line without an end
//! is written when the pipe closes. The capture ends when both pipes close (the worker and
//! everything it started are gone), which is what the exit report waits for, so the death reason
//! quotes the worker's last words.

use crate::logs::{unix_ms_now, write_record, Stream};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;

/// Longest record; longer lines are cut.
const MAX_LINE: usize = 64 << 10;

/// Copies `stdout` and `stderr` into `log` as records; the receiver fires once both are done.
pub(crate) fn capture(
    stdout: impl AsyncRead + Unpin + Send + 'static,
    stderr: impl AsyncRead + Unpin + Send + 'static,
    log: std::fs::File,
) -> oneshot::Receiver<()> {
    let log = Arc::new(Mutex::new(log));
    let (done, finished) = oneshot::channel();
    let out = tokio::spawn(copy_lines(stdout, Stream::Stdout, log.clone()));
    let err = tokio::spawn(copy_lines(stderr, Stream::Stderr, log));
    tokio::spawn(async move {
        let _ = out.await;
        let _ = err.await;
        let _ = done.send(());
    });
    finished
}

async fn copy_lines(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    log: Arc<Mutex<std::fs::File>>,
) {
    let mut pending: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let read = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        pending.extend_from_slice(&chunk[..read]);
        let mut records = Vec::new();
        let now = unix_ms_now();
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|byte| *byte == b'\n') {
            write_record(&mut records, now, stream, &pending[start..start + end]);
            start += end + 1;
        }
        while pending.len() - start >= MAX_LINE {
            write_record(&mut records, now, stream, &pending[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        pending.drain(..start);
        append(&log, &records);
    }
    if !pending.is_empty() {
        let mut records = Vec::new();
        write_record(&mut records, unix_ms_now(), stream, &pending);
        append(&log, &records);
    }
}

fn append(log: &Mutex<std::fs::File>, records: &[u8]) {
    if records.is_empty() {
        return;
    }
    let mut file = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Err(err) = file.write_all(records) {
        tracing::warn!(%err, "writing a worker's output to its log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn lines_of_both_streams_become_records() {
        let dir = std::env::temp_dir().join(format!("troupe-output-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let (mut out_writer, out_reader) = tokio::io::duplex(1024);
        let (mut err_writer, err_reader) = tokio::io::duplex(1024);
        let finished = capture(out_reader, err_reader, file);
        out_writer.write_all(b"first\nsecond").await.unwrap();
        err_writer.write_all(b"oops\n").await.unwrap();
        let long = vec![b'x'; MAX_LINE + 10];
        out_writer.write_all(b" half\n").await.unwrap();
        out_writer.write_all(&long).await.unwrap();
        drop(out_writer);
        drop(err_writer);
        tokio::time::timeout(std::time::Duration::from_secs(10), finished)
            .await
            .unwrap()
            .unwrap();
        let data = std::fs::read(&path).unwrap();
        let (lines, _) = crate::logs::parse_records(&data, true);
        let texts: Vec<(Stream, usize, String)> = lines
            .iter()
            .map(|l| (l.stream, l.text.len(), l.text.chars().take(12).collect()))
            .collect();
        assert!(
            texts.contains(&(Stream::Stdout, 5, "first".into())),
            "{texts:?}"
        );
        assert!(
            texts.contains(&(Stream::Stdout, 11, "second half".into())),
            "{texts:?}"
        );
        assert!(
            texts.contains(&(Stream::Stderr, 4, "oops".into())),
            "{texts:?}"
        );
        assert!(
            texts.contains(&(Stream::Stdout, MAX_LINE, "x".repeat(12))),
            "{texts:?}"
        );
        assert!(
            texts.contains(&(Stream::Stdout, 10, "x".repeat(10))),
            "{texts:?}"
        );
        assert!(lines.iter().all(|l| l.unix_ms > 1_600_000_000_000));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
