//! Rewards as weighted reward functions, as TRL's `reward_funcs`: a reward function reads one
//! decoded response and its problem and returns a score; a recipe lists the functions by name
//! with a weight each (`RewardSpec`). Functions are registered by name with `register_reward!`
//! (the built-ins below, the tasks' own, or a user's), so they run on whichever node hosts the
//! reward actor. The reward actor serves two pipeline stages: `score` (rewards) and
//! `advantages` (GRPO's group-relative advantages), so the graph shows where each is computed.

use super::columns::{ADVANTAGE, PROBLEM, RESPONSE, REWARD};
use crate::error::{ModelError, Result};
use crate::tasks::{Problem, Task, TaskSpec};
use crate::train::advantages::{group_has_signal, grpo};
use serde::{Deserialize, Serialize};
use troupe::data::Batch;
use troupe::pipeline::{StageCall, StageReceipt};

/// Scores one decoded response to a problem.
pub type RewardFn = fn(&str, &Problem) -> f32;

/// A reward function registered by name (see `register_reward!`).
pub struct RewardRegistration {
    pub name: &'static str,
    pub score: RewardFn,
}

inventory::collect!(RewardRegistration);

/// Registers a reward function under a name a `RewardSpec` can refer to, on every node:
/// `troupe_actors::register_reward!("ends_with_seven", |response, _problem| f32::from(response.ends_with('7')));`
#[macro_export]
macro_rules! register_reward {
    ($name:expr, $score:expr) => {
        $crate::inventory_submit! {
            $crate::roles::reward::RewardRegistration { name: $name, score: $score }
        }
    };
}

/// 1 when the trimmed response equals the trimmed reference.
pub fn exact_match(response: &str, problem: &Problem) -> f32 {
    f32::from(response.trim() == problem.reference.trim())
}

/// 1 when the last number in the response equals the reference's last number.
pub fn numeric_match(response: &str, problem: &Problem) -> f32 {
    match (last_number(response), last_number(&problem.reference)) {
        (Some(got), Some(want)) => f32::from((got - want).abs() <= 1e-9 * want.abs().max(1.0)),
        _ => 0.0,
    }
}

/// 1 when the response is non-empty and only digits (a well-formed arithmetic answer).
pub fn digits_only(response: &str, _problem: &Problem) -> f32 {
    let trimmed = response.trim();
    f32::from(!trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()))
}

crate::register_reward!("exact_match", exact_match);
crate::register_reward!("numeric_match", numeric_match);
crate::register_reward!("digits_only", digits_only);

/// The last number (optional sign, digits, optional fraction) in `text`.
pub fn last_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let mut end = bytes.len();
    while end > 0 && !bytes[end - 1].is_ascii_digit() {
        end -= 1;
    }
    if end == 0 {
        return None;
    }
    let mut start = end;
    while start > 0 && (bytes[start - 1].is_ascii_digit() || bytes[start - 1] == b'.') {
        start -= 1;
    }
    if start > 0 && bytes[start - 1] == b'-' {
        start -= 1;
    }
    text[start..end].trim_start_matches('.').parse().ok()
}

/// One weighted term of a reward: a registered function's name and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardSpec {
    pub name: String,
    pub weight: f32,
}

impl RewardSpec {
    pub fn new(name: &str, weight: f32) -> Self {
        RewardSpec {
            name: name.to_string(),
            weight,
        }
    }
}

/// A weighted sum of reward functions.
pub struct Rewards {
    terms: Vec<(RewardSpec, RewardFn)>,
}

impl Rewards {
    /// Looks every function up by name; an unknown name is refused with the registered ones.
    pub fn from_specs(specs: &[RewardSpec]) -> Result<Self> {
        if specs.is_empty() {
            return Err(ModelError::Input(
                "a reward needs at least one reward function".to_string(),
            ));
        }
        let terms = specs
            .iter()
            .map(|spec| {
                if !spec.weight.is_finite() {
                    return Err(ModelError::Input(format!(
                        "reward `{}` has weight {}",
                        spec.name, spec.weight
                    )));
                }
                let registration = inventory::iter::<RewardRegistration>
                    .into_iter()
                    .find(|r| r.name == spec.name)
                    .ok_or_else(|| {
                        let mut known: Vec<&str> = inventory::iter::<RewardRegistration>
                            .into_iter()
                            .map(|r| r.name)
                            .collect();
                        known.sort_unstable();
                        ModelError::Input(format!(
                            "no reward function registered as `{}` (registered: {})",
                            spec.name,
                            known.join(", ")
                        ))
                    })?;
                Ok((spec.clone(), registration.score))
            })
            .collect::<Result<_>>()?;
        Ok(Rewards { terms })
    }

    /// The weighted sum for one response, and each term's unweighted score.
    pub fn score(&self, response: &str, problem: &Problem) -> (f32, Vec<f32>) {
        let each: Vec<f32> = self
            .terms
            .iter()
            .map(|(_, score)| score(response, problem))
            .collect();
        let total = self
            .terms
            .iter()
            .zip(&each)
            .map(|((spec, _), value)| spec.weight * value)
            .sum();
        (total, each)
    }

    pub fn specs(&self) -> impl Iterator<Item = &RewardSpec> {
        self.terms.iter().map(|(spec, _)| spec)
    }
}

/// The reward role: a task (to look problems up and decode responses) and its rewards.
pub struct Reward {
    task: Box<dyn Task>,
    rewards: Rewards,
    group_size: usize,
}

