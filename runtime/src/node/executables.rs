//! Where a node agent finds the executable a worker runs or the package a job unpacks: its own
//! map of local executables (an embedded cluster's driver binary), its on-disk cache, or the head
//! (fetched by content hash once, checked, then cached).

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;
use troupe_proto::nodes_client::NodesClient;
use troupe_proto::BinaryRef;

/// What a cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlobKind {
    Executable,
    Package,
}

pub(super) struct BlobCache {
    kind: BlobKind,
    dir: PathBuf,
    local: HashMap<String, PathBuf>,
    head: NodesClient<crate::rpc::AuthChannel>,
    /// One fetch at a time, so concurrent starts of one executable download it once.
    fetching: tokio::sync::Mutex<()>,
}

impl BlobCache {
    pub(super) fn new(
        kind: BlobKind,
        dir: PathBuf,
        local: HashMap<String, PathBuf>,
        head: NodesClient<crate::rpc::AuthChannel>,
    ) -> Self {
        BlobCache {
            kind,
            dir,
            local,
            head,
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The path of the file with `hash`, fetching it from the head if needed.
    pub(super) async fn resolve(&self, hash: &str) -> Result<PathBuf, String> {
        if let Some(path) = self.local.get(hash) {
            return Ok(path.clone());
        }
        if !crate::head::is_sha256_hex(hash) {
            return Err("not a sha256 hash, and not a file of this node".to_string());
        }
        let cached = self.dir.join(hash);
        if cached.is_file() {
            return Ok(cached);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if cached.is_file() {
            return Ok(cached);
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|err| format!("creating {}: {err}", self.dir.display()))?;
        let partial = self.dir.join(format!("{hash}.partial"));
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|err| format!("creating {}: {err}", partial.display()))?;
        let mut head = self.head.clone();
        let wanted = BinaryRef {
            hash: hash.to_string(),
        };
        let fetched = match self.kind {
            BlobKind::Executable => head.fetch_binary(wanted).await,
            BlobKind::Package => head.fetch_package(wanted).await,
        };
        let mut chunks = fetched
            .map_err(|status| format!("fetching from the head: {}", status.message()))?
            .into_inner();
        let mut hasher = Sha256::new();
        let mut size = 0_u64;
        loop {
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), chunks.message())
                .await
                .map_err(|_| "fetching from the head: stalled for 30 s".to_string())?
                .map_err(|status| format!("fetching from the head: {}", status.message()))?;
            let Some(chunk) = chunk else {
                break;
            };
            size += chunk.data.len() as u64;
            hasher.update(&chunk.data);
            file.write_all(&chunk.data)
                .await
                .map_err(|err| format!("writing {}: {err}", partial.display()))?;
        }
        file.flush()
            .await
            .map_err(|err| format!("writing {}: {err}", partial.display()))?;
        drop(file);
        let actual = hex::encode(hasher.finalize());
        if actual != hash {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(format!("the head sent {size} bytes hashing to {actual}"));
        }
        let mode = match self.kind {
            BlobKind::Executable => 0o755,
            BlobKind::Package => 0o644,
        };
        tokio::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(|err| format!("setting the mode of {}: {err}", partial.display()))?;
        tokio::fs::rename(&partial, &cached)
            .await
            .map_err(|err| format!("moving {} into the cache: {err}", partial.display()))?;
        tracing::info!(hash, bytes = size, kind = ?self.kind, "fetched from the head");
        Ok(cached)
    }
}
