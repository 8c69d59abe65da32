//! The TCP communicator's frames on the wire: an 8-byte little-endian length whose top bits say
//! what the body is (the bytes themselves, where a shared-memory segment holds them, or where in
//! the sender's memory to read them), the reading of a body straight into its destination
//! slices, and vectored writes of a message's parts.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Largest single message.
pub(super) const MAX_FRAME: u64 = 16 << 30;
/// Slices handed to one vectored write.
const IO_SLICES: usize = 512;
/// Set in a frame's length when the body is a shared-memory segment's location.
pub(super) const SEGMENT_FRAME: u64 = 1 << 63;
/// Set in a frame's length when the body describes the sender's memory to read directly.
pub(super) const DIRECT_FRAME: u64 = 1 << 62;

/// What a frame's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameKind {
    Bytes,
    Segment,
    Direct,
    /// Where ranges of the sender's shared buffer are, to read in place.
    SharedRanges,
}

/// The header of a frame of `length` bytes of `kind`.
pub(super) fn header(length: u64, kind: FrameKind) -> [u8; 8] {
    let flag = match kind {
        FrameKind::Bytes => 0,
        FrameKind::Segment => SEGMENT_FRAME,
        FrameKind::Direct => DIRECT_FRAME,
        FrameKind::SharedRanges => SEGMENT_FRAME | DIRECT_FRAME,
    };
    (length | flag).to_le_bytes()
}

/// A frame's length (of the message it carries) and what its body is.
pub(super) async fn read_header(reader: &mut OwnedReadHalf) -> Result<(u64, FrameKind), String> {
    let mut header = [0_u8; 8];
    reader
        .read_exact(&mut header)
        .await
        .map_err(|err| format!("connection lost: {err}"))?;
    let raw = u64::from_le_bytes(header);
    let length = raw & !(SEGMENT_FRAME | DIRECT_FRAME);
    if length > MAX_FRAME {
        return Err(format!("announced a {length}-byte frame"));
    }
    let kind = match (raw & SEGMENT_FRAME != 0, raw & DIRECT_FRAME != 0) {
        (false, false) => FrameKind::Bytes,
        (true, false) => FrameKind::Segment,
        (false, true) => FrameKind::Direct,
        (true, true) => FrameKind::SharedRanges,
    };
    Ok((length, kind))
}

/// Reads a length-prefixed (u32) body of at most `limit` bytes: where a message is, not the
/// message.
pub(super) async fn read_small_body(
    reader: &mut OwnedReadHalf,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut size = [0_u8; 4];
    reader
        .read_exact(&mut size)
        .await
        .map_err(|err| format!("connection lost mid-frame: {err}"))?;
    let size = u32::from_le_bytes(size) as usize;
    if size > limit {
        return Err(format!(
            "announced a {size}-byte frame body (at most {limit})"
        ));
    }
    let mut body = vec![0_u8; size];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|err| format!("connection lost mid-frame: {err}"))?;
    Ok(body)
}

/// Reads one frame body of `length` bytes into `targets`: large targets straight from the
/// socket, runs of small ones through a staging buffer so each system call moves a lot.
pub(super) async fn read_scattered(
    reader: &mut OwnedReadHalf,
    targets: &mut [&mut [u8]],
    length: usize,
) -> Result<(), String> {
    const DIRECT: usize = 256 << 10;
    const STAGE: usize = 4 << 20;
    let mut stage = Vec::new();
    let (mut staged_from, mut staged_to) = (0, 0);
    let mut unread = length;
    for target in targets.iter_mut() {
        let mut filled = 0;
        while filled < target.len() {
            if staged_from < staged_to {
                let take = (staged_to - staged_from).min(target.len() - filled);
                target[filled..filled + take]
                    .copy_from_slice(&stage[staged_from..staged_from + take]);
                staged_from += take;
                filled += take;
                continue;
            }
            let want = target.len() - filled;
            if want >= DIRECT {
                reader
                    .read_exact(&mut target[filled..])
                    .await
                    .map_err(|err| format!("connection lost mid-frame: {err}"))?;
                unread -= want;
                filled += want;
                continue;
            }
            // Never read past this frame: the next bytes belong to the next message.
            let chunk = unread.min(STAGE);
            if stage.len() < chunk {
                stage.resize(chunk, 0);
            }
            let got = reader
                .read(&mut stage[..chunk])
                .await
                .map_err(|err| format!("connection lost mid-frame: {err}"))?;
            if got == 0 {
                return Err("connection closed mid-frame".to_string());
            }
            unread -= got;
            staged_from = 0;
            staged_to = got;
        }
    }
    Ok(())
}

/// Writes all of `parts`, a batch of slices per system call.
pub(super) async fn write_parts(
    writer: &mut OwnedWriteHalf,
    parts: &[&[u8]],
) -> std::io::Result<()> {
    let mut index = 0;
    let mut offset = 0;
    while index < parts.len() {
        if parts[index].len() == offset {
            index += 1;
            offset = 0;
            continue;
        }
        let batch: Vec<std::io::IoSlice<'_>> = std::iter::once(&parts[index][offset..])
            .chain(parts[index + 1..].iter().take(IO_SLICES - 1).copied())
            .map(std::io::IoSlice::new)
            .collect();
        let mut written = writer.write_vectored(&batch).await?;
        if written == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "the connection took no bytes",
            ));
        }
        while written > 0 && index < parts.len() {
            let left = parts[index].len() - offset;
            if written >= left {
                written -= left;
                index += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
    }
    Ok(())
}
