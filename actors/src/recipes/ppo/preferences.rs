//! Synthetic preference pairs over a task's answers, and training the reward model on them
//! (Bradley-Terry) until it ranks held-out pairs well. A pair is one problem with a right answer
//! (chosen: the task's worked answer) and a wrong one (rejected). In half the training pairs the
//! rejected answer is the policy's own sample when the task judges it wrong, so the reward model
//! learns to catch the mistakes the policy actually makes; otherwise, and for the held-out
//! pairs, it is a wrong answer of the same kind: the right one with one character changed to
//! another of the answer's alphabet, or its characters shuffled, until the task judges it wrong.

use super::super::error::{RecipeError, Result};
use super::super::metrics::MetricsLog;
use super::super::policy::PolicyActors;
use super::super::progress::Progress;
use crate::generate::SamplingConfig;
use crate::roles::reward_model::RewardModelHandle;
use crate::tasks::{Problem, Task};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The prompt's tokens, then the answer's, then the end-of-sequence token.
pub fn sequence(task: &dyn Task, problem: &Problem, answer: &str) -> crate::Result<Vec<u32>> {
    let mut tokens = task.prompt_ids(problem)?;
    tokens.extend(task.tokenizer().encode(answer)?);
    tokens.extend(task.tokenizer().eos_id());
    Ok(tokens)
}

/// A wrong answer that looks like a right one (see the module's note); the worked answer with
/// its first character changed when nothing else is wrong.
pub fn wrong_answer(task: &dyn Task, problem: &Problem, rng: &mut impl Rng) -> String {
    let right: Vec<char> = task.demonstration(problem).chars().collect();
    let mut alphabet: Vec<char> = right.clone();
    alphabet.extend('0'..='9');
    alphabet.sort_unstable();
    alphabet.dedup();
    for _ in 0..32 {
        let mut wrong = right.clone();
        if wrong.is_empty() {
            break;
        }
        if rng.random_bool(0.5) {
            let at = rng.random_range(0..wrong.len());
            wrong[at] = alphabet[rng.random_range(0..alphabet.len())];
        } else {
            for i in (1..wrong.len()).rev() {
                wrong.swap(i, rng.random_range(0..=i));
            }
        }
        let text: String = wrong.iter().collect();
        if !task.is_correct(&text, problem) {
            return text;
        }
    }
    let mut fallback: String = right.iter().collect();
    fallback.insert(0, '0');
    fallback
}

/// Chosen and rejected token sequences, pair by pair.
pub type Pairs = (Vec<Vec<u32>>, Vec<Vec<u32>>);

/// (chosen, rejected) sequences: the worked answer over a made-up wrong one.
pub fn pairs(task: &dyn Task, problems: &[Problem], rng: &mut impl Rng) -> crate::Result<Pairs> {
    let mut chosen = Vec::with_capacity(problems.len());
    let mut rejected = Vec::with_capacity(problems.len());
    for problem in problems {
        chosen.push(sequence(task, problem, &task.demonstration(problem))?);
        rejected.push(sequence(task, problem, &wrong_answer(task, problem, rng))?);
    }
    Ok((chosen, rejected))
}

/// How the reward model is trained.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreferenceConfig {
    pub batch: usize,
    pub lr: f64,
    pub max_steps: usize,
    pub eval_every: usize,
    /// Stop once this share of held-out pairs is ranked right.
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

/// Where the reward model's training ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreferenceOutcome {
    pub steps: usize,
    pub heldout_pair_accuracy: f64,
    pub seconds: f64,
}

/// The share of pairs the model scores chosen over rejected.
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

/// Pairs for `problems` whose rejected side is, for every other problem, the policy's sample
/// when the task judges it wrong; returns how many came from the policy.
pub fn on_policy_pairs(
    task: &dyn Task,
    problems: &[Problem],
    samples: &[Vec<u32>],
    rng: &mut impl Rng,
) -> crate::Result<(Pairs, usize)> {
    let mut chosen = Vec::with_capacity(problems.len());
    let mut rejected = Vec::with_capacity(problems.len());
    let mut from_policy = 0;
    for (index, (problem, sample)) in problems.iter().zip(samples).enumerate() {
        chosen.push(sequence(task, problem, &task.demonstration(problem))?);
        let text = task.tokenizer().decode(sample)?;
        let usable = index % 2 == 0 && !sample.is_empty() && !task.is_correct(&text, problem);
        if usable {
            let mut tokens = task.prompt_ids(problem)?;
            tokens.extend(sample);
            rejected.push(tokens);
            from_policy += 1;
        } else {
            rejected.push(sequence(task, problem, &wrong_answer(task, problem, rng))?);
        }
    }
    Ok(((chosen, rejected), from_policy))
}

