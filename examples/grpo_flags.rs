//! The flags of the GRPO examples (`grpo_arithmetic`, `grpo_countdown`), shared: each example
//! includes this file and turns the flags into a `GrpoConfig` for its task and rewards.

use clap::Parser;
use std::path::PathBuf;
use troupe_actors::recipes::grpo::GrpoConfig;
use troupe_actors::recipes::warm_start::WarmStartConfig;
use troupe_actors::roles::reward::RewardSpec;
use troupe_actors::tasks::TaskSpec;

/// GRPO on a task (flags shared by the GRPO examples).
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// GRPO steps after the warm start.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Samples per prompt (the group GRPO normalises rewards within).
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    /// Prompts per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Peak learning rate of GRPO (cosine decay to 5% over the steps).
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Weight of the KL penalty to the reference policy.
    #[arg(long, default_value_t = 0.01)]
    kl_coef: f64,
    /// Let rollouts run up to this many steps ahead of training (0: synchronous).
    #[arg(long, default_value_t = 0)]
    max_staleness: usize,
    /// Seeds the model, the problems and the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run on the cluster whose head listens at this address (default: an embedded one).
    #[arg(long)]
    cluster: Option<String>,
    /// Directory for metrics, the plot and the checkpoint (default: runs/grpo_<task>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The warm start stops once this share of held-out problems is solved.
    #[arg(long, default_value_t = WarmStartConfig::default().target_accuracy)]
    warm_start_target: f64,
    /// ... or after this many supervised steps.
    #[arg(long, default_value_t = WarmStartConfig::default().max_steps)]
    warm_start_max_steps: usize,
    /// Also write the run's figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Args {
    /// The run's configuration for `task` (its seed replaced by `--seed`) and `rewards`.
    pub fn config(&self, mut task: TaskSpec, rewards: Vec<RewardSpec>) -> GrpoConfig {
        task.seed = self.seed;
        let mut config = GrpoConfig::new(task, rewards);
        config.steps = self.steps;
        config.group_size = self.group_size;
        config.batch = self.batch;
        config.lr = self.lr;
        config.kl_coef = self.kl_coef;
        config.max_staleness = self.max_staleness;
        config.cluster = self.cluster.clone();
        if let Some(out) = &self.out {
            config.out = out.clone();
        }
        config.warm_start.target_accuracy = self.warm_start_target;
        config.warm_start.max_steps = self.warm_start_max_steps;
        config
    }
}
