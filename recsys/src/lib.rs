//! troupe-recsys: online learning for recommendation models on troupe's actor runtime.
//!
//! - `table` and `shard`: an embedding table split over shard actors by jump hash of the
//!   feature id, one row per id (no collisions), with admission, TTL eviction, Adagrad state
//!   per row, a write-ahead log and checkpoints, changed-row seals for serving, and rows
//!   re-distributed when shards are added or removed (`rebalance`);
//! - `model` and `trainer`: a DeepFM-style dense model trained online with the rows, a
//!   mini-batch at a time, scoring each event before it trains on it;
//! - `serving`: replicas holding a read copy, synced with changed rows only, answering
//!   predictions over HTTP from one consistent version;
//! - `movielens` and `online`: the MovieLens-100K stream and the whole online run the example
//!   and the bench drive (see docs/recsys.md).

pub mod error;
pub mod features;
pub mod layout;
pub mod metrics;
pub mod model;
pub mod movielens;
pub mod online;
pub mod rebalance;
pub mod serving;
pub mod shard;
pub mod store;
pub mod table;
pub mod trainer;

pub use error::RecsysError;

/// Microseconds since the Unix epoch, by this machine's clock.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}
