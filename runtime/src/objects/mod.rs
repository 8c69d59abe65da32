//! Object references: a stage's output stays in the worker that produced it, and whoever gets
//! its `ObjectRef` (another actor, usually) fetches the bytes peer to peer from that worker. The
//! driver passes references, never the bytes.
//!
//! How the bytes travel depends on their size and on where the reader is:
//! - up to [`INLINE_MAX_BYTES`], inside the reference itself (no fetch at all);
//! - larger objects are copied once into a shared-memory segment of the owner ([`shm`]): a
//!   reader on the same machine maps it (no copy), any other streams it from the owner over
//!   gRPC in 4 MiB chunks.

mod inline_bytes;
mod shared_buffer;
pub(crate) mod shm;

pub use shared_buffer::{SharedBuffer, SharedBufferError};

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
/// Objects up to this size travel inside their reference.
pub const INLINE_MAX_BYTES: usize = 64 << 10;
/// Chunk size of object streams.
pub(crate) const CHUNK_BYTES: usize = 4 << 20;

static OWN_ADDRESS: OnceLock<String> = OnceLock::new();
static STORE: RwLock<Option<HashMap<String, Stored>>> = RwLock::new(None);
static FETCHED: AtomicU64 = AtomicU64::new(0);
static CLIENTS: Mutex<Option<HashMap<String, WorkerClient<crate::rpc::AuthChannel>>>> =
    Mutex::new(None);

/// An object this worker holds for others.
enum Stored {
    /// In this process's heap (shared memory was not available).
    Heap(Bytes),
    /// In a shared-memory segment of this process.
    Shared {
        segment: std::sync::Arc<shm::Segment>,
        generation: u64,
        len: usize,
    },
}

impl Stored {
    fn len(&self) -> usize {
        match self {
            Stored::Heap(bytes) => bytes.len(),
            Stored::Shared { len, .. } => *len,
        }
    }

    fn bytes(&self) -> Option<Bytes> {
        match self {
            Stored::Heap(bytes) => Some(bytes.clone()),
            Stored::Shared {
                segment,
                generation,
                len,
            } => segment.view(*generation, *len),
        }
    }
}

/// A worker announces where it serves objects (its own call address).
pub(crate) fn set_own_address(address: &str) {
    let _ = OWN_ADDRESS.set(address.to_string());
}

/// An object held by some worker.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub id: String,
    /// The worker that holds it (host:port).
    pub owner: String,
    pub bytes: u64,
    /// The bytes themselves, for objects up to `INLINE_MAX_BYTES`.
    #[serde(default, with = "inline_bytes")]
    inline: Option<Bytes>,
    /// Where a process on the owner's machine can map the object.
    #[serde(default)]
    shared: Option<shm::ShmLocation>,
}

impl std::fmt::Debug for ObjectRef {
    /// Names the object and where it lives, never the inline bytes themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let travels = match (&self.inline, &self.shared) {
            (Some(_), _) => "inline",
            (None, Some(_)) => "shared memory or stream",
            (None, None) => "stream",
        };
        f.debug_struct("ObjectRef")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("bytes", &self.bytes)
            .field("travels", &travels)
            .finish()
    }
}

/// Bytes this process has fetched from other workers, streamed or mapped from their shared
/// memory (for accounting and tests); objects that travel inside their reference do not count.
pub fn bytes_fetched() -> u64 {
    FETCHED.load(Ordering::Relaxed)
}

impl ObjectRef {
    /// Keeps `bytes` in this worker and returns a reference others can fetch. Small objects
    /// travel inside the reference; larger ones are copied once into shared memory.
    pub fn put(bytes: Bytes) -> Result<ObjectRef> {
        let owner = OWN_ADDRESS.get().cloned().ok_or_else(|| Error::Invalid {
            what: "object".to_string(),
            why: "only actors (worker processes) can hold objects".to_string(),
        })?;
        let id = format!("obj-{}", uuid::Uuid::new_v4().simple());
        let size = bytes.len() as u64;
        if bytes.len() <= INLINE_MAX_BYTES {
            return Ok(ObjectRef {
                id,
                owner,
                bytes: size,
                inline: Some(bytes),
                shared: None,
            });
        }
        let held: usize = STORE
            .read()
            .map_err(|_| Error::NoCluster)?
            .as_ref()
            .map_or(0, |store| store.values().map(Stored::len).sum());
        if held + bytes.len() > STORE_LIMIT {
            return Err(Error::Invalid {
                what: "object".to_string(),
                why: format!("this worker already holds {held} bytes of objects (limit {STORE_LIMIT}); release some"),
            });
        }
        let (stored, shared) = match shm::store(&bytes) {
            Ok((segment, generation)) => {
                let location = segment.location(generation, bytes.len());
                let stored = Stored::Shared {
                    segment,
                    generation,
                    len: bytes.len(),
                };
                (stored, Some(location))
            }
            Err(err) => {
                tracing::warn!(%err, "no shared memory for an object; it is kept in the heap");
                (Stored::Heap(bytes), None)
            }
        };
        let mut store = STORE.write().map_err(|_| Error::NoCluster)?;
        store
            .get_or_insert_with(HashMap::new)
            .insert(id.clone(), stored);
        Ok(ObjectRef {
            id,
            owner,
            bytes: size,
            inline: None,
            shared,
        })
    }

