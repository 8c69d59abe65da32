//! The TCP backend: one connection per ordered pair of ranks, length-prefixed frames; messages
//! made of many parts go out with vectored writes and come in straight into their destination
//! slices, so resharding copies each byte only into and out of the kernel. Between ranks on the
//! same machine, large messages skip the socket (`same_machine`, `same_node`): the frame then
//! carries only where the bytes are (a shared segment, a shared buffer, or the sender's own
//! memory), and the connection's other direction carries the receiver's acknowledgements. Ranks find each other through the head's key-value store: each publishes
//! `collective/GROUP/RANK` = its listening address, whether it takes shared memory, and its node
//! identity, then connects to every peer.

mod same_machine;

use super::frames::{header, read_header, read_scattered, write_parts, FrameKind};
use super::same_node::{self, InFlight};
use super::{CollectiveError, Communicator};
use crate::cluster::Cluster;
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Mutex;

/// A group's members connected over TCP (and shared memory between members on one machine).
pub struct TcpCommunicator {
    /// The group's name, and who each rank is ("actor ID on node ID"), for errors.
    group: String,
    members: Vec<String>,
    rank: usize,
    world: usize,
    outgoing: HashMap<usize, Mutex<OwnedWriteHalf>>,
    incoming: HashMap<usize, Mutex<OwnedReadHalf>>,
    /// Longest a `recv` waits for its message.
    pub recv_timeout: Duration,
    /// Messages of at least this many bytes to those peers go through shared memory.
    pub shared_memory_min_bytes: usize,
    /// Where this rank acknowledges shared-memory messages, per sending peer.
    acknowledgements: HashMap<usize, Mutex<OwnedWriteHalf>>,
    /// Segments sent through shared memory and not yet acknowledged, per receiving peer.
    in_flight: HashMap<usize, Arc<InFlight>>,
    /// Whether receivers may read this rank's memory directly (off by default; a peer that
    /// refuses is not offered again).
    direct_reads: AtomicBool,
    next_direct_id: AtomicU64,
    /// Peers whose connection fell out of step (a send stopped waiting for their answer).
    broken: std::sync::Mutex<HashSet<usize>>,
    /// Every connection's socket, for `abort` (valid while the halves above live).
    sockets: Vec<std::os::fd::RawFd>,
    /// Why this rank gave up on the group, once it did.
    aborted: std::sync::Mutex<Option<String>>,
    /// This rank refuses every offer to read in place (the bytes then come another way).
    refuse_in_place: AtomicBool,
    shared_memory_sent: AtomicU64,
    direct_sent: AtomicU64,
    shared_read_sent: AtomicU64,
}

/// What a rank publishes at rendezvous.
struct Published {
    address: String,
    shared_memory: bool,
    /// Which machine (boot and namespaces), to decide on shared memory.
    node: String,
    /// Who the rank is: "actor ID on node ID" in a worker, "driver PID on HOST" elsewhere.
    member: String,
}

impl Published {
    fn encode(&self) -> String {
        let mode = if self.shared_memory { "shm" } else { "tcp" };
        let node = if self.node.is_empty() {
            "-"
        } else {
            &self.node
        };
        format!("{} {mode} {node} {}", self.address, self.member)
    }

    fn decode(text: &str) -> Self {
        let mut fields = text.splitn(4, ' ');
        let address = fields.next().unwrap_or_default().to_string();
        let shared_memory = fields.next() == Some("shm");
        let node = match fields.next().unwrap_or_default() {
            "-" => String::new(),
            node => node.to_string(),
        };
        let member = fields
            .next()
            .unwrap_or("a member that did not say who it is");
        Published {
            address,
            shared_memory,
            node,
            member: member.to_string(),
        }
    }
}

/// Who this process is, for the errors of its peers: its actor and node in a worker.
fn member_label() -> String {
    let actor = std::env::var(crate::node::service_env::ACTOR_ID).unwrap_or_default();
    let node = std::env::var(crate::node::service_env::NODE_ID).unwrap_or_default();
    if actor.is_empty() {
        format!("driver process {}", std::process::id())
    } else {
        format!("actor {actor} on node {node}")
    }
}

