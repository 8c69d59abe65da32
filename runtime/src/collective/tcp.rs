//! The TCP backend: one connection per ordered pair of ranks, length-prefixed frames; messages
//! made of many parts go out with vectored writes and come in straight into their destination
//! slices, so resharding copies each byte only into and out of the kernel. Ranks find each other through the head's key-value store: each
//! publishes `collective/GROUP/RANK` = its listening address, then connects to every peer.

use super::{CollectiveError, Communicator};
use crate::cluster::Cluster;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Mutex;

/// Largest single message.
const MAX_FRAME: u64 = 16 << 30;
/// Slices handed to one vectored write.
const IO_SLICES: usize = 512;

/// A group's members connected over TCP.
pub struct TcpCommunicator {
    rank: usize,
    world: usize,
    outgoing: HashMap<usize, Mutex<OwnedWriteHalf>>,
    incoming: HashMap<usize, Mutex<OwnedReadHalf>>,
    /// Longest a `recv` waits for its message.
    pub recv_timeout: Duration,
}

impl TcpCommunicator {
    /// Joins group `group` as `rank` of `world`: publishes this rank's address through the
    /// cluster's key-value store, waits (up to `timeout`) for every peer's, and connects.
    /// Group names must be unique per group instance.
    pub async fn rendezvous(
        cluster: &Cluster,
        group: &str,
        rank: usize,
        world: usize,
        timeout: Duration,
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
        cluster
            .kv_put(
                &format!("collective/{group}/{rank}"),
                Bytes::from(address),
                true,
            )
            .await
            .map_err(|err| fail(err.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut outgoing = HashMap::new();
        for peer in (0..world).filter(|peer| *peer != rank) {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let value = cluster
                .kv_wait(&format!("collective/{group}/{peer}"), remaining)
                .await
                .map_err(|err| fail(err.to_string()))?
                .ok_or_else(|| fail(format!("rank {peer} did not join within {timeout:?}")))?;
            let peer_address = String::from_utf8_lossy(&value).to_string();
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
            let (_, mut writer) = stream.into_split();
            writer
                .write_all(&(rank as u64).to_le_bytes())
                .await
                .map_err(|err| fail(err.to_string()))?;
            outgoing.insert(peer, Mutex::new(writer));
        }
        let mut incoming = HashMap::new();
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
            let mut hello = [0_u8; 8];
            tokio::time::timeout(remaining, stream.read_exact(&mut hello))
                .await
                .map_err(|_| fail("a peer connected but did not say its rank".to_string()))?
                .map_err(|err| fail(err.to_string()))?;
            let peer = u64::from_le_bytes(hello) as usize;
            if peer >= world || peer == rank || incoming.contains_key(&peer) {
                return Err(fail(format!("a connection claimed rank {peer}")));
            }
            let (reader, _) = stream.into_split();
            incoming.insert(peer, Mutex::new(reader));
        }
        Ok(TcpCommunicator {
            rank,
            world,
            outgoing,
            incoming,
            recv_timeout: Duration::from_secs(600),
        })
    }
}

/// Socket buffers large enough that a frame crosses in few system calls.
const SOCKET_BUFFER_BYTES: u32 = 8 << 20;

fn bind_listener(host: &str) -> std::io::Result<TcpListener> {
    let address: std::net::SocketAddr = format!("{host}:0")
        .parse()
        .map_err(|err| std::io::Error::other(format!("`{host}` is not an IP address: {err}")))?;
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Accepted connections inherit these.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(address)?;
    socket.listen(1024)
}

async fn connect(address: &str) -> std::io::Result<TcpStream> {
    let address: std::net::SocketAddr = address
        .parse()
        .map_err(|err| std::io::Error::other(format!("`{address}` is not an address: {err}")))?;
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    socket.connect(address).await
}

async fn read_header(reader: &mut OwnedReadHalf) -> Result<u64, String> {
    let mut header = [0_u8; 8];
    reader
        .read_exact(&mut header)
        .await
        .map_err(|err| format!("connection lost: {err}"))?;
    let length = u64::from_le_bytes(header);
    if length > MAX_FRAME {
        return Err(format!("announced a {length}-byte frame"));
    }
    Ok(length)
}

/// Reads one frame body of `length` bytes into `targets`: large targets straight from the
/// socket, runs of small ones through a staging buffer so each system call moves a lot.
async fn read_scattered(
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
async fn write_parts(writer: &mut OwnedWriteHalf, parts: &[&[u8]]) -> std::io::Result<()> {
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
        let writer = self.outgoing.get(&peer).ok_or(CollectiveError::BadRank {
            rank: peer,
            world: self.world,
        })?;
        let mut writer = writer.lock().await;
        let failed = |err: std::io::Error| CollectiveError::Peer {
            peer,
            why: format!("send: {err}"),
        };
        let total: usize = parts.iter().map(|part| part.len()).sum();
        writer
            .write_all(&(total as u64).to_le_bytes())
            .await
            .map_err(failed)?;
        write_parts(&mut writer, parts).await.map_err(failed)
    }

    async fn recv(&self, peer: usize) -> Result<Bytes, CollectiveError> {
        let reader = self.incoming.get(&peer).ok_or(CollectiveError::BadRank {
            rank: peer,
            world: self.world,
        })?;
        let mut reader = reader.lock().await;
        let read = async {
            let length = read_header(&mut reader).await? as usize;
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
        match tokio::time::timeout(self.recv_timeout, read).await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(why)) => Err(CollectiveError::Peer { peer, why }),
            Err(_) => Err(CollectiveError::Peer {
                peer,
                why: format!("no message within {:?}", self.recv_timeout),
            }),
        }
    }

    async fn recv_into(
        &self,
        peer: usize,
        targets: &mut [&mut [u8]],
    ) -> Result<(), CollectiveError> {
        let reader = self.incoming.get(&peer).ok_or(CollectiveError::BadRank {
            rank: peer,
            world: self.world,
        })?;
        let mut reader = reader.lock().await;
        let expected: usize = targets.iter().map(|target| target.len()).sum();
        let read = async {
            let length = read_header(&mut reader).await? as usize;
            if length != expected {
                return Err(format!(
                    "sent {length} bytes where {expected} were expected"
                ));
            }
            read_scattered(&mut reader, targets, length).await
        };
        match tokio::time::timeout(self.recv_timeout, read).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(CollectiveError::Peer { peer, why }),
            Err(_) => Err(CollectiveError::Peer {
                peer,
                why: format!("no message within {:?}", self.recv_timeout),
            }),
        }
    }
}
