//! Messages between ranks on the same machine without the socket carrying their bytes, and the
//! acknowledgements that flow back on each connection's other direction. Two ways: the receiver
//! reads the sender's memory directly (`direct_read`: one copy; the sender waits for the
//! acknowledgement), or, where the system forbids that, the sender copies the message into a
//! shared-memory segment of the object store (pooled, so its pages are already in memory) and
//! sends only the segment's location; the receiver maps the segment, copies out and
//! acknowledges, and the sender returns the segment to the pool (a copy on each side; sends
//! never wait).

use crate::objects::shm::{self, Segment, ShmLocation};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// An acknowledgement of a direct read (the rest is the message's id), not of a segment.
pub(super) const DIRECT_ACK: u64 = 1 << 62;
/// With `DIRECT_ACK`: the receiver could not read directly; the bytes must come another way.
pub(super) const DIRECT_REFUSED: u64 = 1 << 61;
/// Direct-read ids stay below the flags.
pub(super) const DIRECT_ID_MASK: u64 = DIRECT_REFUSED - 1;
/// Messages from this size on go through shared memory by default (smaller ones cost less over
/// the socket than a segment's bookkeeping).
pub(super) const DEFAULT_MIN_BYTES: usize = 256 << 10;

/// What two ranks must share to reach each other's shared memory: the running kernel and the
/// process and mount namespaces through which `/proc/PID/fd` is opened.
pub(super) fn node_identity() -> String {
    let namespace = |name: &str| {
        std::fs::read_link(format!("/proc/self/ns/{name}"))
            .map(|link| link.display().to_string())
            .unwrap_or_default()
    };
    let boot = shm::boot_id();
    if boot.is_empty() {
        return String::new();
    }
    format!("{boot}/{}/{}", namespace("pid"), namespace("mnt"))
}

/// What a rank has out with one peer on its machine: segments sent and not yet acknowledged,
/// by generation; sends waiting for the peer to read in place, by id (true: read; false:
/// refused); whether the peer refused reading in place (then the bytes go another way to it
/// from now on); and whether the connection is gone.
#[derive(Default)]
pub(super) struct InFlight {
    segments: Mutex<HashMap<u64, Arc<Segment>>>,
    waiting: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<bool>>>,
    pub refused_direct: std::sync::atomic::AtomicBool,
    pub refused_shared: std::sync::atomic::AtomicBool,
    closed: std::sync::atomic::AtomicBool,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Segment>>> {
        match self.segments.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn add(&self, generation: u64, segment: Arc<Segment>) {
        self.lock().insert(generation, segment);
    }

    /// The receiver is done with `generation`: its segment goes back to the pool.
    fn acknowledge(&self, generation: u64) {
        let segment = self.lock().remove(&generation);
        if let Some(segment) = segment {
            shm::release(segment);
        }
    }

    /// Releases every segment still out and fails every waiting send, now and later (the peer
    /// has gone).
    fn release_all(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let segments: Vec<_> = self.lock().drain().map(|(_, segment)| segment).collect();
        segments.into_iter().for_each(shm::release);
        self.waiters().clear();
    }

    /// Whether the peer's side of the connection is gone (it exited, or left the group).
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, tokio::sync::oneshot::Sender<bool>>> {
        match self.waiting.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers a send waiting for the direct read of message `id`.
    pub(super) fn wait_for(&self, id: u64) -> tokio::sync::oneshot::Receiver<bool> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let mut waiters = self.waiters();
        // Once the connection is gone, the sender is dropped here and the wait ends at once.
        if !self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            waiters.insert(id, done);
        }
        wait
    }

    /// The send of message `id` gave up waiting.
    pub(super) fn forget(&self, id: u64) {
        self.waiters().remove(&id);
    }

    fn direct_read_done(&self, value: u64) {
        let waiter = self.waiters().remove(&(value & DIRECT_ID_MASK));
        if let Some(waiter) = waiter {
            let _ = waiter.send(value & DIRECT_REFUSED == 0);
        }
    }

