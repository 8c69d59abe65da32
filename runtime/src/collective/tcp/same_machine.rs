//! The TCP communicator's same-machine side: taking a message read in place (directly from the
//! sender's memory, or from its shared buffer) or through a shared segment, offering one, and
//! the acknowledgements both sides wait on.
//!
//! A frame that offers a message in place carries the message's id first. Whatever goes wrong
//! on the receiving side after the id is read (a description it cannot parse, a buffer it
//! cannot map, a copy that fails), the receiver refuses by id and the sender sends the bytes in
//! the very next frame, so the stream never falls out of step. A sender that stops waiting (a
//! deadline, or its future dropped) can no longer tell what the receiver will do next, so the
//! connection to that peer is marked broken and every later send to it fails at once.

use super::super::direct_read::{self, Described};
use super::super::frames::{header, read_small_body, write_parts, FrameKind};
use super::super::same_node::{self, InFlight, DIRECT_ACK, DIRECT_ID_MASK, DIRECT_REFUSED};
use super::super::CollectiveError;
use super::TcpCommunicator;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Marks a peer's connection broken unless disarmed: held while a send waits for its answer.
struct BreakUnlessAnswered<'a> {
    communicator: &'a TcpCommunicator,
    peer: usize,
    armed: bool,
}

impl Drop for BreakUnlessAnswered<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.communicator.mark_broken(self.peer);
        }
    }
}

impl TcpCommunicator {
    /// Fails if an earlier send to `peer` gave up waiting for an answer.
    pub(super) fn check_usable(&self, peer: usize) -> Result<(), CollectiveError> {
        let broken = match self.broken.lock() {
            Ok(broken) => broken.contains(&peer),
            Err(poisoned) => poisoned.into_inner().contains(&peer),
        };
        if broken {
            return Err(CollectiveError::Peer {
                peer,
                why: "an earlier send stopped waiting for this peer's answer, so the connection \
                      is out of step; the group must be formed again"
                    .to_string(),
            });
        }
        if self
            .in_flight
            .get(&peer)
            .is_some_and(|in_flight| in_flight.is_closed())
        {
            return Err(CollectiveError::Peer {
                peer,
                why: "its side of the connection is closed (its process exited, or it left the \
                      group)"
                    .to_string(),
            });
        }
        Ok(())
    }

    fn mark_broken(&self, peer: usize) {
        match self.broken.lock() {
            Ok(mut broken) => broken.insert(peer),
            Err(poisoned) => poisoned.into_inner().insert(peer),
        };
    }

    /// The body of a `kind` frame from `peer` that says where its message is (only a peer on
    /// this machine, which this rank can acknowledge, may send one).
    async fn description(
        &self,
        reader: &mut OwnedReadHalf,
        peer: usize,
        limit: usize,
    ) -> Result<Vec<u8>, String> {
        if !self.acknowledgements.contains_key(&peer) {
            return Err("sent a same-machine frame from another machine".to_string());
        }
        read_small_body(reader, limit).await
    }

    /// Maps the segment a segment frame from `peer` names (its location follows the header on
    /// `reader`). When it cannot, the segment is still acknowledged, so the sender lets it go.
    pub(super) async fn open_shared(
        &self,
        reader: &mut OwnedReadHalf,
        peer: usize,
        length: u64,
    ) -> Result<(Bytes, u64), String> {
        let body = self.description(reader, peer, 4096).await?;
        let location = same_node::read_location(&body)?;
        match same_node::open(&location, length) {
            Ok(bytes) => Ok((bytes, location.generation)),
            Err(why) => {
                self.acknowledge(peer, location.generation).await?;
                Err(why)
            }
        }
    }

    pub(super) async fn acknowledge(&self, peer: usize, value: u64) -> Result<(), String> {
        match self.acknowledgements.get(&peer) {
            Some(writer) => same_node::acknowledge(writer, value).await,
            None => Err("no way back to acknowledge a same-machine frame".to_string()),
        }
    }

