//! Messages between ranks on the same machine through shared memory instead of the socket: the
//! sender copies the message into a shared-memory segment of the object store (pooled, so its
//! pages are already in memory) and sends only the segment's location over TCP; the receiver maps
//! the segment and copies out of it (or keeps the mapping as the message), then acknowledges on
//! the same connection's other direction, and the sender returns the segment to the pool. One
//! copy on each side, no kernel socket buffers, and sends never wait for the receiver.

use crate::objects::shm::{self, Segment, ShmLocation};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Set in a frame's length header when the body is a segment's location, not the bytes.
pub(super) const SHM_FRAME: u64 = 1 << 63;
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

/// Segments sent to one peer and not yet acknowledged, by generation.
#[derive(Default)]
pub(super) struct InFlight {
    segments: Mutex<HashMap<u64, Arc<Segment>>>,
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

    /// Releases every segment still out (the peer has gone).
    fn release_all(&self) {
        let segments: Vec<_> = self.lock().drain().map(|(_, segment)| segment).collect();
        segments.into_iter().for_each(shm::release);
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
            in_flight.acknowledge(u64::from_le_bytes(generation));
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

/// Maps the segment a frame body names: the message's bytes, zero-copy, with the generation to
/// acknowledge once they are no longer needed.
pub(super) fn open(body: &[u8], len: u64) -> Result<(Bytes, u64), String> {
    let location: ShmLocation = serde_json::from_slice(body)
        .map_err(|err| format!("an unreadable shared-memory location: {err}"))?;
    if location.len != len {
        return Err(format!(
            "a shared-memory frame of {len} bytes names a segment of {}",
            location.len
        ));
    }
    let bytes = shm::map_remote_or_why(&location, true).map_err(|why| {
        format!(
            "the sender's shared-memory segment (pid {}, fd {}) could not be mapped: {why}",
            location.pid, location.fd
        )
    })?;
    Ok((bytes, location.generation))
}

/// Tells the sender its segment `generation` may be reused.
pub(super) async fn acknowledge(
    writer: &tokio::sync::Mutex<OwnedWriteHalf>,
    generation: u64,
) -> Result<(), String> {
    writer
        .lock()
        .await
        .write_all(&generation.to_le_bytes())
        .await
        .map_err(|err| format!("acknowledging a shared-memory message: {err}"))
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
        let (bytes, generation) = open(&body, 8000).unwrap();
        assert_eq!(&bytes[..5000], &a[..]);
        assert_eq!(&bytes[5000..], &b[..]);
        assert!(open(&body, 7999).unwrap_err().contains("8000"));
        drop(bytes);
        in_flight.acknowledge(generation);
        assert_eq!(in_flight.outstanding(), 0);
        assert!(!node_identity().is_empty());
    }
}