    #[cfg(test)]
    pub(super) fn outstanding(&self) -> usize {
        self.lock().len()
    }
}

/// Reads a peer's acknowledgements (one generation each) until the connection closes, then
/// releases what the peer never took. It outlives the communicator on purpose: a sender may drop
/// its communicator as soon as its sends return, and the segments must stay until the receiver
/// has read them (as bytes in a socket's buffers would).
pub(super) fn read_acknowledgements(mut reader: OwnedReadHalf, in_flight: Arc<InFlight>) {
    tokio::spawn(async move {
        let mut generation = [0_u8; 8];
        while reader.read_exact(&mut generation).await.is_ok() {
            let value = u64::from_le_bytes(generation);
            if value & DIRECT_ACK != 0 {
                in_flight.direct_read_done(value);
            } else {
                in_flight.acknowledge(value);
            }
        }
        in_flight.release_all();
    });
}

/// Copies `parts` into a segment and returns the frame body that tells the receiver where it
/// is (the segment stays in `in_flight` until acknowledged).
pub(super) fn stage(parts: &[&[u8]], in_flight: &InFlight) -> std::io::Result<Vec<u8>> {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let (segment, generation) = shm::store_parts(parts)?;
    let location = segment.location(generation, len);
    let body = serde_json::to_vec(&location).map_err(std::io::Error::other)?;
    in_flight.add(generation, segment);
    Ok(body)
}

/// The segment location a frame body names.
pub(super) fn read_location(body: &[u8]) -> Result<ShmLocation, String> {
    serde_json::from_slice(body)
        .map_err(|err| format!("an unreadable shared-memory location: {err}"))
}

/// Maps the segment at `location`: the message's bytes, zero-copy (acknowledge its generation
/// once they are no longer needed).
pub(super) fn open(location: &ShmLocation, len: u64) -> Result<Bytes, String> {
    if location.len != len {
        return Err(format!(
            "a shared-memory frame of {len} bytes names a segment of {}",
            location.len
        ));
    }
    shm::map_remote_or_why(location, true).map_err(|why| {
        format!(
            "the sender's shared-memory segment (pid {}, fd {}) could not be mapped: {why}",
            location.pid, location.fd
        )
    })
}

/// Tells the sender its segment `generation` may be reused, or (with `DIRECT_ACK`) that its
/// direct read is done or refused.
pub(super) async fn acknowledge(
    writer: &tokio::sync::Mutex<OwnedWriteHalf>,
    value: u64,
) -> Result<(), String> {
    writer
        .lock()
        .await
        .write_all(&value.to_le_bytes())
        .await
        .map_err(|err| format!("acknowledging a same-machine message: {err}"))
}

/// The body of a frame that names ranges of the sender's shared buffer: the buffer's location,
/// then the (offset, length) ranges, in message order.
pub(super) fn describe_shared(location: &ShmLocation, ranges: &[(usize, usize)]) -> Vec<u8> {
    let location = serde_json::to_vec(location).unwrap_or_default();
    let mut body = Vec::with_capacity(8 + location.len() + ranges.len() * 16);
    body.extend_from_slice(&(location.len() as u32).to_le_bytes());
    body.extend_from_slice(&location);
    body.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for (from, len) in ranges {
        body.extend_from_slice(&(*from as u64).to_le_bytes());
        body.extend_from_slice(&(*len as u64).to_le_bytes());
    }
    body
}

