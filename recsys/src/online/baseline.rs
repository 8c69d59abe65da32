//! The measures beside the online run: the batch baseline (the same model and code, trained in
//! this process on the first part of the time line, shuffled, then frozen and scored on the
//! rest) and a shard's throughput (batched lookups and updates through a real shard actor on
//! one core, and the table alone without the call).

use super::OnlineConfig;
use crate::error::RecsysError;
use crate::features::{mix64, FeatureId};
use crate::model::Example;
use crate::shard::{EmbeddingShard, ShardSpec};
use crate::store::Store;
use crate::table::{EmbeddingTable, TableConfig, UpdateBatch};
use crate::trainer::{Trainer, TrainerConfig};
use std::sync::Mutex;
use std::time::Instant;

/// Trains on `train` (shuffled, `epochs` passes) and scores `test`; returns the test scores.
pub async fn batch_baseline(
    config: &OnlineConfig,
    table: &TableConfig,
    trainer: &TrainerConfig,
    train: &[(Example, u64)],
    test: &[Example],
) -> Result<Vec<f32>, RecsysError> {
    // No eviction: a model trained once on a shuffled history has no clock to evict by.
    let table = TableConfig {
        ttl_s: 0,
        ..table.clone()
    };
    let tables = (0..config.shards)
        .map(|shard| EmbeddingTable::new(table.clone(), shard, config.shards))
        .collect::<Result<Vec<_>, _>>()?;
    // Nothing saved: the online trainer's state is not this model's starting point.
    let trainer = TrainerConfig {
        dir: None,
        ..trainer.clone()
    };
    let mut model = Trainer::new(trainer, Store::Local(Mutex::new(tables))).await?;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut state = mix64(config.seed ^ 0xba7c);
    for epoch in 0..config.batch_epochs.max(1) {
        // Fisher-Yates with a seeded generator.
        for i in (1..order.len()).rev() {
            state = mix64(state ^ epoch as u64);
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        for chunk in order.chunks(config.batch_size) {
            let examples: Vec<Example> = chunk.iter().map(|&i| train[i].0.clone()).collect();
            let time = chunk.iter().map(|&i| train[i].1).max().unwrap_or(0);
            model.train(&examples, time).await?;
        }
    }
    let mut scores = Vec::with_capacity(test.len());
    for chunk in test.chunks(config.batch_size) {
        scores.extend(model.predict(chunk).await?);
    }
    Ok(scores)
}

/// Rows per second through one shard actor (batched calls from this process) and through the
/// table alone.
#[derive(Clone, Debug, Default)]
pub struct Throughput {
    pub lookups_per_s: f64,
    pub updates_per_s: f64,
    pub table_lookups_per_s: f64,
    pub table_updates_per_s: f64,
    pub rows: u64,
    pub batch: usize,
}

const THROUGHPUT_ROWS: u64 = 200_000;
const THROUGHPUT_BATCH: usize = 8192;

/// Batch `index` of timed updates: `THROUGHPUT_BATCH` distinct ids (a stride through the rows
/// from a seeded start), as the trainer sends them.
fn throughput_batch(width: usize, step: u64, index: u64) -> UpdateBatch {
    let start = mix64(index) % THROUGHPUT_ROWS;
    // Coprime with the row count (200,000 = 2^6 * 5^5), so the 8,192 ids are distinct.
    const STRIDE: u64 = 7_919;
    let ids: Vec<u64> = (0..THROUGHPUT_BATCH as u64)
        .map(|k| {
            FeatureId::new(1, (start + k * STRIDE) % THROUGHPUT_ROWS)
                .expect("small")
                .0
        })
        .collect();
    UpdateBatch {
        step,
        event_time: 0,
        counts: vec![1; ids.len()],
        grads: vec![0.01; ids.len() * width],
        ids,
    }
}

/// Fills a shard with `THROUGHPUT_ROWS` rows, then times batched lookups and updates for about
/// `seconds` each. The shard reserves one CPU and logs its updates to `dir` when given.
pub async fn shard_throughput(
    cluster: &troupe::Cluster,
    table: &TableConfig,
    seconds: f64,
    dir: Option<std::path::PathBuf>,
) -> Result<Throughput, RecsysError> {
    let table = TableConfig {
        min_count: 1,
        ttl_s: 0,
        ..table.clone()
    };
    let width = table.width();
    let spec = ShardSpec {
        config: table.clone(),
        shard: 0,
        shards: 1,
        dir,
        // As the online run's shards: a checkpoint every 50 steps is part of an update's cost.
        checkpoint_every: 50,
    };
    let shard = EmbeddingShard::spawn(cluster, troupe::SpawnOptions::new().num_cpus(1.0), spec)
        .await
        .map_err(RecsysError::call("spawning the throughput shard"))?;
    let all: Vec<u64> = (0..THROUGHPUT_ROWS)
        .map(|v| FeatureId::new(1, v).expect("small").0)
        .collect();
    let lookups: Vec<Vec<u64>> = (0..16)
        .map(|i| throughput_batch(width, 0, 1000 + i).ids)
        .collect();
    let timed = async {
        let mut step = 1u64;
        for ids in all.chunks(THROUGHPUT_BATCH) {
            let batch = UpdateBatch {
                step,
                event_time: 0,
                ids: ids.to_vec(),
                counts: vec![1; ids.len()],
                grads: vec![0.0; ids.len() * width],
            };
            shard
                .update(batch)
                .await
                .map_err(RecsysError::call("filling the throughput shard"))?;
            step += 1;
        }
        let mut figures = Throughput {
            rows: THROUGHPUT_ROWS,
            batch: THROUGHPUT_BATCH,
            ..Throughput::default()
        };
        // Lookups: one call at a time, as the trainer makes them (one per shard per step).
        let started = Instant::now();
        let mut done = 0usize;
        while started.elapsed().as_secs_f64() < seconds {
            shard
                .lookup(lookups[done % lookups.len()].clone())
                .await
                .map_err(RecsysError::call("timed lookups"))?;
            done += 1;
        }
        figures.lookups_per_s = (done * THROUGHPUT_BATCH) as f64 / started.elapsed().as_secs_f64();
        // Updates: one at a time (steps are ordered), each logged, a checkpoint every 50.
        let started = Instant::now();
        let mut done = 0u64;
        while started.elapsed().as_secs_f64() < seconds {
            shard
                .update(throughput_batch(width, step + done, done))
                .await
                .map_err(RecsysError::call("timed updates"))?;
            done += 1;
        }
        figures.updates_per_s =
            (done as usize * THROUGHPUT_BATCH) as f64 / started.elapsed().as_secs_f64();
        Ok::<_, RecsysError>(figures)
    }
    .await;
    if let Err(err) = cluster.kill(&shard).await {
        tracing::warn!(%err, "the throughput shard did not stop");
    }
    let mut figures = timed?;
    // The table alone, in this process.
    let mut local = EmbeddingTable::new(table, 0, 1)?;
    for (i, ids) in all.chunks(THROUGHPUT_BATCH).enumerate() {
        local.apply(&UpdateBatch {
            step: i as u64 + 1,
            event_time: 0,
            ids: ids.to_vec(),
            counts: vec![1; ids.len()],
            grads: vec![0.0; ids.len() * width],
        })?;
    }
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed().as_secs_f64() < seconds / 2.0 {
        std::hint::black_box(local.lookup(&lookups[done % lookups.len()])?);
        done += 1;
    }
    figures.table_lookups_per_s =
        (done * THROUGHPUT_BATCH) as f64 / started.elapsed().as_secs_f64();
    let first = local.version() + 1;
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed().as_secs_f64() < seconds / 2.0 {
        local.apply(&throughput_batch(width, first + done, done))?;
        done += 1;
    }
    let done = done as usize;
    figures.table_updates_per_s =
        (done * THROUGHPUT_BATCH) as f64 / started.elapsed().as_secs_f64();
    Ok(figures)
}
