//! Rule-based rewards: verifiers that score a response against a reference answer (exact match,
//! numeric answer extraction, a format check), combined with weights; users plug in their own
//! verifiers by name with `register_verifier!`.

use crate::error::{ModelError, Result};
use crate::tokenizer::{BuiltinTokenizer, TextTokenizer};
use serde::{Deserialize, Serialize};

/// Scores one response against the reference answer.
pub trait Verifier: Send + Sync {
    fn score(&self, response: &str, answer: &str) -> f32;
}

/// 1 when the trimmed response equals the trimmed answer.
pub struct ExactMatch;

impl Verifier for ExactMatch {
    fn score(&self, response: &str, answer: &str) -> f32 {
        f32::from(response.trim() == answer.trim())
    }
}

/// 1 when the last number in the response equals the answer's number within `tolerance`.
pub struct NumericMatch {
    pub tolerance: f64,
}

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

impl Verifier for NumericMatch {
    fn score(&self, response: &str, answer: &str) -> f32 {
        match (last_number(response), last_number(answer)) {
            (Some(got), Some(want)) => f32::from((got - want).abs() <= self.tolerance),
            _ => 0.0,
        }
    }
}

/// 1 when the response is non-empty and only digits (a well-formed arithmetic answer).
pub struct DigitsOnly;

impl Verifier for DigitsOnly {
    fn score(&self, response: &str, _answer: &str) -> f32 {
        let trimmed = response.trim();
        f32::from(!trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// A verifier registered by name (see `register_verifier!`).
pub struct VerifierRegistration {
    pub name: &'static str,
    pub build: fn() -> Box<dyn Verifier>,
}

inventory::collect!(VerifierRegistration);

/// Registers a user verifier under a name that `VerifierSpec::Registered` can refer to:
/// `troupe_actors::register_verifier!("ends-with-seven", || Box::new(EndsWithSeven));`
#[macro_export]
macro_rules! register_verifier {
    ($name:expr, $build:expr) => {
        $crate::inventory_submit! {
            $crate::roles::reward::VerifierRegistration { name: $name, build: $build }
        }
    };
}

/// One weighted term of a reward, as an actor's constructor argument.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum VerifierSpec {
    ExactMatch { weight: f32 },
    NumericMatch { weight: f32, tolerance: f64 },
    DigitsOnly { weight: f32 },
    Registered { name: String, weight: f32 },
}

impl VerifierSpec {
    fn build(&self) -> Result<(Box<dyn Verifier>, f32)> {
        Ok(match self {
            VerifierSpec::ExactMatch { weight } => (Box::new(ExactMatch), *weight),
            VerifierSpec::NumericMatch { weight, tolerance } => (
                Box::new(NumericMatch {
                    tolerance: *tolerance,
                }),
                *weight,
            ),
            VerifierSpec::DigitsOnly { weight } => (Box::new(DigitsOnly), *weight),
            VerifierSpec::Registered { name, weight } => {
                let registration = inventory::iter::<VerifierRegistration>
                    .into_iter()
                    .find(|registration| registration.name == name)
                    .ok_or_else(|| {
                        ModelError::Input(format!("no verifier registered as `{name}`"))
                    })?;
                ((registration.build)(), *weight)
            }
        })
    }
}

/// A weighted sum of verifiers, scoring decoded responses.
pub struct RuleReward {
    verifiers: Vec<(Box<dyn Verifier>, f32)>,
    tokenizer: BuiltinTokenizer,
}

impl RuleReward {
    /// Builds from specs (the built-in tokenizer decodes token responses).
    pub fn from_specs(specs: &[VerifierSpec]) -> Result<Self> {
        if specs.is_empty() {
            return Err(ModelError::Input(
                "a reward needs at least one verifier".to_string(),
            ));
        }
        Ok(RuleReward {
            verifiers: specs
                .iter()
                .map(VerifierSpec::build)
                .collect::<Result<_>>()?,
            tokenizer: BuiltinTokenizer::new(),
        })
    }

    /// Adds a verifier object directly (in-process use).
    pub fn with(mut self, verifier: Box<dyn Verifier>, weight: f32) -> Self {
        self.verifiers.push((verifier, weight));
        self
    }

    pub fn score_one(&self, response: &str, answer: &str) -> f32 {
        self.verifiers
            .iter()
            .map(|(verifier, weight)| weight * verifier.score(response, answer))
            .sum()
    }
}

#[troupe::actor]
impl RuleReward {
    pub fn new(specs: Vec<VerifierSpec>) -> Result<Self> {
        RuleReward::from_specs(&specs)
    }

    /// Rewards for text responses against their answers.
    pub fn score(&self, responses: Vec<String>, answers: Vec<String>) -> Result<Vec<f32>> {
        if responses.len() != answers.len() {
            return Err(ModelError::Input(format!(
                "{} responses but {} answers",
                responses.len(),
                answers.len()
            )));
        }
        Ok(responses
            .iter()
            .zip(&answers)
            .map(|(r, a)| self.score_one(r, a))
            .collect())
    }

    /// Rewards for token responses (decoded with the built-in tokenizer, up to `<eos>`).
    pub fn score_tokens(&self, responses: Vec<Vec<u32>>, answers: Vec<String>) -> Result<Vec<f32>> {
        let texts = responses
            .iter()
            .map(|tokens| self.tokenizer.decode(tokens))
            .collect::<Result<Vec<_>>>()?;
        self.score(texts, answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct EndsWithSeven;
    impl Verifier for EndsWithSeven {
        fn score(&self, response: &str, _answer: &str) -> f32 {
            f32::from(response.ends_with('7'))
        }
    }
    crate::register_verifier!("ends-with-seven", || Box::new(EndsWithSeven));

    #[test]
    fn numbers_are_extracted() {
        assert_eq!(last_number("the answer is 42."), Some(42.0));
        assert_eq!(last_number("-3.5 then 7"), Some(7.0));
        assert_eq!(last_number("x = -3.5"), Some(-3.5));
        assert_eq!(last_number("none"), None);
    }

    #[test]
    fn weighted_verifiers_and_registered_ones() {
        let reward = RuleReward::from_specs(&[
            VerifierSpec::NumericMatch {
                weight: 1.0,
                tolerance: 0.0,
            },
            VerifierSpec::DigitsOnly { weight: 0.1 },
            VerifierSpec::Registered {
                name: "ends-with-seven".into(),
                weight: 2.0,
            },
        ])
        .unwrap();
        assert!((reward.score_one("57", "57") - 3.1).abs() < 1e-6);
        assert!((reward.score_one("56", "57") - 0.1).abs() < 1e-6);
        assert!((reward.score_one("it is 56", "56") - 1.0).abs() < 1e-6);
        assert!(RuleReward::from_specs(&[VerifierSpec::Registered {
            name: "nope".into(),
            weight: 1.0
        }])
        .is_err());
        assert_eq!(ExactMatch.score(" 12 ", "12"), 1.0);
    }
}
