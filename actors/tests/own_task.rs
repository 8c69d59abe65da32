//! A task and a reward brought by a user, from the public API alone, trained by the GRPO of
//! `examples/grpo_arithmetic.rs` on an embedded cluster: the task and the reward function are
//! registered here, in the test binary, and run inside the prompt-source, reward and rollout
//! actors' worker processes (the same binary). The task: "two digits that sum to N": many
//! answers are right (`3:9?` is answered `45`, `36`, `90`, ...), so a verifier judges them.
//! Each prompt carries a round number (0-9, `3:` above) the answer does not depend on; the
//! held-out prompts are (round, N) pairs training never shows.
//!
//! Run: `cargo test -p troupe-actors --test own_task`

#[allow(dead_code)]
#[path = "../../examples/grpo_arithmetic.rs"]
mod grpo_example;

use std::time::Duration;
use troupe_actors::recipes::grpo::GrpoConfig;
use troupe_actors::recipes::warm_start::WarmStartConfig;
use troupe_actors::roles::reward::RewardSpec;
use troupe_actors::tasks::{problem_rng, Problem, Task, TaskSpec};
use troupe_actors::tokenizer::{BuiltinTokenizer, TextTokenizer};

// ---- The user's task and reward: everything a new task needs. ----

/// "Write two digits that sum to N" for N in 0..=18, in rounds 0..=9.
struct DigitSum {
    seed: u64,
    held_out: Vec<Problem>,
    tokenizer: BuiltinTokenizer,
}

/// Problem `(round, target)` drawn from `rng`.
fn draw(rng: &mut impl rand::Rng) -> Problem {
    let (round, target) = (rng.random_range(0..=9), rng.random_range(0..=18));
    Problem {
        prompt: format!("{round}:{target}?"),
        reference: target.to_string(),
    }
}

/// The verifier: exactly two digits, summing to the target.
fn sums_to_target(response: &str, problem: &Problem) -> f32 {
    let digits: Vec<u32> = response.chars().filter_map(|c| c.to_digit(10)).collect();
    let right = response.len() == 2
        && digits.len() == 2
        && Some(digits[0] + digits[1]) == problem.reference.parse().ok();
    f32::from(right)
}

troupe_actors::register_reward!("digit_sum", sums_to_target);
troupe_actors::register_task!("digit_sum", |spec: &TaskSpec| {
    let mut rng = problem_rng(spec.seed, u64::MAX);
    let mut held_out: Vec<Problem> = Vec::new();
    while held_out.len() < spec.held_out.min(40) {
        let problem = draw(&mut rng);
        if !held_out.contains(&problem) {
            held_out.push(problem);
        }
    }
    Ok(Box::new(DigitSum {
        seed: spec.seed,
        held_out,
        tokenizer: BuiltinTokenizer::new(),
    }))
});

impl Task for DigitSum {
    fn tokenizer(&self) -> &dyn TextTokenizer {
        &self.tokenizer
    }
    fn prompt_tokens(&self) -> usize {
        6
    }
    fn answer_tokens(&self) -> usize {
        3
    }
    fn train_problem(&self, index: u64) -> Problem {
        let mut rng = problem_rng(self.seed, index);
        loop {
            let problem = draw(&mut rng);
            if !self.held_out.contains(&problem) {
                return problem;
            }
        }
    }
    fn held_out(&self) -> &[Problem] {
        &self.held_out
    }
    fn is_correct(&self, response: &str, problem: &Problem) -> bool {
        sums_to_target(response, problem) == 1.0
    }
    fn demonstration(&self, problem: &Problem) -> String {
        let target: u32 = problem.reference.parse().unwrap_or(0);
        let first = target.saturating_sub(9).max(target / 2);
        format!("{first}{}", target - first)
    }
}

// ---- The test. ----

async fn user_task_trains() -> anyhow::Result<()> {
    let out = std::env::temp_dir().join(format!("troupe-own-task-{}", std::process::id()));
    let config = GrpoConfig {
        steps: 6,
        batch: 8,
        group_size: 4,
        eval_every: 3,
        out: out.clone(),
        warm_start: WarmStartConfig {
            batch: 32,
            max_steps: 40,
            eval_every: 20,
            target_accuracy: 0.5,
            ..WarmStartConfig::default()
        },
        ..GrpoConfig::new(
            TaskSpec::new("digit_sum", 0, 200),
            vec![RewardSpec::new("digit_sum", 1.0)],
        )
    };
    let report = grpo_example::grpo(&config).await?;
    anyhow::ensure!(report.steps == 6, "{report:?}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl"))?;
    let rows: Vec<serde_json::Value> = metrics
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    for row in &rows {
        // The reward actor ran the user's function: its mean is a step figure.
        let mean = row["reward/digit_sum"].as_f64().unwrap_or(-1.0);
        anyhow::ensure!((0.0..=1.0).contains(&mean), "{row}");
    }
    anyhow::ensure!(
        report.heldout_accuracy_final > 0.2,
        "the user's task was learned: {:.1}% held-out success",
        report.heldout_accuracy_final * 100.0
    );
    std::fs::remove_dir_all(&out)?;
    println!(
        "test user_task_trains ... ok ({:.1}% -> {:.1}% held-out success)",
        report.heldout_accuracy_sft * 100.0,
        report.heldout_accuracy_final * 100.0
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    troupe::init();
    troupe::testing::run_tests(1, Duration::from_secs(300), async {
        user_task_trains().await?;
        println!("test user_task_trains ... ok");
        anyhow::Ok(())
    })
}