/// Where the reward model's problems start in a task's training sequence.
const PREFERENCE_PROBLEMS: u64 = 3 << 30;

/// Trains `model` on preference pairs of `task` until it ranks held-out pairs well enough (or
/// `max_steps`); the policy's rollouts supply on-policy wrong answers.
pub async fn train_reward_model(
    model: &RewardModelHandle,
    policy: &PolicyActors,
    task: &dyn Task,
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
    let (test_chosen, test_rejected) = pairs(task, task.held_out(), &mut rng)?;
    let progress = Progress::new("rm", config.max_steps as u64, config.eval_every as u64);
    let mut accuracy = 0.0;
    let mut steps = 0;
    for step in 1..=config.max_steps {
        let first = PREFERENCE_PROBLEMS + ((step - 1) * config.batch) as u64;
        let problems: Vec<Problem> = (0..config.batch as u64)
            .map(|offset| task.train_problem(first + offset))
            .collect();
        let sampling = SamplingConfig {
            max_new_tokens: task.answer_tokens(),
            temperature: 1.0,
            stop_tokens: task.tokenizer().eos_id().into_iter().collect(),
            seed: seed.wrapping_mul(7_919).wrapping_add(step as u64),
            ..SamplingConfig::default()
        };
        let samples = policy.sample_answers(task, &problems, sampling).await?;
        let ((chosen, rejected), from_policy) =
            on_policy_pairs(task, &problems, &samples, &mut rng)?;
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
    use crate::tasks::arithmetic::{Addition, AdditionTask};
    use crate::tasks::countdown::CountdownTask;
    use crate::tokenizer::{BuiltinTokenizer, TextTokenizer};

    #[test]
    fn rejected_answers_are_wrong_and_of_the_same_kind() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let addition = AdditionTask::new(10, 0).unwrap();
        let countdown = CountdownTask::new(3, 9, 10, 0).unwrap();
        for task in [&addition as &dyn Task, &countdown] {
            for index in 0..100 {
                let problem = task.train_problem(index);
                let wrong = wrong_answer(task, &problem, &mut rng);
                assert!(!task.is_correct(&wrong, &problem), "{problem:?}: {wrong}");
                assert!(task.tokenizer().encode(&wrong).is_ok());
            }
        }
    }

    #[test]
    fn on_policy_pairs_use_wrong_samples_only() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let task = AdditionTask::new(10, 0).unwrap();
        let problem = Addition { a: 123, b: 459 }.problem();
        let tokenizer = BuiltinTokenizer::new();
        let wrong_sample = tokenizer.encode("112").unwrap();
        let right_sample = tokenizer.encode("285").unwrap();
        let ((chosen, rejected), from_policy) = on_policy_pairs(
            &task,
            &[problem.clone(), problem.clone(), problem.clone()],
            &[wrong_sample.clone(), wrong_sample.clone(), right_sample],
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            from_policy, 1,
            "only every other pair takes the policy's sample"
        );
        assert_eq!(chosen[0], sequence(&task, &problem, "285").unwrap());
        let prompt_len = task.prompt_ids(&problem).unwrap().len();
        assert_eq!(&rejected[0][prompt_len..], wrong_sample.as_slice());
        assert_ne!(
            rejected[2], chosen[2],
            "a right sample is replaced by a made-up wrong one"
        );
        assert_ne!(&rejected[1][prompt_len..], wrong_sample.as_slice());
        let tokens = sequence(&task, &problem, "285").unwrap();
        assert_eq!(tokenizer.decode(&tokens).unwrap(), "321+954=285");
        assert_eq!(*tokens.last().unwrap(), BuiltinTokenizer::EOS);
    }
}