/// Seconds a connection of a group may stay silent before the kernel probes it, and how often
/// and how many times it probes: a peer whose machine vanished (no reset ever comes) is found
/// dead within about 8 s while nothing is being sent...
const KEEPALIVE_IDLE_S: libc::c_int = 5;
const KEEPALIVE_INTERVAL_S: libc::c_int = 1;
const KEEPALIVE_PROBES: libc::c_int = 3;
/// ...and within 10 s while data it has not acknowledged waits (TCP_USER_TIMEOUT, ms). With
/// this set, Linux also ends an idle connection whose keep-alive probes go unanswered after
/// these 10 s (instead of after the probe count). A live peer that reads slowly answers the
/// window probes, so only a vanished one is cut.
const UNACKNOWLEDGED_LIMIT_MS: libc::c_int = 10_000;

/// Turns on TCP keep-alive probes for `stream` (best effort: a refusal is logged).
fn keep_alive(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let options = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_S),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES),
        (
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            UNACKNOWLEDGED_LIMIT_MS,
        ),
    ];
    for (level, name, value) in options {
        // SAFETY: `fd` is an open socket owned by `stream` for the duration of the call, and the
        // option value is a c_int of the size given.
        let result = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not set a keep-alive option on a collective connection"
            );
        }
    }
}