impl Reward {
    pub fn from_parts(task: Box<dyn Task>, rewards: Rewards, group_size: usize) -> Result<Self> {
        if group_size < 2 {
            return Err(ModelError::Input(format!(
                "group size {group_size}: group-relative advantages need at least 2"
            )));
        }
        Ok(Reward {
            task,
            rewards,
            group_size,
        })
    }

    /// Rewards of token responses to training problems (by index), with each term's mean.
    pub fn score_rows(
        &self,
        responses: &[Vec<u32>],
        problems: &[u32],
    ) -> Result<(Vec<f32>, Vec<f64>)> {
        let mut totals = Vec::with_capacity(responses.len());
        let mut sums = vec![0.0_f64; self.rewards.terms.len()];
        for (tokens, index) in responses.iter().zip(problems) {
            let text = self.task.tokenizer().decode(tokens)?;
            let problem = self.task.train_problem(u64::from(*index));
            let (total, each) = self.rewards.score(&text, &problem);
            totals.push(total);
            for (sum, value) in sums.iter_mut().zip(each) {
                *sum += f64::from(value);
            }
        }
        let rows = responses.len().max(1) as f64;
        Ok((totals, sums.into_iter().map(|sum| sum / rows).collect()))
    }
}

#[troupe::actor]
impl Reward {
    /// Builds `task` and looks the reward functions up (here, on the reward actor's node).
    pub fn new(task: TaskSpec, rewards: Vec<RewardSpec>, group_size: usize) -> Result<Self> {
        Reward::from_parts(task.build()?, Rewards::from_specs(&rewards)?, group_size)
    }

    /// Stage `score`: `response`, `problem` -> `reward`; step scalars `reward_mean` and each
    /// function's mean (`reward/<name>`).
    pub async fn score(&self, mut call: StageCall) -> Result<StageReceipt> {
        let batch = call.inputs().await?;
        let (rewards, term_means) =
            self.score_rows(&batch.ragged_u32(RESPONSE)?, &batch.u32_values(PROBLEM)?)?;
        let mut out = Batch::new(batch.rows()).with_f32(REWARD, &[], &rewards)?;
        let meta = out.step_meta_mut();
        let mean = rewards.iter().map(|r| f64::from(*r)).sum::<f64>() / rewards.len().max(1) as f64;
        meta.set("reward_mean", mean);
        for (spec, term) in self.rewards.specs().zip(term_means) {
            meta.set(&format!("reward/{}", spec.name), term);
        }
        Ok(call.finish(out)?)
    }

    /// Stage `advantages`: `reward` -> `advantage`, each reward standardised within its group
    /// of `group_size` samples of one prompt (GRPO); step scalar `groups_with_signal`, the share
    /// of groups whose rewards differ (the others teach nothing).
    pub async fn advantages(&self, mut call: StageCall) -> Result<StageReceipt> {
        let batch = call.inputs().await?;
        let rewards = batch.f32_values(REWARD)?;
        let advantages = grpo(&rewards, self.group_size, true, 1e-6)?;
        let groups = rewards.chunks(self.group_size);
        let count = groups.len().max(1) as f64;
        let with_signal = rewards
            .chunks(self.group_size)
            .filter(|group| group_has_signal(group))
            .count() as f64;
        let mut out = Batch::new(batch.rows()).with_f32(ADVANTAGE, &[], &advantages)?;
        out.step_meta_mut()
            .set("groups_with_signal", with_signal / count);
        Ok(call.finish(out)?)
    }

    /// Rewards of text responses to problems (for direct use and tests).
    pub fn score_texts(&self, responses: Vec<String>, problems: Vec<Problem>) -> Result<Vec<f32>> {
        if responses.len() != problems.len() {
            return Err(ModelError::Input(format!(
                "{} responses but {} problems",
                responses.len(),
                problems.len()
            )));
        }
        Ok(responses
            .iter()
            .zip(&problems)
            .map(|(response, problem)| self.rewards.score(response, problem).0)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends_with_seven(response: &str, _problem: &Problem) -> f32 {
        f32::from(response.ends_with('7'))
    }
    crate::register_reward!("ends_with_seven", ends_with_seven);

    fn problem(reference: &str) -> Problem {
        Problem {
            prompt: String::new(),
            reference: reference.to_string(),
        }
    }

    #[test]
    fn numbers_are_extracted() {
        assert_eq!(last_number("the answer is 42."), Some(42.0));
        assert_eq!(last_number("-3.5 then 7"), Some(7.0));
        assert_eq!(last_number("x = -3.5"), Some(-3.5));
        assert_eq!(last_number("none"), None);
    }

    #[test]
    fn weighted_functions_and_registered_ones() {
        let rewards = Rewards::from_specs(&[
            RewardSpec::new("numeric_match", 1.0),
            RewardSpec::new("digits_only", 0.1),
            RewardSpec::new("ends_with_seven", 2.0),
        ])
        .unwrap();
        assert!((rewards.score("57", &problem("57")).0 - 3.1).abs() < 1e-6);
        assert!((rewards.score("56", &problem("57")).0 - 0.1).abs() < 1e-6);
        assert!((rewards.score("it is 56", &problem("56")).0 - 1.0).abs() < 1e-6);
        assert_eq!(rewards.score("56", &problem("57")).1, vec![0.0, 1.0, 0.0]);
        let unknown = Rewards::from_specs(&[RewardSpec::new("nope", 1.0)])
            .err()
            .unwrap()
            .to_string();
        assert!(
            unknown.contains("nope") && unknown.contains("exact_match"),
            "{unknown}"
        );
        assert!(Rewards::from_specs(&[]).is_err());
        assert_eq!(exact_match(" 12 ", &problem("12")), 1.0);
    }
}
