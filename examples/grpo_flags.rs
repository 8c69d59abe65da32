//! The flags of the GRPO examples (`grpo_arithmetic`, `grpo_countdown`), shared: each example
//! includes this file, makes its task's tuned `GrpoConfig`, and lets the flags given override it.

use clap::Parser;
use std::path::PathBuf;
use troupe_actors::recipes::grpo::GrpoConfig;

/// GRPO on a task (flags shared by the GRPO examples; unset ones keep the example's setting).
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// GRPO steps after the warm start (arithmetic 200, countdown 350).
    #[arg(long)]
    steps: Option<usize>,
    /// Samples per prompt, the group GRPO normalises rewards within (arithmetic 8, countdown 16).
    #[arg(long)]
    group_size: Option<usize>,
    /// Prompts per step (arithmetic 32, countdown 16).
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate of GRPO, cosine decay to 5% over the steps (2e-4).
    #[arg(long)]
    lr: Option<f64>,
    /// Weight of the KL penalty to the reference policy (0.01).
    #[arg(long)]
    kl_coef: Option<f64>,
    /// Let rollouts run up to this many steps ahead of training (0: synchronous).
    #[arg(long)]
    max_staleness: Option<usize>,
    /// Seeds the model, the problems and the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run on the cluster whose head listens at this address (default: an embedded one).
    #[arg(long)]
    cluster: Option<String>,
    /// Directory for metrics, the plot and the checkpoint (default: runs/grpo_<task>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The warm start stops once this share of held-out problems is solved (0.15).
    #[arg(long)]
    warm_start_target: Option<f64>,
    /// ... or after this many supervised steps (600).
    #[arg(long)]
    warm_start_max_steps: Option<usize>,
    /// Also write the run's figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Args {
    /// `config` (the example's setting) with the given flags applied and `--seed` as the task's
    /// seed.
    pub fn apply(&self, mut config: GrpoConfig) -> GrpoConfig {
        config.task.seed = self.seed;
        let set = |value: Option<usize>, field: &mut usize| *field = value.unwrap_or(*field);
        set(self.steps, &mut config.steps);
        set(self.group_size, &mut config.group_size);
        set(self.batch, &mut config.batch);
        set(self.max_staleness, &mut config.max_staleness);
        set(self.warm_start_max_steps, &mut config.warm_start.max_steps);
        config.lr = self.lr.unwrap_or(config.lr);
        config.kl_coef = self.kl_coef.unwrap_or(config.kl_coef);
        config.warm_start.target_accuracy = self
            .warm_start_target
            .unwrap_or(config.warm_start.target_accuracy);
        config.cluster = self.cluster.clone();
        config.out = self.out.clone().unwrap_or(config.out);
        config
    }
}