impl TcpCommunicator {
    /// Joins group `group` as `rank` of `world`: publishes this rank's address through the
    /// cluster's key-value store, waits (up to `timeout`) for every peer's, and connects.
    /// Large messages to peers on the same machine go through shared memory. Group names must
    /// be unique per group instance.
    pub async fn rendezvous(
        cluster: &Cluster,
        group: &str,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<Self, CollectiveError> {
        Self::rendezvous_with(cluster, group, rank, world, timeout, true).await
    }

    /// As `rendezvous`; `shared_memory` false keeps every message on the sockets (as between
    /// machines), whatever the peers' placement.
    pub async fn rendezvous_with(
        cluster: &Cluster,
        group: &str,
        rank: usize,
        world: usize,
        timeout: Duration,
        shared_memory: bool,
    ) -> Result<Self, CollectiveError> {
        if rank >= world {
            return Err(CollectiveError::BadRank { rank, world });
        }
        let fail = |why: String| CollectiveError::Rendezvous {
            group: group.to_string(),
            why,
        };
        let host = std::env::var("TROUPE_BIND_HOST").unwrap_or_else(|_| "127.0.0.1".to_string());
        let listener = bind_listener(&host).map_err(|err| fail(format!("binding: {err}")))?;
        let address = format!(
            "{host}:{}",
            listener
                .local_addr()
                .map_err(|err| fail(err.to_string()))?
                .port()
        );
        let node = same_node::node_identity();
        let mine = Published {
            address,
            shared_memory,
            node: node.clone(),
            member: member_label(),
        };
        let mut members = vec![String::new(); world];
        members[rank] = mine.member.clone();
        cluster
            .kv_put(
                &format!("collective/{group}/{rank}"),
                Bytes::from(mine.encode()),
                true,
            )
            .await
            .map_err(|err| fail(err.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sockets = Vec::with_capacity(2 * world);
        let mut outgoing = HashMap::new();
        let mut in_flight = HashMap::new();
        let mut same_node_peers = HashSet::new();
        for peer in (0..world).filter(|peer| *peer != rank) {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let value = cluster
                .kv_wait(&format!("collective/{group}/{peer}"), remaining)
                .await
                .map_err(|err| fail(err.to_string()))?
                .ok_or_else(|| fail(format!("rank {peer} did not join within {timeout:?}")))?;
            let published = Published::decode(&String::from_utf8_lossy(&value));
            members[peer] = published.member.clone();
            let peer_address = published.address;
            let same_node = !node.is_empty() && published.node == node;
            if same_node {
                same_node_peers.insert(peer);
            }
            let stream = tokio::time::timeout(
                remaining.max(Duration::from_millis(1)),
                connect(&peer_address),
            )
            .await
            .map_err(|_| {
                fail(format!(
                    "connecting to rank {peer} at {peer_address} timed out"
                ))
            })?
            .map_err(|err| {
                fail(format!(
                    "connecting to rank {peer} at {peer_address}: {err}"
                ))
            })?;
            stream
                .set_nodelay(true)
                .map_err(|err| fail(err.to_string()))?;
            keep_alive(&stream);
            sockets.push(std::os::fd::AsRawFd::as_raw_fd(&stream));
            let (reader, mut writer) = stream.into_split();
            writer
                .write_all(&(rank as u64).to_le_bytes())
                .await
                .map_err(|err| fail(err.to_string()))?;
            outgoing.insert(peer, Mutex::new(writer));
            if same_node && shared_memory && published.shared_memory {
                let sent = Arc::new(InFlight::default());
                same_node::read_acknowledgements(reader, sent.clone());
                in_flight.insert(peer, sent);
            }
        }
        let mut incoming = HashMap::new();
        let mut acknowledgements = HashMap::new();
        while incoming.len() < world - 1 {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (mut stream, _) = tokio::time::timeout(remaining, listener.accept())
                .await
                .map_err(|_| {
                    fail(format!(
                        "only {} of {} peers connected within {timeout:?}",
                        incoming.len(),
                        world - 1
                    ))
                })?
                .map_err(|err| fail(err.to_string()))?;
            stream
                .set_nodelay(true)
                .map_err(|err| fail(err.to_string()))?;
            keep_alive(&stream);
            sockets.push(std::os::fd::AsRawFd::as_raw_fd(&stream));
            let mut hello = [0_u8; 8];
            tokio::time::timeout(remaining, stream.read_exact(&mut hello))
                .await
                .map_err(|_| fail("a peer connected but did not say its rank".to_string()))?
                .map_err(|err| fail(err.to_string()))?;
            let peer = u64::from_le_bytes(hello) as usize;
            if peer >= world || peer == rank || incoming.contains_key(&peer) {
                return Err(fail(format!("a connection claimed rank {peer}")));
            }
            let (reader, writer) = stream.into_split();
            incoming.insert(peer, Mutex::new(reader));
            // A peer here may send through shared memory: keep the way back to acknowledge.
            if same_node_peers.contains(&peer) {
                acknowledgements.insert(peer, Mutex::new(writer));
            }
        }
        Ok(TcpCommunicator {
            group: group.to_string(),
            members,
            rank,
            world,
            outgoing,
            incoming,
            recv_timeout: Duration::from_secs(600),
            shared_memory_min_bytes: same_node::DEFAULT_MIN_BYTES,
            acknowledgements,
            in_flight,
            direct_reads: AtomicBool::new(false),
            broken: std::sync::Mutex::new(HashSet::new()),
            sockets,
            aborted: std::sync::Mutex::new(None),
            refuse_in_place: AtomicBool::new(false),
            next_direct_id: AtomicU64::new(1),
            shared_memory_sent: AtomicU64::new(0),
            direct_sent: AtomicU64::new(0),
            shared_read_sent: AtomicU64::new(0),
        })
    }

    /// Messages this rank has sent to peers on its machine without the socket carrying their
    /// bytes (read directly, or through a shared segment).
    pub fn shared_memory_messages(&self) -> u64 {
        self.shared_memory_sent.load(Ordering::Relaxed)
            + self.direct_sent.load(Ordering::Relaxed)
            + self.shared_read_sent.load(Ordering::Relaxed)
    }

    /// Of those, the messages receivers read in place from this rank's shared buffers.
    pub fn shared_buffer_messages(&self) -> u64 {
        self.shared_read_sent.load(Ordering::Relaxed)
    }

    /// Of those, the messages receivers read straight from this rank's memory.
    pub fn direct_read_messages(&self) -> u64 {
        self.direct_sent.load(Ordering::Relaxed)
    }

    /// Refuses every offer to read a message in place (from a peer's memory or shared buffer):
    /// the peers then send the bytes another way. For tests of that way, and for machines where
    /// reading in place misbehaves.
    pub fn refuse_in_place_reads(&self) {
        self.refuse_in_place.store(true, Ordering::Relaxed);
    }

    /// Offers peers on this machine to read large messages straight from this rank's memory
    /// (one copy; each send then waits for the peer to take it) instead of shared segments (two
    /// copies; sends do not wait). Off by default: on this project's 2-core machine segments
    /// moved a warm 1 GiB reshard faster (0.100 s against 0.150 s), though direct reads need no
    /// fresh pages the first time (0.150 s against 0.79 s). Where the system forbids reading
    /// another process's memory, the first refusal turns it off again.
    pub fn enable_direct_reads(&self) {
        self.direct_reads.store(true, Ordering::Relaxed);
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Who rank `rank` is ("actor ID on node ID"), as it said at rendezvous.
    pub fn member(&self, rank: usize) -> Option<&str> {
        self.members.get(rank).map(String::as_str)
    }

    /// Gives up on the group (this rank failed in the middle of a collective, say): shuts every
    /// connection down, so that peers waiting on this rank get an error at once instead of at
    /// their deadline (what NCCL's `ncclCommAbort` is for). Later calls on this communicator
    /// fail with `why`; the group must be formed again.
    pub fn abort(&self, why: &str) {
        if let Ok(mut aborted) = self.aborted.lock() {
            if aborted.is_some() {
                return;
            }
            *aborted = Some(why.to_string());
        }
        tracing::warn!(
            group = self.group,
            rank = self.rank,
            why,
            "leaving the group"
        );
        for fd in &self.sockets {
            // SAFETY: the fd belongs to a connection half this communicator still owns, so it is
            // open; shutdown(2) only ends the connection, it does not close the descriptor.
            unsafe {
                libc::shutdown(*fd, libc::SHUT_RDWR);
            }
        }
    }

    /// The error for a call made after `abort`.
    fn check_not_aborted(&self, peer: usize) -> Result<(), CollectiveError> {
        let aborted = self.aborted.lock().ok().and_then(|why| why.clone());
        match aborted {
            Some(why) => Err(CollectiveError::Invalid(format!(
                "group `{}`: rank {} ({}) left the group earlier ({why}), so it cannot reach \
                 rank {peer}; the group must be formed again",
                self.group,
                self.rank,
                self.member(self.rank).unwrap_or("this process")
            ))),
            None => Ok(()),
        }
    }

    /// `err` with the group and the peer's identity, when it is about one peer.
    fn named(&self, err: CollectiveError) -> CollectiveError {
        match err {
            CollectiveError::Peer { peer, why } => CollectiveError::PeerFailed {
                group: self.group.clone(),
                rank: peer,
                member: self
                    .member(peer)
                    .unwrap_or("a rank outside the group")
                    .to_string(),
                why,
            },
            other => other,
        }
    }

    /// Whether messages to `peer` go through shared memory (from `shared_memory_min_bytes`).
    pub fn uses_shared_memory_with(&self, peer: usize) -> bool {
        self.in_flight.contains_key(&peer)
    }
}

impl TcpCommunicator {
    /// Sends one message to `peer` through `writer` (its connection, locked by the caller): read
    /// directly by a peer on this machine when offered and taken, else through a shared
    /// segment, else as bytes on the socket.
    async fn send_parts_locked(
        &self,
        writer: &mut OwnedWriteHalf,
        peer: usize,
        parts: &[&[u8]],
    ) -> Result<(), CollectiveError> {
        let failed = |err: std::io::Error| CollectiveError::Peer {
            peer,
            why: format!("send: {err}"),
        };
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let same_machine = self
            .in_flight
            .get(&peer)
            .filter(|_| total >= self.shared_memory_min_bytes);
        if let Some(in_flight) = same_machine {
            if self.direct_reads.load(Ordering::Relaxed)
                && !in_flight.refused_direct.load(Ordering::Relaxed)
                && self
                    .offer_direct(writer, peer, in_flight, parts, total)
                    .await?
            {
                return Ok(());
            }
            match same_node::stage(parts, in_flight) {
                Ok(location) => {
                    let head = header(total as u64, FrameKind::Segment);
                    let size = (location.len() as u32).to_le_bytes();
                    write_parts(writer, &[&head, &size, &location])
                        .await
                        .map_err(failed)?;
                    self.shared_memory_sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                // Out of shared memory (or file descriptors): the socket still works.
                Err(err) => tracing::debug!(%err, peer, "shared memory refused; sending over TCP"),
            }
        }
        writer
            .write_all(&header(total as u64, FrameKind::Bytes))
            .await
            .map_err(failed)?;
        write_parts(writer, parts).await.map_err(failed)
    }
}

/// Socket buffers large enough that a frame crosses in few system calls.
const SOCKET_BUFFER_BYTES: u32 = 8 << 20;

/// A socket for `address`'s family, with buffers of `SOCKET_BUFFER_BYTES`.
fn socket_for(address: std::net::SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    Ok(socket)
}

fn bind_listener(host: &str) -> std::io::Result<TcpListener> {
    let address: std::net::SocketAddr = format!("{host}:0")
        .parse()
        .map_err(|err| std::io::Error::other(format!("`{host}` is not an IP address: {err}")))?;
    // Accepted connections inherit the buffer sizes.
    let socket = socket_for(address)?;
    socket.bind(address)?;
    socket.listen(1024)
}

async fn connect(address: &str) -> std::io::Result<TcpStream> {
    let address: std::net::SocketAddr = address
        .parse()
        .map_err(|err| std::io::Error::other(format!("`{address}` is not an address: {err}")))?;
    socket_for(address)?.connect(address).await
}

impl TcpCommunicator {
    /// The connection this rank sends to `peer` on.
    fn writer(&self, peer: usize) -> Result<&Mutex<OwnedWriteHalf>, CollectiveError> {
        self.outgoing.get(&peer).ok_or(CollectiveError::BadRank {
            rank: peer,
            world: self.world,
        })
    }

    /// The connection this rank receives from `peer` on.
    fn reader(&self, peer: usize) -> Result<&Mutex<OwnedReadHalf>, CollectiveError> {
        self.incoming.get(&peer).ok_or(CollectiveError::BadRank {
            rank: peer,
            world: self.world,
        })
    }

    /// Runs a receive from `peer` with the group's deadline (`recv_timeout`).
    async fn receive_within_deadline<T>(
        &self,
        peer: usize,
        read: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, CollectiveError> {
        match tokio::time::timeout(self.recv_timeout, read).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(why)) => Err(CollectiveError::Peer { peer, why }),
            Err(_) => Err(CollectiveError::Peer {
                peer,
                why: format!("no message within {:?}", self.recv_timeout),
            }),
        }
    }

    async fn send_parts_unnamed(
        &self,
        peer: usize,
        parts: &[&[u8]],
    ) -> Result<(), CollectiveError> {
        let mut writer = self.writer(peer)?.lock().await;
        self.check_usable(peer)?;
        self.within_deadline(peer, self.send_parts_locked(&mut writer, peer, parts))
            .await
    }

    async fn send_shared_unnamed(
        &self,
        peer: usize,
        shared: &crate::objects::SharedBuffer,
        ranges: &[(usize, usize)],
    ) -> Result<(), CollectiveError> {
        let parts = super::shared_slices(shared, ranges)?;
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let mut writer = self.writer(peer)?.lock().await;
        self.check_usable(peer)?;
        let in_place = self
            .in_flight
            .get(&peer)
            .filter(|_| total >= self.shared_memory_min_bytes)
            .filter(|in_flight| !in_flight.refused_shared.load(Ordering::Relaxed));
        if let Some(in_flight) = in_place {
            if self
                .offer_shared(&mut writer, peer, in_flight, shared, ranges, total)
                .await?
            {
                return Ok(());
            }
        }
        // Refused (the bytes must come next, under the same lock) or not on this machine.
        self.within_deadline(peer, self.send_parts_locked(&mut writer, peer, &parts))
            .await
    }

    /// Runs a send with the group's deadline (`recv_timeout`); one that runs out leaves the
    /// connection out of step, so the peer is marked broken.
    async fn within_deadline(
        &self,
        peer: usize,
        send: impl std::future::Future<Output = Result<(), CollectiveError>>,
    ) -> Result<(), CollectiveError> {
        match tokio::time::timeout(self.recv_timeout, send).await {
            Ok(outcome) => outcome,
            Err(_) => {
                if let Ok(mut broken) = self.broken.lock() {
                    broken.insert(peer);
                }
                Err(CollectiveError::Peer {
                    peer,
                    why: format!("did not take a message within {:?}", self.recv_timeout),
                })
            }
        }
    }

    async fn recv_unnamed(&self, peer: usize) -> Result<Bytes, CollectiveError> {
        let mut reader = self.reader(peer)?.lock().await;
        let read = async {
            let (length, kind) = loop {
                let (length, kind) = read_header(&mut reader).await?;
                let taken = match kind {
                    FrameKind::Bytes | FrameKind::Segment => break (length, kind),
                    FrameKind::Direct | FrameKind::SharedRanges => {
                        let mut message = vec![0_u8; length as usize];
                        self.take_in_place(&mut reader, peer, kind, length, &mut [&mut message])
                            .await?
                            .then_some(message)
                    }
                };
                if let Some(message) = taken {
                    return Ok(Bytes::from(message));
                }
                // Refused: the bytes come in the next frame.
            };
            if kind == FrameKind::Segment {
                // Copied out, so that the segment is unpinned when acknowledged and goes back to
                // the sender's pool: a segment still pinned would be dropped, and the next
                // message would pay for fresh shared pages, which cost more than this copy.
                let (bytes, generation) = self.open_shared(&mut reader, peer, length).await?;
                let owned = Bytes::copy_from_slice(&bytes);
                drop(bytes);
                self.acknowledge(peer, generation).await?;
                return Ok(owned);
            }
            let length = length as usize;
            // Read into spare capacity: no zeroing pass over the frame.
            let mut body = BytesMut::with_capacity(length);
            while body.len() < length {
                let more = reader
                    .read_buf(&mut body)
                    .await
                    .map_err(|err| format!("connection lost mid-frame: {err}"))?;
                if more == 0 {
                    return Err("connection closed mid-frame".to_string());
                }
            }
            Ok(body.freeze())
        };
        self.receive_within_deadline(peer, read).await
    }

    async fn recv_into_unnamed(
        &self,
        peer: usize,
        targets: &mut [&mut [u8]],
    ) -> Result<(), CollectiveError> {
        let mut reader = self.reader(peer)?.lock().await;
        let expected: usize = targets.iter().map(|target| target.len()).sum();
        let read = async {
            loop {
                let (length, kind) = read_header(&mut reader).await?;
                match kind {
                    // A length that does not fit the targets makes the taking fail: refused,
                    // and the bytes that follow fail the check below. The stream stays in step.
                    FrameKind::Direct | FrameKind::SharedRanges => {
                        if self
                            .take_in_place(&mut reader, peer, kind, length, targets)
                            .await?
                        {
                            return Ok(());
                        }
                        // Refused: the bytes come in the next frame.
                    }
                    FrameKind::Segment => {
                        let (bytes, generation) =
                            self.open_shared(&mut reader, peer, length).await?;
                        let copied = super::scatter_into(peer, &bytes, targets);
                        // Unpinned before the acknowledgement, so the sender can reuse it; and
                        // acknowledged even when the copy failed, so it is not kept forever.
                        drop(bytes);
                        self.acknowledge(peer, generation).await?;
                        return copied.map_err(|err| err.to_string());
                    }
                    FrameKind::Bytes => {
                        let length = length as usize;
                        if length != expected {
                            return Err(format!(
                                "sent {length} bytes where {expected} were expected"
                            ));
                        }
                        return read_scattered(&mut reader, targets, length).await;
                    }
                }
            }
        };
        self.receive_within_deadline(peer, read).await
    }
}

impl Communicator for TcpCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    async fn send(&self, peer: usize, message: Bytes) -> Result<(), CollectiveError> {
        self.send_parts(peer, &[&message]).await
    }

    async fn send_parts(&self, peer: usize, parts: &[&[u8]]) -> Result<(), CollectiveError> {
        self.check_not_aborted(peer)?;
        self.send_parts_unnamed(peer, parts)
            .await
            .map_err(|err| self.named(err))
    }

    async fn send_shared(
        &self,
        peer: usize,
        shared: &crate::objects::SharedBuffer,
        ranges: &[(usize, usize)],
    ) -> Result<(), CollectiveError> {
        self.check_not_aborted(peer)?;
        self.send_shared_unnamed(peer, shared, ranges)
            .await
            .map_err(|err| self.named(err))
    }

    async fn recv(&self, peer: usize) -> Result<Bytes, CollectiveError> {
        self.check_not_aborted(peer)?;
        self.recv_unnamed(peer).await.map_err(|err| self.named(err))
    }

    async fn recv_into(
        &self,
        peer: usize,
        targets: &mut [&mut [u8]],
    ) -> Result<(), CollectiveError> {
        self.check_not_aborted(peer)?;
        self.recv_into_unnamed(peer, targets)
            .await
            .map_err(|err| self.named(err))
    }
}
