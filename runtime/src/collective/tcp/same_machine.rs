//! The TCP communicator's same-machine side: taking a message read in place (directly from the
//! sender's memory, or from its shared buffer) or through a shared segment, offering one, and
//! the acknowledgements both sides wait on.

use super::super::direct_read::{self, Described, ReadFailure};
use super::super::frames::{header, read_small_body, write_parts, FrameKind};
use super::super::same_node::{self, InFlight, DIRECT_ACK, DIRECT_ID_MASK, DIRECT_REFUSED};
use super::super::CollectiveError;
use super::TcpCommunicator;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

impl TcpCommunicator {
    /// The body of a `kind` frame from `peer` that says where its message is (only a peer on
    /// this machine, which this rank can acknowledge, may send one).
    async fn description(
        &self,
        reader: &mut OwnedReadHalf,
        peer: usize,
        kind: &str,
    ) -> Result<Vec<u8>, String> {
        if !self.acknowledgements.contains_key(&peer) {
            return Err(format!("sent a {kind} frame from another machine"));
        }
        read_small_body(reader, direct_read::MAX_DESCRIPTION_BYTES).await
    }

    /// Maps the segment a shared-memory frame from `peer` names (its location follows the
    /// header on `reader`).
    pub(super) async fn open_shared(
        &self,
        reader: &mut OwnedReadHalf,
        peer: usize,
        length: u64,
    ) -> Result<(Bytes, u64), String> {
        if !self.acknowledgements.contains_key(&peer) {
            return Err("sent a shared-memory frame from another machine".to_string());
        }
        let body = read_small_body(reader, 4096).await?;
        same_node::open(&body, length)
    }

    pub(super) async fn acknowledge(&self, peer: usize, value: u64) -> Result<(), String> {
        match self.acknowledgements.get(&peer) {
            Some(writer) => same_node::acknowledge(writer, value).await,
            None => Err("no way back to acknowledge a same-machine frame".to_string()),
        }
    }

    /// Reads a direct-read frame's message from the sender's memory into `targets` and
    /// acknowledges it; false when the read was refused (the bytes then follow in another
    /// frame).
    pub(super) async fn take_direct(
        &self,
        reader: &mut OwnedReadHalf,
        peer: usize,
        length: u64,
        targets: &mut [&mut [u8]],
    ) -> Result<bool, String> {
        let body = self.description(reader, peer, "direct-read").await?;
        let described = Described::decode(&body)?;
        if described.total() != length {
            return Err(format!(
                "a {length}-byte frame describes {} bytes",
                described.total()
            ));
        }
        let id = described.id & DIRECT_ID_MASK;
        match direct_read::read_into(&described, targets) {
            Ok(()) => {
                self.acknowledge(peer, DIRECT_ACK | id).await?;
                Ok(true)
            }
            Err(failure) => {
                match failure {
                    ReadFailure::Refused(err) => {
                        tracing::info!(%err, peer, "reading a peer's memory is not allowed here; using shared segments")
                    }
                    ReadFailure::Failed(why) => tracing::warn!(%why, peer, "a direct read failed"),
                }
                self.acknowledge(peer, DIRECT_ACK | DIRECT_REFUSED | id)
                    .await?;
                Ok(false)
            }
        }
    }

    /// Offers `parts` to `peer` to read directly and waits for its answer: Ok(true) read,
    /// Ok(false) refused (send the bytes another way).
    pub(super) async fn offer_direct(
        &self,
        writer: &mut OwnedWriteHalf,
        peer: usize,
        in_flight: &InFlight,
        parts: &[&[u8]],
        total: usize,
    ) -> Result<bool, CollectiveError> {
        let describe = |id| Described::of(parts, id).encode();
        let (sent, enabled) = (&self.direct_sent, &self.direct_reads);
        self.offer_in_place(
            writer,
            peer,
            in_flight,
            FrameKind::Direct,
            total,
            describe,
            sent,
            enabled,
        )
        .await
    }

