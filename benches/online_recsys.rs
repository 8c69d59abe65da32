//! online_recsys: the online-learning stack's figures, measured in one run on the embedded
//! cluster (see docs/recsys.md for what each means and the goals):
//!
//! - `auc_online` against `auc_batch`: progressive AUC on the last 20% of the MovieLens-100K
//!   time line, against the same model trained once on the first 80% (in this run);
//! - `freshness_p50_s`, `freshness_p99_s`: from an event's arrival to a served version that
//!   holds the step it trained in, per replica (goal: p99 under `sync_period_s` + 1 s);
//! - `lookups_per_s_per_shard`, `updates_per_s_per_shard`: rows per second through one shard
//!   actor on one core, in batched calls (goal: a million lookups);
//! - `serving_p99_ms` at `serving_requests_per_s`: open-loop prediction requests over HTTP
//!   while the replicas sync;
//! - `sync_bytes` against `full_copy_bytes`: what a replica received per sync, against a full
//!   copy of the tables and the dense part at the same syncs.
//!
//! Run: `cargo bench --bench online_recsys -- --json target/online_recsys.json`

use std::time::Duration;
use troupe_recsys::movielens::{cache_dir, MovieLens};
use troupe_recsys::online::{self, OnlineConfig};

fn main() -> anyhow::Result<()> {
    troupe::init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let data = MovieLens::load(&cache_dir())?;
        let scratch =
            std::env::temp_dir().join(format!("troupe-bench-recsys-{}", std::process::id()));
        let config = OnlineConfig {
            shard_dir: Some(scratch.clone()),
            sync_period: Duration::from_secs(1),
            progress: false,
            throughput_seconds: 3.0,
            ..OnlineConfig::default()
        };
        let cluster = troupe::Cluster::local().await?;
        let run = online::run(&cluster, &data, &config, |_| {}).await;
        cluster.shutdown().await;
        let _ = std::fs::remove_dir_all(&scratch);
        let run = run?;
        println!("{}", online::summary(&run));
        // Cargo runs a bench in its package's directory; a relative path is taken from the
        // workspace root, where the command is run.
        let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        if let Some(path) = troupe::report::json_path_arg().map(|path| workspace.join(path)) {
            let written = troupe::report::write_json(&path, &serde_json::to_value(&run.figures)?)?;
            println!("wrote {}", written.display());
        }
        Ok(())
    })
}
