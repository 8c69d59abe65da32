//! Where a trainer's rows live: in this process (`Store::Local`, the batch baseline and unit
//! tests) or in shard actors (`Store::Sharded`). Either way a batch's ids are split by jump
//! hash, each shard gets its part in one call (all shards at once), and the answers are put
//! back in the batch's order. Calls to a shard that is restarting are retried until a deadline:
//! updates carry the step, so a retried update is applied once.

use crate::error::RecsysError;
use crate::features::shard_of;
use crate::shard::{EmbeddingShardHandle, SealSummary};
use crate::table::{EmbeddingTable, TableStats, UpdateBatch};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a call to a restarting shard is retried.
pub const SHARD_RETRY_DEADLINE: Duration = Duration::from_secs(60);

pub enum Store {
    Local(Mutex<Vec<EmbeddingTable>>),
    Sharded(Vec<EmbeddingShardHandle>),
}

/// A batch's ids split by shard: each shard's ids and where each came from in the batch.
struct Split {
    ids: Vec<Vec<u64>>,
    positions: Vec<Vec<usize>>,
}

fn split(ids: &[u64], shards: u32) -> Split {
    let mut split = Split {
        ids: vec![Vec::new(); shards as usize],
        positions: vec![Vec::new(); shards as usize],
    };
    for (position, &id) in ids.iter().enumerate() {
        let shard = shard_of(id, shards) as usize;
        split.ids[shard].push(id);
        split.positions[shard].push(position);
    }
    split
}

/// Runs a shard call again while it fails for a reason other than the shard's own answer,
/// until `SHARD_RETRY_DEADLINE`.
pub async fn retried<T, F, Fut>(what: &str, mut call: F) -> Result<T, RecsysError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = troupe::Result<T>>,
{
    let started = Instant::now();
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err @ troupe::Error::Method { .. }) => return Err(RecsysError::call(what)(err)),
            Err(err) if started.elapsed() < SHARD_RETRY_DEADLINE => {
                tracing::warn!(%err, what, "shard call failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => {
                return Err(RecsysError::call(format!(
                    "{what} (gave up after {:?})",
                    SHARD_RETRY_DEADLINE
                ))(err))
            }
        }
    }
}

/// `call` on every shard at once, each retried (see `retried`); answers in shard order.
async fn on_every_shard<'a, T, F, Fut>(
    handles: &'a [EmbeddingShardHandle],
    what: &str,
    call: F,
) -> Result<Vec<T>, RecsysError>
where
    F: Fn(usize, &'a EmbeddingShardHandle) -> Fut,
    Fut: Future<Output = troupe::Result<T>>,
{
    futures::future::try_join_all(handles.iter().enumerate().map(|(shard, handle)| {
        let call = &call;
        async move { retried(&format!("{what} of shard {shard}"), || call(shard, handle)).await }
    }))
    .await
}

impl Store {
    pub fn shards(&self) -> u32 {
        match self {
            Store::Local(tables) => tables.lock().expect("tables").len() as u32,
            Store::Sharded(handles) => handles.len() as u32,
        }
    }

    /// `width` values per id, in the batch's order.
    pub async fn lookup(&self, ids: &[u64], width: usize) -> Result<Vec<f32>, RecsysError> {
        let parts = split(ids, self.shards());
        let answers: Vec<Vec<f32>> = match self {
            Store::Local(tables) => {
                let mut tables = tables.lock().expect("tables");
                tables
                    .iter_mut()
                    .zip(&parts.ids)
                    .map(|(table, ids)| table.lookup(ids))
                    .collect::<Result<_, _>>()?
            }
            Store::Sharded(handles) => {
                futures::future::try_join_all(handles.iter().zip(&parts.ids).enumerate().map(
                    |(shard, (handle, ids))| async move {
                        if ids.is_empty() {
                            return Ok(Vec::new());
                        }
                        retried(&format!("lookup on shard {shard}"), || {
                            handle.lookup(ids.clone())
                        })
                        .await
                    },
                ))
                .await?
            }
        };
        let mut out = vec![0.0f32; ids.len() * width];
        for (answer, positions) in answers.iter().zip(&parts.positions) {
            if answer.len() != positions.len() * width {
                return Err(RecsysError::BadBatch(format!(
                    "a shard answered {} values for {} ids of width {width}",
                    answer.len(),
                    positions.len()
                )));
            }
            for (row, &position) in positions.iter().enumerate() {
                out[position * width..(position + 1) * width]
                    .copy_from_slice(&answer[row * width..(row + 1) * width]);
            }
        }
        Ok(out)
    }

    /// Sends step `step`'s gradients to every shard (an empty batch to shards with no ids, so
    /// every shard's version is the step).
    pub async fn update(
        &self,
        step: u64,
        event_time: u64,
        ids: &[u64],
        counts: &[u32],
        grads: &[f32],
        width: usize,
    ) -> Result<(), RecsysError> {
        let parts = split(ids, self.shards());
        let batches: Vec<UpdateBatch> = parts
            .ids
            .iter()
            .zip(&parts.positions)
            .map(|(shard_ids, positions)| UpdateBatch {
                step,
                event_time,
                ids: shard_ids.clone(),
                counts: positions.iter().map(|&p| counts[p]).collect(),
                grads: positions
                    .iter()
                    .flat_map(|&p| grads[p * width..(p + 1) * width].iter().copied())
                    .collect(),
            })
            .collect();
        match self {
            Store::Local(tables) => {
                let mut tables = tables.lock().expect("tables");
                for (table, batch) in tables.iter_mut().zip(&batches) {
                    table.apply(batch)?;
                }
            }
            Store::Sharded(handles) => {
                on_every_shard(handles, "update", |shard, handle| {
                    handle.update(batches[shard].clone())
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Seals every shard at `version`.
    pub async fn seal(&self, version: u64) -> Result<Vec<SealSummary>, RecsysError> {
        match self {
            Store::Local(tables) => {
                let mut tables = tables.lock().expect("tables");
                let mut summaries = Vec::new();
                for table in tables.iter_mut() {
                    let delta = table.seal(version)?;
                    summaries.push(SealSummary::of(&delta, table));
                }
                Ok(summaries)
            }
            Store::Sharded(handles) => {
                on_every_shard(handles, "seal", |_, handle| handle.seal(version)).await
            }
        }
    }

    /// Every shard's counters.
    pub async fn stats(&self) -> Result<Vec<TableStats>, RecsysError> {
        match self {
            Store::Local(tables) => Ok(tables
                .lock()
                .expect("tables")
                .iter()
                .map(|table| table.stats())
                .collect()),
            Store::Sharded(handles) => {
                on_every_shard(handles, "stats", |_, handle| handle.stats()).await
            }
        }
    }
}
