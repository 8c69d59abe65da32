//! The flags of the GRPO examples (`grpo_arithmetic`, `grpo_countdown`), shared: each example
//! includes this file, makes its task's tuned `GrpoConfig`, and lets the flags given override it.

use clap::Parser;
use std::path::PathBuf;
use troupe_actors::engines::vllm::VllmConfig;
use troupe_actors::recipes::faults::Fault;
use troupe_actors::recipes::grpo::GrpoConfig;
use troupe_actors::roles::reward::RewardSpec;
use troupe_actors::roles::rollout::RolloutEngine;

/// GRPO on a task (flags shared by the GRPO examples; unset ones keep the example's setting).
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// GRPO steps after the warm start (arithmetic 200, countdown 520).
    #[arg(long)]
    steps: Option<usize>,
    /// Samples per prompt, the group GRPO normalises rewards within (arithmetic 8, countdown 16).
    #[arg(long)]
    group_size: Option<usize>,
    /// Prompts per step (arithmetic 32, countdown 16).
    #[arg(long)]
    batch: Option<usize>,
    /// Decoder layers of the policy (arithmetic 2, countdown 4).
    #[arg(long)]
    layers: Option<usize>,
    /// Peak learning rate of GRPO, cosine decay to `--lr-floor` over the steps (2e-4).
    #[arg(long)]
    lr: Option<f64>,
    /// The learning rate at the last step, as a share of the peak (0.05; 1 keeps it constant).
    #[arg(long)]
    lr_floor: Option<f64>,
    /// Steps over which the learning rate rises linearly to `--lr` before the cosine decay (0).
    #[arg(long)]
    lr_warmup: Option<u64>,
    /// A reward function and its weight, `NAME=WEIGHT`; repeat for several. Replaces the
    /// example's list (arithmetic: exact_match=1 digits_only=0.1).
    #[arg(long = "reward", value_parser = parse_reward)]
    rewards: Vec<RewardSpec>,
    /// Measure held-out success every this many steps (10).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Weight of the KL penalty to the reference policy (0.01).
    #[arg(long)]
    kl_coef: Option<f64>,
    /// Weight of the entropy bonus, which keeps sampling diverse (arithmetic 0, countdown 0.1).
    #[arg(long)]
    entropy_coef: Option<f64>,
    /// Train only on groups whose samples scored differently (true/false; countdown true).
    #[arg(long)]
    skip_flat_groups: Option<bool>,
    /// Let rollouts run up to this many steps ahead of training (0: synchronous).
    #[arg(long)]
    max_staleness: Option<usize>,
    /// The task's parameters as a JSON object, replacing the example's (countdown reads
    /// `{"numbers": 3 | 4, "max_number": 2..=99}`); a parameter the task does not read is refused.
    #[arg(long, value_parser = parse_task_params)]
    task_params: Option<serde_json::Value>,
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
    /// Start from the warm start a run saved (its `<out>/warm_start`) instead of running one.
    #[arg(long, value_name = "DIR")]
    warm_start_from: Option<PathBuf>,
    /// What the rollouts generate with: `candle` (their own decoder) or `vllm` (a vLLM engine
    /// each, in a child process; its Python venv is made on first use, about 6 GB).
    #[arg(long, value_enum)]
    rollout_engine: Option<EngineChoice>,
    /// The vLLM engine's dtype (`float32`, as the trainers; `bfloat16` is faster and differs
    /// more from the trainers, which TIS corrects).
    #[arg(long)]
    vllm_dtype: Option<String>,
    /// Truncated importance sampling against the rollout engine with this cap (on at 2 for
    /// vLLM, off for candle; 0 turns it off).
    #[arg(long)]
    tis_cap: Option<f64>,
    /// Write the trainers' whole state every this many steps (20; 0: never): a run whose
    /// trainers all restart goes back to the latest one (one restarted trainer takes a peer's).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Kill actors while given steps run, to see the run survive: `ROLE@STEP[,...]` with ROLE
    /// one of trainer-N, rollout-N, reference, reward, prompts (say `trainer-1@5,rollout-0@9`).
    #[arg(long, value_parser = parse_faults)]
    inject_fault: Option<FaultList>,
    /// Also write the run's figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The faults of one `--inject-fault` (one flag value, a list).
#[derive(Clone, Debug)]
struct FaultList(Vec<Fault>);

/// Reads `ROLE@STEP[,...]`.
fn parse_faults(text: &str) -> Result<FaultList, String> {
    troupe_actors::recipes::faults::parse_faults(text)
        .map(FaultList)
        .map_err(|err| err.to_string())
}

/// The rollout engines `--rollout-engine` names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum EngineChoice {
    Candle,
    Vllm,
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
        set(self.eval_every, &mut config.eval_every);
        set(self.layers, &mut config.layers);
        config.lr_floor = self.lr_floor.unwrap_or(config.lr_floor);
        config.lr_warmup = self.lr_warmup.unwrap_or(config.lr_warmup);
        config.skip_flat_groups = self.skip_flat_groups.unwrap_or(config.skip_flat_groups);
        if !self.rewards.is_empty() {
            config.rewards = self.rewards.clone();
        }
        config.lr = self.lr.unwrap_or(config.lr);
        if let Some(params) = &self.task_params {
            config.task.params = params.clone();
        }
        config.kl_coef = self.kl_coef.unwrap_or(config.kl_coef);
        config.entropy_coef = self.entropy_coef.unwrap_or(config.entropy_coef);
        config.warm_start.target_accuracy = self
            .warm_start_target
            .unwrap_or(config.warm_start.target_accuracy);
        // Absolute, so that actors started elsewhere (another working directory) find it.
        config.warm_start_from = self
            .warm_start_from
            .as_ref()
            .map(|dir| std::path::absolute(dir).unwrap_or_else(|_| dir.clone()));
        config.cluster = self.cluster.clone();
        config.out = self.out.clone().unwrap_or(config.out);
        if let Some(choice) = self.rollout_engine {
            config = config.with_rollout_engine(match choice {
                EngineChoice::Candle => RolloutEngine::Candle,
                EngineChoice::Vllm => RolloutEngine::Vllm(VllmConfig::with_dtype(
                    self.vllm_dtype.as_deref().unwrap_or("float32"),
                )),
            });
        }
        if let Some(cap) = self.tis_cap {
            config.tis_cap = (cap > 0.0).then_some(cap);
        }
        set(self.checkpoint_every, &mut config.checkpoint_every);
        if let Some(faults) = &self.inject_fault {
            config.faults = faults.0.clone();
        }
        config
    }
}

/// Reads `NAME=WEIGHT`.
fn parse_reward(text: &str) -> Result<RewardSpec, String> {
    let (name, weight) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected NAME=WEIGHT, as exact_match=1.0"))?;
    let weight: f32 = weight
        .trim()
        .parse()
        .map_err(|err| format!("`{text}`: the weight `{weight}` is not a number ({err})"))?;
    Ok(RewardSpec::new(name.trim(), weight))
}

/// Reads a JSON object.
fn parse_task_params(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str(text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(other) => Err(format!("`{text}`: expected a JSON object, got {other}")),
        Err(err) => Err(format!("`{text}` is not JSON: {err}")),
    }
}
