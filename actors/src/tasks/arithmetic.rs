//! Three-digit addition with every number written least-significant digit first: 123 + 459 is
//! asked as `321+954=` and answered `285` (582). The model then writes each digit of the sum
//! right after the carry that decides it, and the digits it adds sit at the same distance from
//! every answer position. A fixed, seeded set of problems is held out: training draws never
//! return them.

use crate::error::{ModelError, Result};
use crate::tokenizer::{BuiltinTokenizer, TextTokenizer};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;

/// One problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Problem {
    pub a: u32,
    pub b: u32,
}

impl Problem {
    /// The prompt text, `a+b=` with both operands' digits reversed.
    pub fn prompt_text(&self) -> String {
        format!("{}+{}=", reversed(self.a), reversed(self.b))
    }

    /// The answer text: the sum's digits, least-significant first.
    pub fn answer_text(&self) -> String {
        reversed(self.a + self.b)
    }

    /// `<bos>` then the prompt's tokens.
    pub fn prompt_tokens(&self) -> Vec<u32> {
        let mut tokens = vec![BuiltinTokenizer::BOS];
        tokens.extend(encode(&self.prompt_text()));
        tokens
    }

    /// The answer's tokens then `<eos>`: what supervised training teaches.
    pub fn target_tokens(&self) -> Vec<u32> {
        let mut tokens = encode(&self.answer_text());
        tokens.push(BuiltinTokenizer::EOS);
        tokens
    }
}

/// A number's decimal digits, least-significant first.
fn reversed(number: u32) -> String {
    number.to_string().chars().rev().collect()
}

fn encode(text: &str) -> Vec<u32> {
    // Digits, `+` and `=` are all in the built-in vocabulary.
    BuiltinTokenizer::new()
        .encode(text)
        .unwrap_or_else(|_| unreachable!("arithmetic text is always encodable"))
}

/// The smallest and largest operand.
const LOW: u32 = 100;
const HIGH: u32 = 999;

/// Problems for training and a held-out set that training never sees.
#[derive(Debug, Clone)]
pub struct AdditionTask {
    held_out: Vec<Problem>,
    held_out_set: HashSet<Problem>,
    rng: rand::rngs::StdRng,
}

impl AdditionTask {
    /// `held_out` problems drawn with `seed` are set aside; training draws use `seed` too.
    pub fn new(held_out: usize, seed: u64) -> Result<Self> {
        let space = ((HIGH - LOW + 1) as usize).pow(2);
        if held_out == 0 || held_out > space / 2 {
            return Err(ModelError::Input(format!(
                "held-out size {held_out}: must be between 1 and {}",
                space / 2
            )));
        }
        let mut split_rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x05EE_D0F4_E1D0_u64);
        let mut held_out_set = HashSet::with_capacity(held_out);
        let mut ordered = Vec::with_capacity(held_out);
        while ordered.len() < held_out {
            let problem = draw(&mut split_rng);
            if held_out_set.insert(problem) {
                ordered.push(problem);
            }
        }
        Ok(AdditionTask {
            held_out: ordered,
            held_out_set,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        })
    }

    pub fn held_out(&self) -> &[Problem] {
        &self.held_out
    }

    pub fn is_held_out(&self, problem: &Problem) -> bool {
        self.held_out_set.contains(problem)
    }

    /// `count` training problems, never held-out ones.
    pub fn sample(&mut self, count: usize) -> Vec<Problem> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let problem = draw(&mut self.rng);
            if !self.held_out_set.contains(&problem) {
                out.push(problem);
            }
        }
        out
    }
}

fn draw(rng: &mut impl Rng) -> Problem {
    Problem {
        a: rng.random_range(LOW..=HIGH),
        b: rng.random_range(LOW..=HIGH),
    }
}

/// Whether a decoded response is exactly the answer.
pub fn is_correct(response: &str, problem: &Problem) -> bool {
    response == problem.answer_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_reversed_sums() {
        let problem = Problem { a: 123, b: 459 };
        assert_eq!(problem.prompt_text(), "321+954=");
        assert_eq!(problem.answer_text(), "285");
        assert_eq!(Problem { a: 500, b: 500 }.answer_text(), "0001");
        let tokenizer = BuiltinTokenizer::new();
        assert_eq!(
            tokenizer.decode(&problem.prompt_tokens()).unwrap(),
            "321+954="
        );
        assert_eq!(tokenizer.decode(&problem.target_tokens()).unwrap(), "285");
        assert_eq!(
            *problem.target_tokens().last().unwrap(),
            BuiltinTokenizer::EOS
        );
    }

    #[test]
    fn training_draws_never_return_held_out_problems() {
        let mut task = AdditionTask::new(500, 7).unwrap();
        assert_eq!(task.held_out().len(), 500);
        let unique: HashSet<_> = task.held_out().iter().collect();
        assert_eq!(unique.len(), 500);
        let drawn = task.sample(20_000);
        assert!(drawn.iter().all(|p| !task.is_held_out(p)));
        assert!(drawn.iter().all(|p| (LOW..=HIGH).contains(&p.a)));
        let again = AdditionTask::new(500, 7).unwrap();
        assert_eq!(again.held_out(), task.held_out(), "the split is seeded");
        assert!(AdditionTask::new(0, 1).is_err());
    }
}
