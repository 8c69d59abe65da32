//! Changing the number of shards while keeping every row: new shards are spawned (or the last
//! ones retired), each old shard hands over the rows jump hashing now places elsewhere, the
//! receivers take them, every shard checkpoints its new layout, and the trainer and the
//! replicas are given the new shard list. The caller holds the trainer between steps and has
//! sealed and synced every replica at `synced_at` first: rows that move are then not changes,
//! replicas need no copy, and a retiring shard leaves no unsynced seal behind.
//!
//! Not crash-safe: a shard that dies between handing rows over and its checkpoint comes back
//! with its old layout and rows. Re-distribute when the shards are healthy.

use crate::error::RecsysError;
use crate::shard::{EmbeddingShard, EmbeddingShardHandle, ShardSpec};
use crate::table::RowsExport;

/// What a re-distribution did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RebalanceReport {
    pub shards_before: u32,
    pub shards_after: u32,
    pub rows_moved: u64,
}

/// Moves from `shards` to `new_count` shards; `spec_of(index)` makes the spec of a new shard
/// (its `shard`/`shards` are set here) and `options` its placement. Returns the new list.
pub async fn rebalance(
    cluster: &troupe::Cluster,
    shards: Vec<EmbeddingShardHandle>,
    new_count: u32,
    synced_at: u64,
    spec_of: impl Fn(u32) -> ShardSpec,
    options: impl Fn(u32) -> troupe::SpawnOptions,
) -> Result<(Vec<EmbeddingShardHandle>, RebalanceReport), RecsysError> {
    let before = shards.len() as u32;
    if new_count == 0 {
        return Err(RecsysError::BadBatch(
            "a table needs at least one shard".to_string(),
        ));
    }
    let mut all = shards;
    let spawned_new = all.len();
    let moved = async {
        for index in before..new_count {
            let mut spec = spec_of(index);
            spec.shard = index;
            spec.shards = new_count;
            let handle = EmbeddingShard::spawn(cluster, options(index), spec)
                .await
                .map_err(RecsysError::call(format!("spawning shard {index}")))?;
            all.push(handle);
        }
        // Every shard gives up what is not its own in the new layout; a retiring shard, all.
        let mut exports: Vec<RowsExport> = Vec::new();
        for (index, handle) in all.iter().enumerate() {
            let index = index as u32;
            let export = if index < new_count {
                handle.export_moving(index, new_count).await
            } else {
                handle.export_all().await
            }
            .map_err(RecsysError::call(format!("rows leaving shard {index}")))?;
            exports.push(export);
        }
        let width = spec_of(0).config.width();
        let mut moved = 0u64;
        for (to, handle) in all.iter().take(new_count as usize).enumerate() {
            let mut part = RowsExport::default();
            for export in &exports {
                let piece = export.for_shard(to as u32, new_count, width);
                moved += piece.ids.len() as u64;
                part.append(piece);
            }
            handle
                .import(part, synced_at)
                .await
                .map_err(RecsysError::call(format!("rows arriving at shard {to}")))?;
        }
        let kept: Vec<EmbeddingShardHandle> =
            all.iter().take(new_count as usize).cloned().collect();
        for (index, handle) in kept.iter().enumerate() {
            handle
                .checkpoint()
                .await
                .map_err(RecsysError::call(format!("checkpoint of shard {index}")))?;
        }
        for (index, handle) in all.iter().enumerate().skip(new_count as usize) {
            // The retired shard's files now hold an empty table, not rows others own.
            handle
                .checkpoint()
                .await
                .map_err(RecsysError::call(format!(
                    "checkpoint of retiring shard {index}"
                )))?;
            if let Err(err) = cluster.kill(handle).await {
                tracing::warn!(%err, "a retired shard did not stop");
            }
        }
        Ok::<_, RecsysError>((kept, moved))
    }
    .await;
    let (kept, moved) = match moved {
        Ok(done) => done,
        Err(err) => {
            // New shards that did not become part of a layout are stopped.
            for handle in all.iter().skip(spawned_new) {
                let _ = cluster.kill(handle).await;
            }
            return Err(err);
        }
    };
    Ok((
        kept,
        RebalanceReport {
            shards_before: before,
            shards_after: new_count,
            rows_moved: moved,
        },
    ))
}
