//! Collective communication between the ranks of a group: point-to-point send and recv, and
//! all-reduce, all-gather, reduce-scatter and broadcast built on them with ring algorithms.
//! Backends: `tcp` (everywhere; groups rendezvous through the head's key-value store; large
//! messages between ranks on one machine go through shared memory, `same_node`) and, with the
//! `cuda` feature, `nccl`.

mod direct_read;
mod frames;
#[cfg(feature = "cuda")]
pub mod nccl;
mod ring;
mod same_node;
pub mod tcp;

pub use tcp::TcpCommunicator;

use bytes::Bytes;
use std::future::Future;

/// A collective operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    #[error("rendezvous of group `{group}`: {why}")]
    Rendezvous { group: String, why: String },
    #[error("peer {peer}: {why}")]
    Peer { peer: usize, why: String },
    /// A member of a group failed (its connection broke: it died or its machine went away; it
    /// sent what was not expected; or it did not answer in time), named so the failure can be
    /// traced: the group, the member's rank, and who it is (actor and node).
    #[error("group `{group}`: rank {rank} ({member}): {why}")]
    PeerFailed {
        group: String,
        rank: usize,
        member: String,
        why: String,
    },
    #[error("rank {rank} is not in a group of {world}")]
    BadRank { rank: usize, world: usize },
    #[error("{0}")]
    Invalid(String),
}

/// A group of `world_size` ranks that can exchange messages.
pub trait Communicator: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;

    /// Sends one message to `peer`; messages between two ranks arrive in the order sent.
    fn send(
        &self,
        peer: usize,
        message: Bytes,
    ) -> impl Future<Output = Result<(), CollectiveError>> + Send;

    /// Receives the next message from `peer`.
    fn recv(&self, peer: usize) -> impl Future<Output = Result<Bytes, CollectiveError>> + Send;

    /// Sends one message made of `parts` back to back. Backends that can write them without
    /// first gathering them into one buffer do so (TCP writes them with vectored I/O). A large
    /// send may wait until the peer receives it (a full socket buffer; with TCP's direct reads
    /// on, any same-machine send), so a caller must not make two ranks send large messages to
    /// each other before either receives: send and receive side by side, as the collectives do.
    fn send_parts(
        &self,
        peer: usize,
        parts: &[&[u8]],
    ) -> impl Future<Output = Result<(), CollectiveError>> + Send {
        let message = Bytes::from(parts.concat());
        self.send(peer, message)
    }

    /// Sends the bytes of `shared` at `ranges` (offset, length), back to back, as one message,
    /// and returns once `peer` has them (so `shared` may be rewritten after). Backends that can
    /// let a peer on the same machine read them in place do so (TCP: one copy, from `shared`
    /// into the receiver's buffer); the others send the bytes.
    fn send_shared(
        &self,
        peer: usize,
        shared: &crate::objects::SharedBuffer,
        ranges: &[(usize, usize)],
    ) -> impl Future<Output = Result<(), CollectiveError>> + Send {
        async move {
            let parts = shared_slices(shared, ranges)?;
            self.send_parts(peer, &parts).await
        }
    }

    /// Receives the next message from `peer` straight into `targets`, filled in order; their
    /// lengths must add up to the message's.
    fn recv_into(
        &self,
        peer: usize,
        targets: &mut [&mut [u8]],
    ) -> impl Future<Output = Result<(), CollectiveError>> + Send {
        async move {
            let message = self.recv(peer).await?;
            scatter_into(peer, &message, targets)
        }
    }

    /// Sums `data` element-wise across ranks, in place (ring: reduce-scatter then all-gather).
    fn all_reduce_sum(
        &self,
        data: &mut [f32],
    ) -> impl Future<Output = Result<(), CollectiveError>> + Send
    where
        Self: Sized,
    {
        ring::all_reduce_sum(self, data)
    }

    /// Every rank's message, in rank order.
    fn all_gather(
        &self,
        mine: Bytes,
    ) -> impl Future<Output = Result<Vec<Bytes>, CollectiveError>> + Send
    where
        Self: Sized,
    {
        ring::all_gather(self, mine)
    }

    /// Sums `data` across ranks and returns this rank's chunk of the sum (chunk r of `world`
    /// near-equal contiguous chunks).
    fn reduce_scatter_sum(
        &self,
        data: Vec<f32>,
    ) -> impl Future<Output = Result<Vec<f32>, CollectiveError>> + Send
    where
        Self: Sized,
    {
        ring::reduce_scatter_sum(self, data)
    }

    /// `root`'s message on every rank (`message` is only read on the root).
    fn broadcast(
        &self,
        root: usize,
        message: Option<Bytes>,
    ) -> impl Future<Output = Result<Bytes, CollectiveError>> + Send
    where
        Self: Sized,
    {
        ring::broadcast(self, root, message)
    }
}

/// The slices of `shared` at `ranges`, each checked against its length (as a resharding
/// source's are).
pub(crate) fn shared_slices<'a>(
    shared: &'a crate::objects::SharedBuffer,
    ranges: &[(usize, usize)],
) -> Result<Vec<&'a [u8]>, CollectiveError> {
    crate::reshard::local::source_slices(shared.as_slice(), ranges)
        .map_err(|err| CollectiveError::Invalid(format!("shared buffer: {err}")))
}

/// Copies `message` into `targets` in order, checking that the lengths match.
pub fn scatter_into(
    peer: usize,
    message: &[u8],
    targets: &mut [&mut [u8]],
) -> Result<(), CollectiveError> {
    let expected: usize = targets.iter().map(|target| target.len()).sum();
    if expected != message.len() {
        return Err(CollectiveError::Peer {
            peer,
            why: format!(
                "sent {} bytes where {expected} were expected",
                message.len()
            ),
        });
    }
    let mut at = 0;
    for target in targets.iter_mut() {
        let len = target.len();
        target.copy_from_slice(&message[at..at + len]);
        at += len;
    }
    Ok(())
}

/// f32 values as little-endian bytes.
pub fn f32_to_bytes(values: &[f32]) -> Bytes {
    let mut out = Vec::with_capacity(values.len() * 4);
    for value in values {
        out.extend_from_slice(&value.to_le_bytes());
    }
    Bytes::from(out)
}

/// Little-endian bytes as f32 values.
pub fn bytes_to_f32(bytes: &[u8]) -> Result<Vec<f32>, CollectiveError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(CollectiveError::Invalid(format!(
            "{} bytes is not a whole number of f32",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}
