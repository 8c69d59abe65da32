//! ppo_reward_model: PPO against a learned reward model, on three-digit addition, on the embedded
//! local cluster (or an existing one with `--cluster`).
//!
//! The policy is warm-started as in grpo_arithmetic; a reward model (the warm-started decoder with
//! a scalar head) is trained with the Bradley-Terry loss on synthetic preference pairs (a right
//! answer over a wrong one of the same kind); then PPO trains the policy on the reward model's
//! scores with a critic (GAE advantages) and a per-token KL penalty to the reference. The
//! reward-model score rises while the KL stays bounded. Under `--out`: metrics.jsonl,
//! sft_metrics.jsonl, reward_model_metrics.jsonl, curves.png, pipeline.dot, the checkpoint.
//!
//! Run: `cargo run --release -p troupe-actors --example ppo_reward_model -- --json runs/ppo.json`

use clap::Parser;
use std::path::PathBuf;
use troupe_actors::recipes::faults::parse_faults;
use troupe_actors::recipes::ppo::{run, PpoConfig};
use troupe_actors::recipes::warm_start::WarmStartConfig;
use troupe_actors::tasks::arithmetic::AdditionTask;

/// PPO with a learned reward model on three-digit addition.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// PPO steps after the warm start and the reward-model training.
    #[arg(long, default_value_t = PpoConfig::default().steps)]
    steps: usize,
    /// Prompts per step.
    #[arg(long, default_value_t = PpoConfig::default().batch)]
    batch: usize,
    /// Samples per prompt.
    #[arg(long, default_value_t = PpoConfig::default().samples)]
    samples: usize,
    /// Peak learning rate of the policy (cosine decay to 5% over the steps).
    #[arg(long, default_value_t = PpoConfig::default().lr)]
    lr: f64,
    /// Learning rate of the critic.
    #[arg(long, default_value_t = PpoConfig::default().critic_lr)]
    critic_lr: f64,
    /// Weight of the per-token KL penalty to the reference, paid in the rewards.
    #[arg(long, default_value_t = PpoConfig::default().kl_coef)]
    kl_coef: f64,
    /// Let rollouts run up to this many steps ahead of training (0: synchronous).
    #[arg(long, default_value_t = 0)]
    max_staleness: usize,
    /// Seeds the models, the problems, the preference pairs and the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run on the cluster whose head listens at this address (default: an embedded one).
    #[arg(long)]
    cluster: Option<String>,
    /// Directory for metrics, the plot and the checkpoints.
    #[arg(long, default_value = "runs/ppo_reward_model")]
    out: PathBuf,
    /// The warm start stops once this share of held-out problems is answered exactly.
    #[arg(long, default_value_t = WarmStartConfig::default().target_accuracy)]
    warm_start_target: f64,
    /// ... or after this many supervised steps.
    #[arg(long, default_value_t = WarmStartConfig::default().max_steps)]
    warm_start_max_steps: usize,
    /// Keep the trainers' and the critic's state every this many steps (0: never), for the run
    /// to go back to when they restart.
    #[arg(long, default_value_t = PpoConfig::default().checkpoint_every)]
    checkpoint_every: usize,
    /// Kill actors while given steps run, to see the run survive: `ROLE@STEP[,...]` with ROLE
    /// one of trainer-N, rollout-N, reference, reward-model, critic, prompts.
    #[arg(long)]
    inject_fault: Option<String>,
    /// Also write the run's figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    troupe::init();
    let args = Args::parse();
    let config = PpoConfig {
        task: AdditionTask::spec(500, args.seed),
        steps: args.steps,
        batch: args.batch,
        samples: args.samples,
        lr: args.lr,
        critic_lr: args.critic_lr,
        kl_coef: args.kl_coef,
        max_staleness: args.max_staleness,
        cluster: args.cluster,
        out: args.out,
        warm_start: WarmStartConfig {
            target_accuracy: args.warm_start_target,
            max_steps: args.warm_start_max_steps,
            ..WarmStartConfig::default()
        },
        checkpoint_every: args.checkpoint_every,
        faults: match &args.inject_fault {
            Some(text) => parse_faults(text)?,
            None => Vec::new(),
        },
        ..PpoConfig::default()
    };
    let report = run(&config).await?;
    if let Some(path) = args.json {
        let written = troupe::report::write_json(&path, &serde_json::to_value(&report)?)?;
        println!("wrote {}", written.display());
    }
    Ok(())
}
