//! grpo_arithmetic: GRPO teaches a ~1.3M-parameter decoder three-digit addition, on the embedded
//! local cluster (or an existing one with `--cluster`).
//!
//! A short supervised warm start (until 15% of 500 held-out problems are answered exactly) is
//! followed by GRPO through a troupe pipeline: 2 rollout actors, 1 reference, 1 reward (exact
//! answer + 0.1 for a well-formed one), 2 trainers averaging gradients over TCP, and the
//! trainers' weights resharded to the rollouts after every step. Under `--out`: metrics.jsonl,
//! sft_metrics.jsonl, curves.png, pipeline.dot and the final checkpoint (Hugging Face layout).
//!
//! Run: `cargo run --release -p troupe-actors --example grpo_arithmetic -- --json runs/grpo.json`

use clap::Parser;
use std::path::PathBuf;
use troupe_actors::recipes::grpo::{run, GrpoConfig};
use troupe_actors::recipes::warm_start::WarmStartConfig;

/// GRPO on three-digit addition.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// GRPO steps after the warm start.
    #[arg(long, default_value_t = GrpoConfig::default().steps)]
    steps: usize,
    /// Samples per prompt (the group GRPO normalises rewards within).
    #[arg(long, default_value_t = GrpoConfig::default().group_size)]
    group_size: usize,
    /// Prompts per step.
    #[arg(long, default_value_t = GrpoConfig::default().batch)]
    batch: usize,
    /// Peak learning rate of GRPO (cosine decay to 5% over the steps).
    #[arg(long, default_value_t = GrpoConfig::default().lr)]
    lr: f64,
    /// Weight of the KL penalty to the reference policy.
    #[arg(long, default_value_t = GrpoConfig::default().kl_coef)]
    kl_coef: f64,
    /// Let rollouts run up to this many steps ahead of training (0: synchronous).
    #[arg(long, default_value_t = 0)]
    max_staleness: usize,
    /// Seeds the model, the problems and the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run on the cluster whose head listens at this address (default: an embedded one).
    #[arg(long)]
    cluster: Option<String>,
    /// Directory for metrics, the plot and the checkpoint.
    #[arg(long, default_value = "runs/grpo_arithmetic")]
    out: PathBuf,
    /// The warm start stops once this share of held-out problems is answered exactly.
    #[arg(long, default_value_t = WarmStartConfig::default().target_accuracy)]
    warm_start_target: f64,
    /// ... or after this many supervised steps.
    #[arg(long, default_value_t = WarmStartConfig::default().max_steps)]
    warm_start_max_steps: usize,
    /// Also write the run's figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    troupe::init();
    let args = Args::parse();
    let config = GrpoConfig {
        steps: args.steps,
        group_size: args.group_size,
        batch: args.batch,
        lr: args.lr,
        kl_coef: args.kl_coef,
        max_staleness: args.max_staleness,
        seed: args.seed,
        cluster: args.cluster,
        out: args.out,
        warm_start: WarmStartConfig {
            target_accuracy: args.warm_start_target,
            max_steps: args.warm_start_max_steps,
            ..WarmStartConfig::default()
        },
        ..GrpoConfig::default()
    };
    let report = run(&config).await?;
    if let Some(path) = args.json {
        let written = troupe::report::write_json(&path, &serde_json::to_value(&report)?)?;
        println!("wrote {}", written.display());
    }
    Ok(())
}
