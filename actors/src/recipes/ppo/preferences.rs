//! Synthetic preference pairs over arithmetic answers, and training the reward model on them
//! (Bradley-Terry) until it ranks held-out pairs well. A pair is one problem with its correct
//! answer (chosen) and a wrong one (rejected). In half the training pairs the rejected answer is
//! the policy's own sample when that sample is wrong, so the reward model learns to catch the
//! mistakes the policy actually makes; otherwise, and for the held-out pairs, it is a wrong
//! answer of the same kind: the right one with one digit changed, or another number of the same
//! length.

use super::super::metrics::MetricsLog;
use super::super::progress::Progress;
use super::super::setup::{answers, RecipeError, Result, ANSWER_TOKENS};
use crate::generate::SamplingConfig;
use crate::roles::reward_model::RewardModelHandle;
use crate::roles::rollout::RolloutHandle;
use crate::tasks::arithmetic::Problem;
use crate::tokenizer::BuiltinTokenizer;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use troupe::ActorGroup;

/// Prompt + answer digits + `<eos>`, as the reward model reads a response.
pub fn sequence(problem: &Problem, answer: &str) -> Vec<u32> {
    let mut tokens = problem.prompt_tokens();
    tokens.extend(answer.bytes().map(|digit| 3 + (digit - b'0') as u32));
    tokens.push(BuiltinTokenizer::EOS);
    tokens
}

/// A wrong answer of the same kind as `problem`'s right one.
pub fn wrong_answer(problem: &Problem, rng: &mut impl Rng) -> String {
    let right: Vec<u8> = problem.answer_text().into_bytes();
    let mut wrong = right.clone();
    if rng.random_bool(0.5) {
        let at = rng.random_range(0..wrong.len());
        let shift = rng.random_range(1..10u8);
        wrong[at] = b'0' + (wrong[at] - b'0' + shift) % 10;
    } else {
        while wrong == right {
            for digit in wrong.iter_mut() {
                *digit = b'0' + rng.random_range(0..10u8);
            }
        }
    }
    String::from_utf8(wrong).unwrap_or_default()
}

/// (chosen, rejected) sequences for `problems`.
pub fn pairs(problems: &[Problem], rng: &mut impl Rng) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    problems
        .iter()
        .map(|problem| {
            (
                sequence(problem, &problem.answer_text()),
                sequence(problem, &wrong_answer(problem, rng)),
            )
        })
        .unzip()
}

/// How the reward model is trained.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreferenceConfig {
    pub batch: usize,
    pub lr: f64,
    pub max_steps: usize,
    pub eval_every: usize,
    /// Stop once held-out pairs are ranked right this often.
    pub target_accuracy: f64,
}

impl Default for PreferenceConfig {
    fn default() -> Self {
        PreferenceConfig {
            batch: 64,
            lr: 3e-4,
            max_steps: 150,
            eval_every: 25,
            target_accuracy: 0.85,
        }
    }
}

/// Where reward-model training ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreferenceOutcome {
    pub steps: usize,
    /// Share of held-out pairs the model ranks right.
    pub heldout_pair_accuracy: f64,
    pub seconds: f64,
}

/// Share of pairs where the chosen sequence scores higher.
pub async fn pair_accuracy(
    model: &RewardModelHandle,
    chosen: &[Vec<u32>],
    rejected: &[Vec<u32>],
) -> Result<f64> {
    let good = model.score(chosen.to_vec()).await?;
    let bad = model.score(rejected.to_vec()).await?;
    let wins = good.iter().zip(&bad).filter(|(g, b)| g > b).count();
    Ok(wins as f64 / good.len().max(1) as f64)
}

/// Pairs for `problems`: in every other pair the rejected side is the policy's sample
/// (`samples[i]`, the response tokens) when that sample is wrong; the other pairs, and those
/// where the sample is right, get a made-up wrong answer.
pub fn on_policy_pairs(
    problems: &[Problem],
    samples: &[Vec<u32>],
    rng: &mut impl Rng,
) -> (Vec<Vec<u32>>, Vec<Vec<u32>>, usize) {
    let right: Vec<Vec<u32>> = problems
        .iter()
        .map(|p| sequence(p, &p.answer_text()))
        .collect();
    let mut from_policy = 0;
    let wrong = problems
        .iter()
        .zip(samples)
        .enumerate()
        .map(|(index, (problem, sample))| {
            let mut tokens = problem.prompt_tokens();
            tokens.extend(sample);
            let right_or_unused = index % 2 == 1
                || sample.is_empty()
                || tokens == sequence(problem, &problem.answer_text());
            if right_or_unused {
                sequence(problem, &wrong_answer(problem, rng))
            } else {
                from_policy += 1;
                tokens
            }
        })
        .collect();
    (right, wrong, from_policy)
}