    /// Keeps a batch (as raw bytes) in this worker.
    pub fn put_batch(batch: &Batch) -> Result<ObjectRef> {
        ObjectRef::put(batch.encode()?)
    }

    /// The object's bytes: from the reference itself if small, from this process if it holds
    /// them, mapped from the owner's shared memory on the same machine, else streamed from the
    /// owner.
    pub async fn fetch(&self) -> Result<Bytes> {
        if let Some(bytes) = &self.inline {
            return Ok(bytes.clone());
        }
        if OWN_ADDRESS.get() == Some(&self.owner) {
            if let Some(bytes) = local(&self.id) {
                return Ok(bytes);
            }
        }
        if let Some(bytes) = self.shared.as_ref().and_then(shm::map_remote) {
            FETCHED.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            return Ok(bytes);
        }
        let bytes = stream_from(&self.owner, &self.id, self.bytes as usize).await?;
        FETCHED.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Fetches and decodes a batch.
    pub async fn fetch_batch(&self) -> Result<Batch> {
        Batch::decode(self.fetch().await?).map_err(|err| Error::Invalid {
            what: format!("object {}", self.id),
            why: err.to_string(),
        })
    }

    /// Asks the owner to drop the object (nothing to do for one that travels inside its
    /// reference). Views already fetched stay valid.
    pub async fn release(&self) -> Result<()> {
        if self.inline.is_some() {
            return Ok(());
        }
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

/// Streams object `id` from the worker at `owner` (`capacity`: the expected size, a hint).
async fn stream_from(owner: &str, id: &str, capacity: usize) -> Result<Bytes> {
    let mut client = client(owner).await?;
    let context = || format!("fetching object {id} from {owner}");
    let stalled = || Error::Rpc {
        context: context(),
        code: tonic::Code::DeadlineExceeded,
        status_message: "stalled for 60 s".to_string(),
    };
    let opening = client.fetch_object(ObjectId { id: id.to_string() });
    let mut stream = tokio::time::timeout(std::time::Duration::from_secs(60), opening)
        .await
        .map_err(|_| stalled())?
        .map_err(|status| Error::rpc(context(), status))?
        .into_inner();
    let mut out = BytesMut::with_capacity(capacity);
    loop {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(60), stream.message())
            .await
            .map_err(|_| stalled())?
            .map_err(|status| Error::rpc(context(), status))?;
        let Some(chunk) = chunk else {
            break;
        };
        out.extend_from_slice(&chunk.data);
    }
    Ok(out.freeze())
}

/// Where this process serves objects: its worker address, or `""` in a driver (whose objects
/// only its own process can read).
pub(crate) fn own_address() -> String {
    OWN_ADDRESS.get().cloned().unwrap_or_default()
}

/// Keeps `bytes` under a name the caller chose (the pipeline's step outputs), in this process's
/// heap, for `fetch_named` by others. Replaces an object of the same name.
pub(crate) fn hold_named(id: String, bytes: Bytes) -> Result<()> {
    let mut store = STORE.write().map_err(|_| Error::NoCluster)?;
    let store = store.get_or_insert_with(HashMap::new);
    let held: usize = store.values().map(Stored::len).sum();
    if held + bytes.len() > STORE_LIMIT {
        return Err(Error::Invalid {
            what: format!("object {id}"),
            why: format!(
                "this process already holds {held} bytes of objects (limit {STORE_LIMIT})"
            ),
        });
    }
    store.insert(id, Stored::Heap(bytes));
    Ok(())
}

/// Object `id` held by the process at `owner` (this one when `owner` is its own address):
/// read in place when local, else streamed. Counted in `bytes_fetched` when streamed.
pub(crate) async fn fetch_named(owner: &str, id: &str) -> Result<Bytes> {
    if owner.is_empty() || owner == own_address() {
        return local(id).ok_or_else(|| Error::Invalid {
            what: format!("object {id}"),
            why: "this process does not hold it (released, or never made)".to_string(),
        });
    }
    let bytes = stream_from(owner, id, 0).await?;
    FETCHED.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(bytes)
}

/// Drops every object whose name starts with `prefix` and satisfies `stale`; returns how many.
pub(crate) fn remove_named(prefix: &str, stale: impl Fn(&str) -> bool) -> usize {
    let ids: Vec<String> = STORE
        .read()
        .ok()
        .and_then(|store| {
            store.as_ref().map(|s| {
                s.keys()
                    .filter(|id| id.starts_with(prefix) && stale(id))
                    .cloned()
                    .collect()
            })
        })
        .unwrap_or_default();
    ids.iter().filter(|id| remove(id)).count()
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
    STORE.read().ok()?.as_ref()?.get(id)?.bytes()
}

/// Drops an object this process holds.
pub(crate) fn remove(id: &str) -> bool {
    let removed = STORE
        .write()
        .ok()
        .and_then(|mut store| store.as_mut().and_then(|s| s.remove(id)));
    match removed {
        Some(Stored::Shared { segment, .. }) => {
            shm::release(segment);
            true
        }
        Some(Stored::Heap(_)) => true,
        None => false,
    }
}