    /// Sends a frame of `kind` saying where a `total`-byte message is (`describe` writes it
    /// for the message's id), then waits for the peer's answer, with a deadline: the bytes must
    /// stay untouched until it has read them. Counts the message in `sent` when read; turns
    /// `enabled` off when refused.
    #[allow(clippy::too_many_arguments)]
    async fn offer_in_place(
        &self,
        writer: &mut OwnedWriteHalf,
        peer: usize,
        in_flight: &InFlight,
        kind: FrameKind,
        total: usize,
        describe: impl FnOnce(u64) -> Vec<u8>,
        sent: &std::sync::atomic::AtomicU64,
        enabled: &std::sync::atomic::AtomicBool,
    ) -> Result<bool, CollectiveError> {
        let id = self.next_direct_id.fetch_add(1, Ordering::Relaxed) & DIRECT_ID_MASK;
        let answer = in_flight.wait_for(id);
        let body = describe(id);
        let size = (body.len() as u32).to_le_bytes();
        let head = header(total as u64, kind);
        if let Err(err) = write_parts(writer, &[&head, &size, &body]).await {
            in_flight.forget(id);
            return Err(CollectiveError::Peer {
                peer,
                why: format!("send: {err}"),
            });
        }
        let read = self.await_reader(peer, in_flight, id, answer).await?;
        if read {
            sent.fetch_add(1, Ordering::Relaxed);
        } else {
            enabled.store(false, Ordering::Relaxed);
        }
        Ok(read)
    }

    /// Waits (up to `recv_timeout`) for `peer` to say whether it read message `id` in place.
    async fn await_reader(
        &self,
        peer: usize,
        in_flight: &InFlight,
        id: u64,
        answer: tokio::sync::oneshot::Receiver<bool>,
    ) -> Result<bool, CollectiveError> {
        let failed = |why: String| CollectiveError::Peer { peer, why };
        match tokio::time::timeout(self.recv_timeout, answer).await {
            Ok(Ok(read)) => Ok(read),
            Ok(Err(_)) => Err(failed(
                "the connection closed before the peer took a message".to_string(),
            )),
            Err(_) => {
                in_flight.forget(id);
                Err(failed(format!(
                    "the peer did not take a message within {:?}",
                    self.recv_timeout
                )))
            }
        }
    }

    /// Offers `ranges` of `shared` to `peer` to read in place and waits for its answer: Ok(true)
    /// read, Ok(false) refused (send the bytes another way).
    pub(super) async fn offer_shared(
        &self,
        writer: &mut OwnedWriteHalf,
        peer: usize,
        in_flight: &InFlight,
        shared: &crate::objects::SharedBuffer,
        ranges: &[(usize, usize)],
        total: usize,
    ) -> Result<bool, CollectiveError> {
        let describe = |id: u64| {
            let mut body = same_node::describe_shared(&shared.location(), ranges);
            body.extend_from_slice(&id.to_le_bytes());
            body
        };
        let (sent, enabled) = (&self.shared_read_sent, &self.shared_reads);
        let kind = FrameKind::SharedRanges;
        self.offer_in_place(
            writer, peer, in_flight, kind, total, describe, sent, enabled,
        )
        .await
    }

    /// Reads a shared-ranges frame's message from the sender's shared buffer into `targets` and
    /// acknowledges it; false when the buffer could not be mapped (the bytes then follow in
    /// another frame).
    pub(super) async fn take_shared(
        &self,
        reader: &mut OwnedReadHalf,
        peer: usize,
        length: u64,
        targets: &mut [&mut [u8]],
    ) -> Result<bool, String> {
        let mut body = self.description(reader, peer, "shared-buffer").await?;
        let id_at = body
            .len()
            .checked_sub(8)
            .ok_or("a shared-buffer frame without its id")?;
        let id =
            u64::from_le_bytes(body[id_at..].try_into().map_err(|_| "an id")?) & DIRECT_ID_MASK;
        body.truncate(id_at);
        let (location, ranges) = same_node::read_shared_description(&body)?;
        let total: usize = ranges.iter().map(|(_, len)| len).sum();
        if total as u64 != length {
            return Err(format!("a {length}-byte frame names {total} bytes"));
        }
        let copied = match crate::objects::shm::map_remote_or_why(&location, true) {
            Ok(view) => Some(same_node::gather_into(&view, &ranges, targets)),
            Err(why) => {
                tracing::info!(
                    why,
                    peer,
                    "a peer's shared buffer cannot be mapped here; asking for the bytes"
                );
                None
            }
        };
        let refused = if copied.is_some() { 0 } else { DIRECT_REFUSED };
        self.acknowledge(peer, DIRECT_ACK | refused | id).await?;
        match copied {
            Some(result) => result.map(|()| true),
            None => Ok(false),
        }
    }
}