    /// Takes a message `peer` offered in place (a `Direct` or `SharedRanges` frame of `length`
    /// bytes) into `targets` and acknowledges it: true when taken, false when refused (the
    /// bytes then come in the next frame).
    pub(super) async fn take_in_place(
        &self,
        reader: &mut OwnedReadHalf,
        peer: usize,
        kind: FrameKind,
        length: u64,
        targets: &mut [&mut [u8]],
    ) -> Result<bool, String> {
        let body = self
            .description(reader, peer, direct_read::MAX_DESCRIPTION_BYTES)
            .await?;
        let Some((id, rest)) = body.split_first_chunk::<8>() else {
            return Err("a same-machine frame without its message id".to_string());
        };
        let id = u64::from_le_bytes(*id) & DIRECT_ID_MASK;
        let taken = if self.refuse_in_place.load(Ordering::Relaxed) {
            Err("this rank refuses to read in place".to_string())
        } else if kind == FrameKind::Direct {
            take_direct(rest, length, targets)
        } else {
            take_shared(rest, length, targets)
        };
        match taken {
            Ok(()) => {
                self.acknowledge(peer, DIRECT_ACK | id).await?;
                Ok(true)
            }
            Err(why) => {
                tracing::info!(
                    why,
                    peer,
                    "could not take a message in place; asking for the bytes"
                );
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
        let kind = FrameKind::Direct;
        let (sent, refused) = (&self.direct_sent, &in_flight.refused_direct);
        self.offer_in_place(
            writer, peer, in_flight, kind, total, describe, sent, refused,
        )
        .await
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
        let describe = |_| same_node::describe_shared(&shared.location(), ranges);
        let kind = FrameKind::SharedRanges;
        let (sent, refused) = (&self.shared_read_sent, &in_flight.refused_shared);
        self.offer_in_place(
            writer, peer, in_flight, kind, total, describe, sent, refused,
        )
        .await
    }

    /// Sends a frame of `kind` saying where a `total`-byte message is (its id, then what
    /// `describe` writes for that id), then waits for the peer's answer with a deadline: the
    /// bytes must stay untouched until it has read them. Counts the message in `sent` when read;
    /// sets `refused` (for this peer, from now on) when not. If the wait ends without an answer,
    /// the connection to the peer is marked broken.
    #[allow(clippy::too_many_arguments)]
    async fn offer_in_place(
        &self,
        writer: &mut OwnedWriteHalf,
        peer: usize,
        in_flight: &InFlight,
        kind: FrameKind,
        total: usize,
        describe: impl FnOnce(u64) -> Vec<u8>,
        sent: &AtomicU64,
        refused: &AtomicBool,
    ) -> Result<bool, CollectiveError> {
        let failed = |why: String| CollectiveError::Peer { peer, why };
        let id = self.next_direct_id.fetch_add(1, Ordering::Relaxed) & DIRECT_ID_MASK;
        let answer = in_flight.wait_for(id);
        let mut body = id.to_le_bytes().to_vec();
        body.extend_from_slice(&describe(id));
        let size = (body.len() as u32).to_le_bytes();
        let head = header(total as u64, kind);
        let mut guard = BreakUnlessAnswered {
            communicator: self,
            peer,
            armed: true,
        };
        if let Err(err) = write_parts(writer, &[&head, &size, &body]).await {
            in_flight.forget(id);
            return Err(failed(format!("send: {err}")));
        }
        let read = match tokio::time::timeout(self.recv_timeout, answer).await {
            Ok(Ok(read)) => read,
            Ok(Err(_)) => {
                return Err(failed(
                    "the connection closed before the peer took a message".to_string(),
                ))
            }
            Err(_) => {
                in_flight.forget(id);
                return Err(failed(format!(
                    "the peer did not take a message within {:?}",
                    self.recv_timeout
                )));
            }
        };
        guard.armed = false;
        if read {
            sent.fetch_add(1, Ordering::Relaxed);
        } else {
            refused.store(true, Ordering::Relaxed);
        }
        Ok(read)
    }
}

/// Reads the sender's memory a direct-read description names into `targets`.
fn take_direct(body: &[u8], length: u64, targets: &mut [&mut [u8]]) -> Result<(), String> {
    let described = Described::decode(body)?;
    if described.total() != length {
        return Err(format!(
            "a {length}-byte frame describes {} bytes",
            described.total()
        ));
    }
    direct_read::read_into(&described, targets)
}

/// Copies the ranges of the sender's shared buffer a description names into `targets`.
fn take_shared(body: &[u8], length: u64, targets: &mut [&mut [u8]]) -> Result<(), String> {
    let (location, ranges) = same_node::read_shared_description(body)?;
    let total: usize = ranges.iter().map(|(_, len)| len).sum();
    if total as u64 != length {
        return Err(format!("a {length}-byte frame names {total} bytes"));
    }
    // Not populated: a receiver may need a small part of a large buffer.
    let view = crate::objects::shm::map_remote_or_why(&location, false)
        .map_err(|why| format!("the sender's shared buffer could not be mapped: {why}"))?;
    same_node::gather_into(&view, &ranges, targets)
}