/// Trains `model` on pairs from `draw(count)` training problems, the rejected side sampled from
/// `rollouts` (the policy) where it is wrong, evaluating on made-up pairs from `held_out`; every
/// step goes to `log`.
pub async fn train_reward_model(
    model: &RewardModelHandle,
    rollouts: &ActorGroup<RolloutHandle>,
    mut draw: impl FnMut(usize) -> Vec<Problem>,
    held_out: &[Problem],
    config: &PreferenceConfig,
    seed: u64,
    log: &mut MetricsLog,
) -> Result<PreferenceOutcome> {
    if config.batch == 0 || config.eval_every == 0 {
        return Err(RecipeError::Config(
            "reward-model batch and eval_every must be at least 1".to_string(),
        ));
    }
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xB7AD_1E7E);
    let (test_chosen, test_rejected) = pairs(held_out, &mut rng);
    let progress = Progress::new("rm", config.max_steps as u64, config.eval_every as u64);
    let mut accuracy = 0.0;
    let mut steps = 0;
    for step in 1..=config.max_steps {
        let problems = draw(config.batch);
        let sampling = SamplingConfig {
            max_new_tokens: ANSWER_TOKENS,
            temperature: 1.0,
            stop_tokens: vec![BuiltinTokenizer::EOS],
            seed: seed.wrapping_mul(7_919).wrapping_add(step as u64),
            ..SamplingConfig::default()
        };
        let samples = answers(rollouts, &problems, sampling).await?;
        let (chosen, rejected, from_policy) = on_policy_pairs(&problems, &samples, &mut rng);
        let stats = model.train_pairs(chosen, rejected).await?;
        steps = step;
        let mut row = serde_json::json!({
            "step": step,
            "loss": stats.loss,
            "batch_pair_accuracy": stats.accuracy,
            "grad_norm": stats.grad_norm,
            "rejected_from_policy": from_policy as f64 / problems.len().max(1) as f64,
        });
        let evaluate = step % config.eval_every == 0 || step == config.max_steps;
        if evaluate {
            accuracy = pair_accuracy(model, &test_chosen, &test_rejected).await?;
            row["heldout_pair_accuracy"] = accuracy.into();
        }
        log.append(row)
            .map_err(|err| RecipeError::io(format!("writing {}", log.path().display()), err))?;
        progress.update(
            step as u64,
            &format!(
                "loss {:.3} | held-out pairs ranked right {:.1}%",
                stats.loss,
                accuracy * 100.0
            ),
        );
        if evaluate && accuracy >= config.target_accuracy {
            break;
        }
    }
    progress.finish();
    Ok(PreferenceOutcome {
        steps,
        heldout_pair_accuracy: accuracy,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::TextTokenizer;

    #[test]
    fn rejected_answers_are_wrong_and_of_the_same_kind() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let tokenizer = BuiltinTokenizer::new();
        for a in [100, 345, 999] {
            let problem = Problem { a, b: 456 };
            for _ in 0..50 {
                let wrong = wrong_answer(&problem, &mut rng);
                assert_ne!(wrong, problem.answer_text());
                assert_eq!(wrong.len(), problem.answer_text().len());
                assert!(wrong.bytes().all(|b| b.is_ascii_digit()));
            }
        }
        let problem = Problem { a: 123, b: 459 };
        let wrong_sample = vec![4, 4, 5, 2]; // "112<eos>"
        let right_sample = vec![5, 11, 8, 2]; // "285<eos>"
        let (chosen, rejected, from_policy) = on_policy_pairs(
            &[problem, problem, problem],
            &[wrong_sample.clone(), wrong_sample.clone(), right_sample],
            &mut rng,
        );
        assert_eq!(
            from_policy, 1,
            "only every other pair takes the policy's sample"
        );
        assert_eq!(chosen[0], sequence(&problem, "285"));
        assert_eq!(
            &rejected[0][problem.prompt_tokens().len()..],
            wrong_sample.as_slice()
        );
        assert_ne!(
            rejected[2], chosen[2],
            "a right sample is replaced by a made-up wrong one"
        );
        assert_ne!(
            &rejected[1][problem.prompt_tokens().len()..],
            wrong_sample.as_slice()
        );
        let tokens = sequence(&problem, "285");
        assert_eq!(tokenizer.decode(&tokens).unwrap(), "321+954=285");
        assert_eq!(*tokens.last().unwrap(), BuiltinTokenizer::EOS);
    }
}
