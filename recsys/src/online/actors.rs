//! The actors of an online run: spawning them (shards named so a restarted trainer or replica
//! finds the current layout, replicas on fixed ports so a restarted one is found again),
//! sealing and syncing every replica at once, checking that the replicas answer exactly what
//! the trainer scores, the fault the run can inject, and stopping them.

use super::OnlineConfig;
use crate::error::RecsysError;
use crate::layout::ShardLayout;
use crate::model::Example;
use crate::serving::{
    PredictClient, PredictRequest, ServingConfig, ServingReplica, ServingReplicaHandle,
};
use crate::shard::{EmbeddingShard, EmbeddingShardHandle};
use crate::trainer::{OnlineTrainer, OnlineTrainerHandle};
use troupe::Cluster;

pub(super) struct Actors {
    pub(super) prefix: String,
    pub(super) shards: Vec<EmbeddingShardHandle>,
    pub(super) trainer: OnlineTrainerHandle,
    pub(super) replicas: Vec<ServingReplicaHandle>,
    pub(super) addresses: Vec<String>,
}

/// A loopback port free now, for a replica to bind for good.
fn free_port() -> Result<u16, RecsysError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| RecsysError::Io {
            what: "choosing a replica port",
            path: "127.0.0.1:0".to_string(),
            source,
        })?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|source| RecsysError::Io {
            what: "choosing a replica port",
            path: "127.0.0.1:0".to_string(),
            source,
        })
}

/// Spawns into `actors` as it goes, so that whatever was spawned is stopped on an error.
pub(super) async fn spawn(
    cluster: &Cluster,
    config: &OnlineConfig,
    actors: &mut Option<Actors>,
) -> Result<(), RecsysError> {
    let prefix = format!("recsys-{}-{}", std::process::id(), crate::unix_micros());
    let mut shards = Vec::new();
    let spawned = async {
        for shard in 0..config.shards {
            let options = config.options().name(ShardLayout::name(&prefix, shard));
            let handle =
                EmbeddingShard::spawn(cluster, options, config.shard_spec(shard, config.shards))
                    .await
                    .map_err(RecsysError::call(format!("spawning shard {shard}")))?;
            shards.push(handle);
        }
        let layout = ShardLayout {
            prefix: Some(prefix.clone()),
            handles: shards.clone(),
        };
        let trainer =
            OnlineTrainer::spawn(cluster, config.options(), config.trainer(), layout.clone())
                .await
                .map_err(RecsysError::call("spawning the trainer"))?;
        Ok::<_, RecsysError>((layout, trainer))
    }
    .await;
    let (layout, trainer) = match spawned {
        Ok(spawned) => spawned,
        Err(err) => {
            for shard in &shards {
                let _ = cluster.kill(shard).await;
            }
            return Err(err);
        }
    };
    let set = actors.insert(Actors {
        prefix,
        shards,
        trainer,
        replicas: Vec::new(),
        addresses: Vec::new(),
    });
    for replica in 0..config.replicas {
        let serving = ServingConfig {
            shape: config.shape(),
            slots: config.table().slots,
            bind: format!("127.0.0.1:{}", free_port()?),
            sync_timeout_ms: 10_000,
        };
        let handle = ServingReplica::spawn(
            cluster,
            config.options(),
            serving,
            layout.clone(),
            set.trainer.clone(),
        )
        .await
        .map_err(RecsysError::call(format!("spawning replica {replica}")))?;
        set.replicas.push(handle.clone());
        set.addresses.push(
            handle
                .address()
                .await
                .map_err(RecsysError::call("a replica's address"))?,
        );
    }
    Ok(())
}

/// Stops every actor of the run (errors are logged: the run's outcome is already decided).
pub(super) async fn stop(cluster: &Cluster, actors: &Actors) {
    for replica in &actors.replicas {
        if let Err(err) = cluster.kill(replica).await {
            tracing::warn!(%err, "a replica did not stop");
        }
    }
    if let Err(err) = cluster.kill(&actors.trainer).await {
        tracing::warn!(%err, "the trainer did not stop");
    }
    for shard in &actors.shards {
        if let Err(err) = cluster.kill(shard).await {
            tracing::warn!(%err, "a shard did not stop");
        }
    }
}

/// Seals now and has every replica take that version; returns it and the replicas' errors.
pub(super) async fn seal_and_sync(
    trainer: &OnlineTrainerHandle,
    replicas: &[ServingReplicaHandle],
) -> Result<(u64, Vec<String>), RecsysError> {
    let seal = trainer.seal().await.map_err(RecsysError::call("sealing"))?;
    let results =
        futures::future::join_all(replicas.iter().map(|replica| replica.sync(seal.version))).await;
    let errors = results
        .into_iter()
        .enumerate()
        .filter_map(|(replica, result)| result.err().map(|err| format!("replica {replica}: {err}")))
        .collect();
    Ok((seal.version, errors))
}

/// The largest difference between a replica's answer (over HTTP, at `version`) and the trainer's
/// own score, over `probes` and every replica.
pub(super) async fn serving_gap(
    trainer: &OnlineTrainerHandle,
    addresses: &[String],
    probes: &[Example],
    version: u64,
) -> Result<f64, RecsysError> {
    let expected = trainer
        .predict(probes.to_vec())
        .await
        .map_err(RecsysError::call("the trainer's scores of the probes"))?;
    let check = async {
        let mut gap = 0.0f64;
        for address in addresses {
            let mut client = PredictClient::connect(address)
                .await
                .map_err(|err| RecsysError::Data(err.to_string()))?;
            for (probe, want) in probes.iter().zip(&expected) {
                let reply = client
                    .predict(&PredictRequest {
                        fields: probe.fields.clone(),
                        min_version: version,
                    })
                    .await
                    .map_err(|err| RecsysError::Data(err.to_string()))?;
                gap = gap.max((f64::from(reply.score) - f64::from(*want)).abs());
            }
        }
        Ok(gap)
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), check)
        .await
        .unwrap_or_else(|_| {
            Err(RecsysError::Data(
                "the replicas did not answer the final check within 30 s".to_string(),
            ))
        })
}

/// Kills a shard's worker process with SIGKILL (the fault the run survives).
pub(super) async fn kill_shard(
    cluster: &Cluster,
    shard: &EmbeddingShardHandle,
) -> Result<u32, RecsysError> {
    let info = cluster
        .actor_info(shard)
        .await
        .map_err(RecsysError::call("the shard's record"))?;
    if info.pid == 0 {
        return Err(RecsysError::Data(
            "the shard has no process to kill (it is starting or restarting)".to_string(),
        ));
    }
    // SAFETY: kill(2) on the pid the head reports for the shard's worker (never 0: that would
    // be this process group).
    unsafe {
        libc::kill(info.pid as i32, libc::SIGKILL);
    }
    Ok(info.pid)
}