/// Reads what `describe_shared` wrote.
pub(super) fn read_shared_description(
    body: &[u8],
) -> Result<(ShmLocation, Vec<(usize, usize)>), String> {
    let cut = || "a shared-buffer description cut short".to_string();
    let u32_at = |at: usize| -> Result<usize, String> {
        let bytes = body.get(at..at + 4).ok_or_else(cut)?;
        Ok(u32::from_le_bytes(bytes.try_into().map_err(|_| cut())?) as usize)
    };
    let u64_at = |at: usize| -> Result<usize, String> {
        let bytes = body.get(at..at + 8).ok_or_else(cut)?;
        usize::try_from(u64::from_le_bytes(bytes.try_into().map_err(|_| cut())?))
            .map_err(|_| "a range past this machine's address space".to_string())
    };
    let location_len = u32_at(0)?;
    let location: ShmLocation =
        serde_json::from_slice(body.get(4..4 + location_len).ok_or_else(cut)?)
            .map_err(|err| format!("an unreadable shared-buffer location: {err}"))?;
    let count = u32_at(4 + location_len)?;
    let start = 8 + location_len;
    if body.len() != start + count * 16 {
        return Err(format!(
            "a shared-buffer description of {} bytes for {count} ranges",
            body.len()
        ));
    }
    let ranges = (0..count)
        .map(|i| Ok((u64_at(start + i * 16)?, u64_at(start + i * 16 + 8)?)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok((location, ranges))
}

/// Copies `ranges` of `source`, back to back, into `targets` (filled in order); every range is
/// checked against `source` and the totals must match.
pub(super) fn gather_into(
    source: &[u8],
    ranges: &[(usize, usize)],
    targets: &mut [&mut [u8]],
) -> Result<(), String> {
    let wanted: usize = targets.iter().map(|t| t.len()).sum();
    let offered: usize = ranges.iter().map(|(_, len)| len).sum();
    if wanted != offered {
        return Err(format!("sent {offered} bytes where {wanted} were expected"));
    }
    let mut ranges = ranges.iter().copied();
    let (mut from, mut left) = (0, 0);
    for target in targets.iter_mut() {
        let mut at = 0;
        while at < target.len() {
            while left == 0 {
                (from, left) = ranges.next().ok_or("the ranges ran out early")?;
                if from.checked_add(left).is_none_or(|end| end > source.len()) {
                    return Err(format!(
                        "bytes {from}..{} are past the {}-byte shared buffer",
                        from.saturating_add(left),
                        source.len()
                    ));
                }
            }
            let n = (target.len() - at).min(left);
            target[at..at + n].copy_from_slice(&source[from..from + n]);
            at += n;
            from += n;
            left -= n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_message_maps_back_and_its_segment_returns_on_acknowledgement() {
        let in_flight = InFlight::default();
        let (a, b) = (vec![1_u8; 5000], vec![2_u8; 3000]);
        let body = stage(&[&a, &b], &in_flight).unwrap();
        assert_eq!(in_flight.outstanding(), 1);
        let location = read_location(&body).unwrap();
        let (bytes, generation) = (open(&location, 8000).unwrap(), location.generation);
        assert_eq!(&bytes[..5000], &a[..]);
        assert_eq!(&bytes[5000..], &b[..]);
        assert!(open(&location, 7999).unwrap_err().contains("8000"));
        drop(bytes);
        in_flight.acknowledge(generation);
        assert_eq!(in_flight.outstanding(), 0);
        assert!(!node_identity().is_empty());
    }

    #[test]
    fn shared_ranges_describe_and_gather_across_uneven_targets() {
        let source: Vec<u8> = (0..100).collect();
        let ranges = [(10, 5), (50, 20), (0, 3)];
        let location = ShmLocation {
            boot_id: "b".to_string(),
            pid: 1,
            fd: 2,
            device: 3,
            inode: 4,
            key: 5,
            generation: 6,
            len: 100,
        };
        let (back, read) = read_shared_description(&describe_shared(&location, &ranges)).unwrap();
        assert_eq!((back, read), (location, ranges.to_vec()));
        let (mut a, mut b) = (vec![0_u8; 7], vec![0_u8; 21]);
        gather_into(&source, &ranges, &mut [&mut a, &mut b]).unwrap();
        let expected: Vec<u8> = (10..15).chain(50..70).chain(0..3).collect();
        assert_eq!([a, b].concat(), expected);
        let mut short = vec![0_u8; 4];
        assert!(gather_into(&source, &[(98, 4)], &mut [&mut short])
            .unwrap_err()
            .contains("past"));
    }
}
