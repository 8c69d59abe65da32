//! The TCP backend: one connection per ordered pair of ranks, length-prefixed frames, a reader
//! task per incoming connection. Ranks find each other through the head's key-value store: each
//! publishes `collective/GROUP/RANK` = its listening address, then connects to every peer.

use super::{CollectiveError, Communicator};
use crate::cluster::Cluster;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex};

/// Largest single message.
const MAX_FRAME: u64 = 16 << 30;
/// Frames buffered per incoming peer before its reader waits.
const INBOX: usize = 8;

/// A group's members connected over TCP.
pub struct TcpCommunicator {
    rank: usize,
    world: usize,
    outgoing: HashMap<usize, Mutex<OwnedWriteHalf>>,
    incoming: HashMap<usize, Mutex<mpsc::Receiver<Result<Bytes, String>>>>,
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
        let listener = TcpListener::bind((host.as_str(), 0))
            .await
            .map_err(|err| fail(format!("binding: {err}")))?;
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
                TcpStream::connect(&peer_address),
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
            let (sender, receiver) = mpsc::channel(INBOX);
            tokio::spawn(read_frames(stream, sender));
            incoming.insert(peer, Mutex::new(receiver));
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

async fn read_frames(mut stream: TcpStream, frames: mpsc::Sender<Result<Bytes, String>>) {
    loop {
        let mut header = [0_u8; 8];
        if stream.read_exact(&mut header).await.is_err() {
            return;
        }
        let length = u64::from_le_bytes(header);
        if length > MAX_FRAME {
            let _ = frames
                .send(Err(format!("announced a {length}-byte frame")))
                .await;
            return;
        }
        let mut body = BytesMut::zeroed(length as usize);
        if let Err(err) = stream.read_exact(&mut body).await {
            let _ = frames
                .send(Err(format!("connection lost mid-frame: {err}")))
                .await;
            return;
        }
        if frames.send(Ok(body.freeze())).await.is_err() {
            return;
        }
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
        let writer = self.outgoing.get(&peer).ok_or(CollectiveError::BadRank {
            rank: peer,
            world: self.world,
        })?;
        let mut writer = writer.lock().await;
        let failed = |err: std::io::Error| CollectiveError::Peer {
            peer,
            why: format!("send: {err}"),
        };
        writer
            .write_all(&(message.len() as u64).to_le_bytes())
            .await
            .map_err(failed)?;
        writer.write_all(&message).await.map_err(failed)
    }

    async fn recv(&self, peer: usize) -> Result<Bytes, CollectiveError> {
        let inbox = self.incoming.get(&peer).ok_or(CollectiveError::BadRank {
            rank: peer,
            world: self.world,
        })?;
        let mut inbox = inbox.lock().await;
        match tokio::time::timeout(self.recv_timeout, inbox.recv()).await {
            Ok(Some(Ok(frame))) => Ok(frame),
            Ok(Some(Err(why))) => Err(CollectiveError::Peer { peer, why }),
            Ok(None) => Err(CollectiveError::Peer {
                peer,
                why: "connection closed".to_string(),
            }),
            Err(_) => Err(CollectiveError::Peer {
                peer,
                why: format!("no message within {:?}", self.recv_timeout),
            }),
        }
    }
}
