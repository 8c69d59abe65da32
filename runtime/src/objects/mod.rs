//! Object references: a stage's output stays in the worker that produced it, and whoever gets
//! its `ObjectRef` (another actor, usually) fetches the bytes peer to peer from that worker. The
//! driver passes references, never the bytes.

use crate::data::Batch;
use crate::error::{Error, Result};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use troupe_proto::worker_client::WorkerClient;
use troupe_proto::ObjectId;

/// Most bytes one worker keeps for others.
const STORE_LIMIT: usize = 16 << 30;
/// Chunk size of object streams.
pub(crate) const CHUNK_BYTES: usize = 4 << 20;

static OWN_ADDRESS: OnceLock<String> = OnceLock::new();
static STORE: RwLock<Option<HashMap<String, Bytes>>> = RwLock::new(None);
static FETCHED: AtomicU64 = AtomicU64::new(0);
static CLIENTS: Mutex<Option<HashMap<String, WorkerClient<crate::rpc::AuthChannel>>>> =
    Mutex::new(None);

/// A worker announces where it serves objects (its own call address).
pub(crate) fn set_own_address(address: &str) {
    let _ = OWN_ADDRESS.set(address.to_string());
}

/// An object held by some worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub id: String,
    /// The worker that holds it (host:port).
    pub owner: String,
    pub bytes: u64,
}

/// Bytes this process has fetched from other workers (for accounting and tests).
pub fn bytes_fetched() -> u64 {
    FETCHED.load(Ordering::Relaxed)
}

impl ObjectRef {
    /// Keeps `bytes` in this worker and returns a reference others can fetch.
    pub fn put(bytes: Bytes) -> Result<ObjectRef> {
        let owner = OWN_ADDRESS.get().cloned().ok_or_else(|| Error::Invalid {
            what: "object".to_string(),
            why: "only actors (worker processes) can hold objects".to_string(),
        })?;
        let mut store = STORE.write().map_err(|_| Error::NoCluster)?;
        let store = store.get_or_insert_with(HashMap::new);
        let held: usize = store.values().map(Bytes::len).sum();
        if held + bytes.len() > STORE_LIMIT {
            return Err(Error::Invalid {
                what: "object".to_string(),
                why: format!("this worker already holds {held} bytes of objects (limit {STORE_LIMIT}); release some"),
            });
        }
        let id = format!("obj-{}", uuid::Uuid::new_v4().simple());
        let size = bytes.len() as u64;
        store.insert(id.clone(), bytes);
        Ok(ObjectRef {
            id,
            owner,
            bytes: size,
        })
    }

    /// Keeps a batch (as raw bytes) in this worker.
    pub fn put_batch(batch: &Batch) -> Result<ObjectRef> {
        ObjectRef::put(batch.encode()?)
    }

    /// The object's bytes: from this process if it holds them, else streamed from the owner.
    pub async fn fetch(&self) -> Result<Bytes> {
        if OWN_ADDRESS.get() == Some(&self.owner) {
            if let Some(bytes) = local(&self.id) {
                return Ok(bytes);
            }
        }
        let mut client = client(&self.owner).await?;
        let context = || format!("fetching object {} from {}", self.id, self.owner);
        let mut stream = client
            .fetch_object(ObjectId {
                id: self.id.clone(),
            })
            .await
            .map_err(|status| Error::rpc(context(), status))?
            .into_inner();
        let mut out = BytesMut::with_capacity(self.bytes as usize);
        loop {
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(60), stream.message())
                .await
                .map_err(|_| Error::Rpc {
                    context: context(),
                    code: tonic::Code::DeadlineExceeded,
                    status_message: "stalled for 60 s".to_string(),
                })?
                .map_err(|status| Error::rpc(context(), status))?;
            let Some(chunk) = chunk else {
                break;
            };
            out.extend_from_slice(&chunk.data);
        }
        FETCHED.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out.freeze())
    }

    /// Fetches and decodes a batch.
    pub async fn fetch_batch(&self) -> Result<Batch> {
        Batch::decode(self.fetch().await?).map_err(|err| Error::Invalid {
            what: format!("object {}", self.id),
            why: err.to_string(),
        })
    }

    /// Asks the owner to drop the object.
    pub async fn release(&self) -> Result<()> {
        let mut client = client(&self.owner).await?;
        client
            .release_object(ObjectId {
                id: self.id.clone(),
            })
            .await
            .map_err(|status| Error::rpc(format!("releasing object {}", self.id), status))?;
        Ok(())
    }
}

async fn client(address: &str) -> Result<WorkerClient<crate::rpc::AuthChannel>> {
    if let Some(found) = CLIENTS
        .lock()
        .ok()
        .and_then(|clients| clients.as_ref().and_then(|c| c.get(address).cloned()))
    {
        return Ok(found);
    }
    let token = crate::client::current()
        .map(|client| client.token.clone())
        .ok_or(Error::NoCluster)?;
    let channel = crate::rpc::connect(address, &token)
        .await
        .map_err(|why| Error::Invalid {
            what: "object owner".to_string(),
            why,
        })?;
    let client =
        WorkerClient::new(channel).max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
    if let Ok(mut clients) = CLIENTS.lock() {
        clients
            .get_or_insert_with(HashMap::new)
            .insert(address.to_string(), client.clone());
    }
    Ok(client)
}

/// An object this process holds.
pub(crate) fn local(id: &str) -> Option<Bytes> {
    STORE.read().ok()?.as_ref()?.get(id).cloned()
}

/// Drops an object this process holds.
pub(crate) fn remove(id: &str) -> bool {
    STORE
        .write()
        .ok()
        .and_then(|mut store| store.as_mut().map(|s| s.remove(id).is_some()))
        .unwrap_or(false)
}
