//! Shipping the driver's executable: workers are this very binary started again, so a driver
//! that connects to a remote cluster uploads it to the head once, named by the sha256 of its
//! content; node agents fetch it from there by hash.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use troupe_proto::cluster_client::ClusterClient;
use troupe_proto::{BinaryChunk, BinaryRef};

const CHUNK_BYTES: usize = 1 << 20;

pub(crate) fn current_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|err| Error::io("finding this executable", err))
}

/// The sha256 of this executable (computed once per process).
pub(crate) fn own_hash() -> Result<String> {
    static HASH: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    HASH.get_or_init(|| {
        let path = current_exe().map_err(|err| err.to_string())?;
        hash_file(&path).map_err(|err| format!("hashing {}: {err}", path.display()))
    })
    .clone()
    .map_err(|why| Error::Invalid {
        what: "executable".to_string(),
        why,
    })
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0_u8; CHUNK_BYTES];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Uploads this executable to the head at `address` unless it has it; returns its hash.
pub(crate) async fn ensure_uploaded(address: &str, token: &crate::rpc::Token) -> Result<String> {
    let hash = tokio::task::spawn_blocking(own_hash)
        .await
        .map_err(|err| Error::io("hashing this executable", std::io::Error::other(err)))??;
    let channel = crate::rpc::connect(address, token)
        .await
        .map_err(|why| Error::Invalid {
            what: "cluster address".to_string(),
            why,
        })?;
    let mut cluster =
        ClusterClient::new(channel).max_encoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
    let present = cluster
        .has_binary(BinaryRef { hash: hash.clone() })
        .await
        .map_err(|status| Error::rpc("asking the head for this executable", status))?
        .into_inner()
        .present;
    if present {
        return Ok(hash);
    }
    let path = current_exe()?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|err| Error::io(format!("reading {}", path.display()), err))?;
    let bytes = bytes::Bytes::from(bytes);
    let total = bytes.len();
    let first_hash = hash.clone();
    let chunks = (0..total.div_ceil(CHUNK_BYTES).max(1)).map(move |index| BinaryChunk {
        hash: if index == 0 {
            first_hash.clone()
        } else {
            String::new()
        },
        data: bytes.slice(index * CHUNK_BYTES..((index + 1) * CHUNK_BYTES).min(total)),
    });
    let stored = cluster
        .upload_binary(tokio_stream::iter(chunks))
        .await
        .map_err(|status| Error::rpc("uploading this executable to the head", status))?
        .into_inner();
    tracing::info!(
        hash = stored.hash,
        bytes = total,
        "uploaded this executable to the head"
    );
    Ok(hash)
}

/// A name for this executable that only nodes sharing this machine's filesystem can resolve:
/// used by the embedded cluster, whose node agent runs the driver's binary from its path.
pub(crate) fn local_name(path: &Path) -> String {
    let mut hasher = Sha256::new();
    hasher.update(path.as_os_str().as_encoded_bytes());
    if let Ok(meta) = std::fs::metadata(path) {
        hasher.update(meta.len().to_le_bytes());
        if let Ok(modified) = meta.modified() {
            if let Ok(since) = modified.duration_since(std::time::UNIX_EPOCH) {
                hasher.update(since.as_nanos().to_le_bytes());
            }
        }
    }
    format!("local-{}", &hex::encode(hasher.finalize())[..32])
}
