//! `ServingReplica`: a read copy of the tables and the dense model answering predictions over
//! HTTP (see `http`), kept current by syncs: each sync takes, from every shard, only the rows
//! changed between the replica's version and the trainer's newest seal, and the dense
//! parameters of that seal, builds the next snapshot beside the live one and swaps it in. A
//! sync that cannot finish (a shard restarting, a trainer not answering) changes nothing:
//! requests keep getting the last consistent version, and the next sync tries again.

pub mod http;
mod snapshot;

pub use http::{ClientError, PredictClient, PredictReply, PredictRequest, StatusReply};
pub use snapshot::{Snapshot, Update, Versions};

use crate::error::RecsysError;
use crate::features::SlotSet;
use crate::layout::ShardLayout;
use crate::model::ModelShape;
use crate::shard::EmbeddingShardHandle;
use crate::trainer::OnlineTrainerHandle;
use http::{ServeCounters, Served};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How a replica is set up.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ServingConfig {
    pub shape: ModelShape,
    pub slots: SlotSet,
    /// Address the endpoint binds. With port 0 (any free port) a restarted replica comes back
    /// on another port; give a fixed one where clients must find it again.
    pub bind: String,
    /// Longest a sync waits for the shards and the trainer.
    pub sync_timeout_ms: u64,
}

/// What a sync did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SyncReport {
    pub version: u64,
    /// When the version went live (microseconds since the Unix epoch); 0 if nothing changed.
    pub live_unix_us: u64,
    pub rows_received: u64,
    pub rows_removed: u64,
    pub full_copies: u32,
    /// Bytes of rows received (ids and values) and of the dense parameters.
    pub bytes: u64,
    pub rows_held: u64,
}

/// A replica's counters.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReplicaStatus {
    pub address: String,
    pub version: u64,
    pub rows: u64,
    pub answered: u64,
    pub refused: u64,
    pub syncs: u64,
    pub failed_syncs: u64,
    pub last_sync_error: String,
}

pub struct ServingReplica {
    config: ServingConfig,
    shards: Vec<EmbeddingShardHandle>,
    trainer: OnlineTrainerHandle,
    versions: Versions,
    address: String,
    counters: Arc<ServeCounters>,
    server: tokio::task::JoinHandle<()>,
    syncs: u64,
    failed_syncs: u64,
    last_sync_error: String,
}

impl Drop for ServingReplica {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[troupe::actor]
impl ServingReplica {
    pub async fn new(
        config: ServingConfig,
        layout: ShardLayout,
        trainer: OnlineTrainerHandle,
    ) -> Result<Self, RecsysError> {
        let shards = layout.current().await?;
        let listener = tokio::net::TcpListener::bind(&config.bind)
            .await
            .map_err(|source| RecsysError::Io {
                what: "prediction endpoint",
                path: config.bind.clone(),
                source,
            })?;
        let address = listener
            .local_addr()
            .map_err(|source| RecsysError::Io {
                what: "prediction endpoint",
                path: config.bind.clone(),
                source,
            })?
            .to_string();
        let versions = Versions::default();
        let counters = Arc::new(ServeCounters::default());
        let served = Served {
            live: versions.shared(),
            shape: config.shape,
            slots: config.slots.clone(),
            counters: counters.clone(),
        };
        let server = tokio::spawn(http::serve(listener, served));
        tracing::info!(%address, "serving replica listening");
        Ok(ServingReplica {
            config,
            shards,
            trainer,
            versions,
            address,
            counters,
            server,
            syncs: 0,
            failed_syncs: 0,
            last_sync_error: String::new(),
        })
    }

    /// The prediction endpoint's `host:port`.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Catches up to the trainer's sealed `version`; on failure keeps serving what it had.
    pub async fn sync(&mut self, version: u64) -> Result<SyncReport, RecsysError> {
        let timeout = Duration::from_millis(self.config.sync_timeout_ms.max(1));
        match tokio::time::timeout(timeout, self.fetch(version)).await {
            Ok(Ok(Some((update, mut report)))) => {
                report.live_unix_us = self.versions.install(update);
                report.rows_held = self.versions.current().rows.len() as u64;
                self.syncs += 1;
                Ok(report)
            }
            Ok(Ok(None)) => Ok(SyncReport {
                version: self.versions.current().version,
                ..SyncReport::default()
            }),
            Ok(Err(err)) => {
                self.failed_syncs += 1;
                self.last_sync_error = err.to_string();
                Err(err)
            }
            Err(_) => {
                self.failed_syncs += 1;
                self.last_sync_error = format!("sync to version {version} took over {timeout:?}");
                Err(RecsysError::BadBatch(self.last_sync_error.clone()))
            }
        }
    }

    pub fn status(&self) -> ReplicaStatus {
        let current = self.versions.current();
        ReplicaStatus {
            address: self.address.clone(),
            version: current.version,
            rows: current.rows.len() as u64,
            answered: self.counters.answered.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            syncs: self.syncs,
            failed_syncs: self.failed_syncs,
            last_sync_error: self.last_sync_error.clone(),
        }
    }

    /// Takes the shards of a new layout (rows already held stay: moving rows are not changes).
    pub fn set_shards(&mut self, shards: Vec<EmbeddingShardHandle>) {
        self.shards = shards;
    }
}

impl ServingReplica {
    /// Everything the next version needs, or `None` when `version` is not newer.
    async fn fetch(&self, version: u64) -> Result<Option<(Update, SyncReport)>, RecsysError> {
        let after = self.versions.current().version;
        if version <= after {
            return Ok(None);
        }
        let chains = futures::future::try_join_all(self.shards.iter().enumerate().map(
            |(shard, handle)| async move {
                handle
                    .changes(after, version)
                    .await
                    .map_err(RecsysError::call(format!("changes of shard {shard}")))
            },
        ));
        let dense = async {
            self.trainer
                .dense(version)
                .await
                .map_err(RecsysError::call("the trainer's dense parameters"))
        };
        let (chains, dense) = futures::future::try_join(chains, dense).await?;
        let mut report = SyncReport {
            version,
            bytes: dense.values.len() as u64 * 4,
            ..SyncReport::default()
        };
        let mut deltas = Vec::new();
        for delta in chains.into_iter().flatten() {
            report.rows_received += delta.ids.len() as u64;
            report.rows_removed += delta.removed.len() as u64;
            report.full_copies += u32::from(delta.full);
            report.bytes += delta.payload_bytes();
            deltas.push(Arc::new(delta));
        }
        Ok(Some((
            Update {
                version,
                shards: self.shards.len() as u32,
                deltas,
                dense: Arc::new(dense),
            },
            report,
        )))
    }
}
