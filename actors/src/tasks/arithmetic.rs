//! Three-digit addition with every number written least-significant digit first: 123 + 459 is
//! asked as `321+954=` and answered `285` (582). The model then writes each digit of the sum
//! right after the carry that decides it, and the digits it adds sit at the same distance from
//! every answer position. A fixed, seeded set of problems is held out: training draws never
//! return them. One answer is right; the reference is that answer.

use super::{no_params, problem_rng, Problem, Task, TaskSpec};
use crate::error::{ModelError, Result};
use crate::tokenizer::{BuiltinTokenizer, TextTokenizer};
use rand::Rng;
use std::collections::HashSet;

/// One sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addition {
    pub a: u32,
    pub b: u32,
}

impl Addition {
    /// The prompt text, `a+b=` with both operands' digits reversed.
    pub fn prompt_text(&self) -> String {
        format!("{}+{}=", reversed(self.a), reversed(self.b))
    }

    /// The answer text: the sum's digits, least-significant first.
    pub fn answer_text(&self) -> String {
        reversed(self.a + self.b)
    }

    pub fn problem(&self) -> Problem {
        Problem {
            prompt: self.prompt_text(),
            reference: self.answer_text(),
        }
    }
}

/// A number's decimal digits, least-significant first.
fn reversed(number: u32) -> String {
    number.to_string().chars().rev().collect()
}

/// The smallest and largest operand.
const LOW: u32 = 100;
const HIGH: u32 = 999;

/// `<bos>`, two three-digit operands, `+` and `=`, with room to spare.
pub const PROMPT_TOKENS: usize = 12;
/// The longest answer (four digits) plus `<eos>`, with one token to spare.
pub const ANSWER_TOKENS: usize = 6;

/// Sums to learn, and a held-out set that training never sees.
#[derive(Debug, Clone)]
pub struct AdditionTask {
    held_out: Vec<Problem>,
    held_out_set: HashSet<Addition>,
    seed: u64,
    tokenizer: BuiltinTokenizer,
}

crate::register_task!("arithmetic", |spec| {
    no_params(spec)?;
    Ok(Box::new(AdditionTask::new(spec.held_out, spec.seed)?))
});

impl AdditionTask {
    /// `held_out` sums drawn with `seed` are set aside; training draws use `seed` too.
    pub fn new(held_out: usize, seed: u64) -> Result<Self> {
        let space = ((HIGH - LOW + 1) as usize).pow(2);
        if held_out == 0 || held_out > space / 2 {
            return Err(ModelError::Input(format!(
                "held-out size {held_out}: must be between 1 and {}",
                space / 2
            )));
        }
        let mut split_rng = problem_rng(seed ^ 0x05EE_D0F4_E1D0, u64::MAX);
        let mut held_out_set = HashSet::with_capacity(held_out);
        let mut ordered = Vec::with_capacity(held_out);
        while ordered.len() < held_out {
            let sum = draw(&mut split_rng);
            if held_out_set.insert(sum) {
                ordered.push(sum.problem());
            }
        }
        Ok(AdditionTask {
            held_out: ordered,
            held_out_set,
            seed,
            tokenizer: BuiltinTokenizer::new(),
        })
    }

    /// The spec that builds this task on any node.
    pub fn spec(held_out: usize, seed: u64) -> TaskSpec {
        TaskSpec::new("arithmetic", seed, held_out)
    }

    fn train_sum(&self, index: u64) -> Addition {
        let mut rng = problem_rng(self.seed, index);
        loop {
            let sum = draw(&mut rng);
            if !self.held_out_set.contains(&sum) {
                return sum;
            }
        }
    }
}

impl Task for AdditionTask {
    fn tokenizer(&self) -> &dyn TextTokenizer {
        &self.tokenizer
    }

    fn prompt_tokens(&self) -> usize {
        PROMPT_TOKENS
    }

    fn answer_tokens(&self) -> usize {
        ANSWER_TOKENS
    }

    fn train_problem(&self, index: u64) -> Problem {
        self.train_sum(index).problem()
    }

    fn held_out(&self) -> &[Problem] {
        &self.held_out
    }

    fn is_correct(&self, response: &str, problem: &Problem) -> bool {
        response == problem.reference
    }

    fn demonstration(&self, problem: &Problem) -> String {
        problem.reference.clone()
    }
}

fn draw(rng: &mut impl Rng) -> Addition {
    Addition {
        a: rng.random_range(LOW..=HIGH),
        b: rng.random_range(LOW..=HIGH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_reversed_sums() {
        let sum = Addition { a: 123, b: 459 };
        assert_eq!(sum.prompt_text(), "321+954=");
        assert_eq!(sum.answer_text(), "285");
        assert_eq!(Addition { a: 500, b: 500 }.answer_text(), "0001");
        let task = AdditionTask::new(10, 0).unwrap();
        let tokenizer = BuiltinTokenizer::new();
        let problem = sum.problem();
        let prompt = task.prompt_ids(&problem).unwrap();
        assert_eq!(prompt[0], BuiltinTokenizer::BOS);
        assert_eq!(tokenizer.decode(&prompt).unwrap(), "321+954=");
        let target = task.demonstration_ids(&problem).unwrap();
        assert_eq!(tokenizer.decode(&target).unwrap(), "285");
        assert_eq!(*target.last().unwrap(), BuiltinTokenizer::EOS);
        assert!(task.is_correct("285", &problem) && !task.is_correct("582", &problem));
    }

    #[test]
    fn training_draws_never_return_held_out_problems() {
        let task = AdditionTask::new(500, 7).unwrap();
        assert_eq!(task.held_out().len(), 500);
        let held: HashSet<&Problem> = task.held_out().iter().collect();
        assert_eq!(held.len(), 500);
        let drawn: Vec<Problem> = (0..20_000).map(|i| task.train_problem(i)).collect();
        assert!(drawn.iter().all(|p| !held.contains(p)));
        assert_eq!(
            task.train_problem(17),
            task.train_problem(17),
            "draws are by index"
        );
        let again = AdditionTask::spec(500, 7).build().unwrap();
        assert_eq!(again.held_out(), task.held_out(), "the split is seeded");
        assert!(AdditionTask::new(0, 1).is_err());
        let mut bad = AdditionTask::spec(500, 7);
        bad.params = serde_json::json!({"digits": 4});
        assert!(bad.build().err().unwrap().to_string().contains("digits"));
    }
}
