//! Content-addressed uploads: executables that drivers upload and the working-directory
//! packages of jobs, stored by the sha256 of their content so each is sent once (and checked
//! before it is kept); node agents fetch them by hash to start workers and jobs.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use troupe_proto::BinaryChunk;

/// Checks an upload before it is kept; the error says what is wrong with it.
pub(super) type Check = fn(&std::path::Path) -> std::result::Result<(), String>;
/// Size of the chunks sent to node agents.
const CHUNK_BYTES: usize = 1 << 20;

pub(super) struct BinaryStore {
    dir: PathBuf,
    /// What the store holds, for messages: "executable", "package".
    kind: &'static str,
    max_bytes: u64,
    check: Option<Check>,
}

pub(crate) fn is_sha256_hex(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BinaryStore {
    pub(super) fn open(
        dir: PathBuf,
        kind: &'static str,
        max_bytes: u64,
        check: Option<Check>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&dir)
            .map_err(|err| Error::io(format!("creating {}", dir.display()), err))?;
        Ok(BinaryStore {
            dir,
            kind,
            max_bytes,
            check,
        })
    }

    pub(super) fn has(&self, hash: &str) -> bool {
        is_sha256_hex(hash) && self.dir.join(hash).is_file()
    }

    /// The answer to a "do you have it" request.
    pub(super) fn answer_has(&self, hash: &str) -> Result<troupe_proto::HasBinaryReply, Status> {
        crate::rpc::check_id("hash", hash)?;
        Ok(troupe_proto::HasBinaryReply {
            present: self.has(hash),
        })
    }

    /// Receives an upload, checks its hash, and stores it. Returns the hash.
    pub(super) async fn receive(
        &self,
        mut chunks: Streaming<BinaryChunk>,
    ) -> Result<String, Status> {
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| crate::rpc::invalid("upload", "no chunks"))?;
        let claimed = first.hash.clone();
        if !is_sha256_hex(&claimed) {
            return Err(crate::rpc::invalid(
                "hash",
                "expected 64 lower-case hex digits (sha256)",
            ));
        }
        if self.has(&claimed) {
            return Ok(claimed);
        }
        let partial = self.dir.join(format!(
            "{claimed}.{}.partial",
            uuid::Uuid::new_v4().simple()
        ));
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|err| Status::internal(format!("storing the upload: {err}")))?;
        let mut hasher = Sha256::new();
        let mut size = 0_u64;
        let mut next = Some(first);
        let outcome: Result<(), Status> = async {
            while let Some(chunk) = next.take() {
                size += chunk.data.len() as u64;
                if size > self.max_bytes {
                    return Err(Status::resource_exhausted(format!(
                        "{} larger than {} bytes",
                        self.kind, self.max_bytes
                    )));
                }
                hasher.update(&chunk.data);
                file.write_all(&chunk.data)
                    .await
                    .map_err(|err| Status::internal(format!("storing the upload: {err}")))?;
                next = chunks.message().await?;
            }
            file.flush()
                .await
                .map_err(|err| Status::internal(format!("storing the upload: {err}")))?;
            Ok(())
        }
        .await;
        if let Err(status) = outcome {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(status);
        }
        let actual = hex::encode(hasher.finalize());
        if actual != claimed {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(crate::rpc::invalid(
                "hash",
                format!("the upload hashes to {actual}, not {claimed}"),
            ));
        }
        if let Some(check) = self.check {
            let path = partial.clone();
            let verdict = tokio::task::spawn_blocking(move || check(&path))
                .await
                .map_err(|err| Status::internal(format!("checking the upload: {err}")))?;
            if let Err(why) = verdict {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(crate::rpc::invalid(self.kind, why));
            }
        }
        tokio::fs::rename(&partial, self.dir.join(&claimed))
            .await
            .map_err(|err| Status::internal(format!("storing the upload: {err}")))?;
        tracing::info!(
            hash = claimed,
            bytes = size,
            kind = self.kind,
            "stored an upload"
        );
        Ok(claimed)
    }

    /// Streams a stored executable in chunks.
    pub(super) async fn stream(
        &self,
        hash: &str,
    ) -> Result<ReceiverStream<Result<BinaryChunk, Status>>, Status> {
        if !self.has(hash) {
            return Err(Status::not_found(format!(
                "no {} with hash {hash}",
                self.kind
            )));
        }
        let mut file = tokio::fs::File::open(self.dir.join(hash))
            .await
            .map_err(|err| Status::internal(format!("opening the {}: {err}", self.kind)))?;
        let (chunks, receiver) = mpsc::channel(4);
        let hash = hash.to_string();
        tokio::spawn(async move {
            let mut buffer = vec![0_u8; CHUNK_BYTES];
            let mut first = true;
            loop {
                match file.read(&mut buffer).await {
                    Ok(0) => break,
                    Ok(read) => {
                        let chunk = BinaryChunk {
                            hash: if first { hash.clone() } else { String::new() },
                            data: bytes::Bytes::copy_from_slice(&buffer[..read]),
                        };
                        first = false;
                        if chunks.send(Ok(chunk)).await.is_err() {
                            break;
                        }
                    }
                    Err(err) => {
                        let _ = chunks
                            .send(Err(Status::internal(format!(
                                "reading the executable: {err}"
                            ))))
                            .await;
                        break;
                    }
                }
            }
        });
        Ok(ReceiverStream::new(receiver))
    }
}
