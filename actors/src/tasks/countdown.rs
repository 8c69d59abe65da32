//! Countdown: reach a target from three (or four) numbers with `+`, `-`, `*` and parentheses,
//! using every number exactly once. `3,5,8:23=` is answered `3*5+8`, or `8+3*5`, or `5*3+8`:
//! many answers are right, so a verifier checks them (it parses the expression, checks the
//! numbers, evaluates it) instead of matching one string. Targets are made from a random
//! expression over the numbers (so every problem has an answer), and the worked answer for the
//! warm start is the first solution in a fixed search order (numbers as given, then operators
//! `+ - *`), so the supervised phase teaches one consistent way to find a solution and
//! reinforcement learning is free to find others. Parameters: `numbers` (3 or 4) and
//! `max_number` (numbers drawn from 1 to it, at most 99).

use super::{problem_rng, Problem, Task, TaskSpec};
use crate::error::{ModelError, Result};
use crate::tokenizer::{BuiltinTokenizer, TextTokenizer};
use rand::Rng;
use std::collections::HashSet;

/// Numbers are drawn from `1..=max_number`: 9 unless the spec says otherwise.
const DEFAULT_MAX_NUMBER: u32 = 9;
/// The largest `max_number` read (numbers of at most two digits).
const LARGEST_MAX_NUMBER: u32 = 99;
/// A held-out set may take at most this share of the problems training would draw (above it,
/// drawing a training problem that is not held out takes many tries, and the split says little).
const MAX_HELD_OUT_SHARE: f64 = 0.5;
/// Targets above this are drawn again (keeps them to three digits). Tried at 99: the warm start
/// got further (20.8% in 50 steps) but GRPO then gained almost nothing in 200 steps.
const MAX_TARGET: i64 = 999;
const OPERATORS: [char; 3] = ['+', '-', '*'];

/// A countdown problem: the numbers (in the order shown) and the target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Countdown {
    pub numbers: Vec<u32>,
    pub target: i64,
}

impl Countdown {
    /// The problem whatever order its numbers are shown in (what the held-out split compares:
    /// `5,3,8:23` is the same problem as `3,5,8:23`).
    fn unordered(&self) -> (Vec<u32>, i64) {
        let mut numbers = self.numbers.clone();
        numbers.sort_unstable();
        (numbers, self.target)
    }

    fn numbers_text(&self) -> String {
        self.numbers
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn problem(&self) -> Problem {
        Problem {
            prompt: format!("{}:{}=", self.numbers_text(), self.target),
            reference: format!("{}:{}", self.numbers_text(), self.target),
        }
    }

    /// Reads a problem's reference (`3,5,8:19`).
    pub fn from_reference(reference: &str) -> Option<Countdown> {
        let (numbers, target) = reference.split_once(':')?;
        let numbers = numbers
            .split(',')
            .map(|n| n.parse().ok())
            .collect::<Option<Vec<u32>>>()?;
        Some(Countdown {
            numbers,
            target: target.parse().ok()?,
        })
    }

    /// The first solution without parentheses in the fixed search order.
    pub fn first_solution(&self) -> Option<String> {
        let mut order: Vec<usize> = (0..self.numbers.len()).collect();
        let mut found = None;
        permutations(&mut order, 0, &mut |order| {
            if found.is_some() {
                return;
            }
            let slots = self.numbers.len() - 1;
            for code in 0..OPERATORS.len().pow(slots as u32) {
                let mut text = String::new();
                let mut rest = code;
                for (position, index) in order.iter().enumerate() {
                    if position > 0 {
                        text.push(OPERATORS[rest % OPERATORS.len()]);
                        rest /= OPERATORS.len();
                    }
                    text.push_str(&self.numbers[*index].to_string());
                }
                if evaluate(&text) == Some(self.target) {
                    found = Some(text);
                    return;
                }
            }
        });
        found
    }
}

/// Calls `visit` with every permutation of `items[from..]` (items before `from` fixed).
fn permutations(items: &mut Vec<usize>, from: usize, visit: &mut dyn FnMut(&[usize])) {
    if from == items.len() {
        visit(items);
        return;
    }
    for i in from..items.len() {
        items.swap(from, i);
        permutations(items, from + 1, visit);
        items.swap(from, i);
    }
}

/// An expression's tokens: numbers, operators and parentheses.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Number(i64),
    Op(char),
    Open,
    Close,
}

/// Longest expression judged (a response is a few tokens; this bounds the parser's work and
/// its recursion on arbitrary text).
const MAX_EXPRESSION_CHARS: usize = 64;

/// The tokens of `text` (spaces between them allowed); `None` for any other character, a
/// number written with a leading zero, or an overlong text.
fn tokens(text: &str) -> Option<Vec<Token>> {
    if text.len() > MAX_EXPRESSION_CHARS {
        return None;
    }
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {}
            '0'..='9' => {
                let leading_zero = c == '0' && chars.peek().is_some_and(char::is_ascii_digit);
                if leading_zero {
                    return None;
                }
                let mut value = i64::from(c.to_digit(10)?);
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    value = value.checked_mul(10)?.checked_add(i64::from(d))?;
                    chars.next();
                }
                out.push(Token::Number(value));
            }
            '+' | '-' | '*' => out.push(Token::Op(c)),
            '(' => out.push(Token::Open),
            ')' => out.push(Token::Close),
            _ => return None,
        }
    }
    Some(out)
}

/// Recursive descent over `expr := term (('+'|'-') term)*`, `term := atom ('*' atom)*`,
/// `atom := number | '(' expr ')'`; `None` for anything malformed or overflowing.
struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl Parser<'_> {
    fn next(&self) -> Option<Token> {
        self.tokens.get(self.at).copied()
    }

    fn expr(&mut self) -> Option<i64> {
        let mut value = self.term()?;
        while let Some(Token::Op(op @ ('+' | '-'))) = self.next() {
            self.at += 1;
            let right = self.term()?;
            value = if op == '+' {
                value.checked_add(right)?
            } else {
                value.checked_sub(right)?
            };
        }
        Some(value)
    }

    fn term(&mut self) -> Option<i64> {
        let mut value = self.atom()?;
        while let Some(Token::Op('*')) = self.next() {
            self.at += 1;
            value = value.checked_mul(self.atom()?)?;
        }
        Some(value)
    }

    fn atom(&mut self) -> Option<i64> {
        match self.next()? {
            Token::Number(value) => {
                self.at += 1;
                Some(value)
            }
            Token::Open => {
                self.at += 1;
                let value = self.expr()?;
                (self.next()? == Token::Close).then_some(())?;
                self.at += 1;
                Some(value)
            }
            _ => None,
        }
    }
}

/// The value of an expression of integers, `+ - *` and parentheses (`None`: malformed).
pub fn evaluate(text: &str) -> Option<i64> {
    let tokens = tokens(text)?;
    let mut parser = Parser {
        tokens: &tokens,
        at: 0,
    };
    let value = parser.expr()?;
    (parser.at == tokens.len()).then_some(value)
}

/// Whether `response` is a well-formed expression that uses each of `numbers` exactly once
/// (and no other number), whatever its value.
pub fn uses_each_number_once(response: &str, numbers: &[u32]) -> bool {
    let response = response.trim();
    let Some(tokens) = tokens(response) else {
        return false;
    };
    if evaluate(response).is_none() {
        return false;
    }
    let mut used: Vec<i64> = tokens
        .iter()
        .filter_map(|t| match t {
            Token::Number(n) => Some(*n),
            _ => None,
        })
        .collect();
    let mut wanted: Vec<i64> = numbers.iter().map(|n| i64::from(*n)).collect();
    used.sort_unstable();
    wanted.sort_unstable();
    used == wanted
}

/// The verifier: the response uses each number once and reaches the target.
pub fn solves(response: &str, problem: &Problem) -> bool {
    let Some(countdown) = Countdown::from_reference(&problem.reference) else {
        return false;
    };
    uses_each_number_once(response, &countdown.numbers)
        && evaluate(response.trim()) == Some(countdown.target)
}

/// Reward: 1 when the response solves the problem.
pub fn correct_reward(response: &str, problem: &Problem) -> f32 {
    f32::from(solves(response, problem))
}

/// Reward: 1 when the response is a well-formed expression over exactly the given numbers.
pub fn format_reward(response: &str, problem: &Problem) -> f32 {
    Countdown::from_reference(&problem.reference)
        .map(|c| f32::from(uses_each_number_once(response, &c.numbers)))
        .unwrap_or(0.0)
}

/// Reward: partial credit by how near a well-formed expression over exactly the given numbers
/// comes to the target: 1 on it, falling linearly to 0 at a distance of the target's size (at
/// least 10). On a problem no sample solves yet, the group still learns which misses are nearer.
pub fn closeness_reward(response: &str, problem: &Problem) -> f32 {
    let Some(countdown) = Countdown::from_reference(&problem.reference) else {
        return 0.0;
    };
    if !uses_each_number_once(response, &countdown.numbers) {
        return 0.0;
    }
    let Some(value) = evaluate(response.trim()) else {
        return 0.0;
    };
    let scale = countdown.target.abs().max(10) as f64;
    let miss = (value - countdown.target).unsigned_abs() as f64;
    (1.0 - miss / scale).max(0.0) as f32
}

crate::register_reward!("countdown_correct", correct_reward);
crate::register_reward!("countdown_format", format_reward);
crate::register_reward!("countdown_closeness", closeness_reward);

/// Countdown problems and a held-out set training never draws.
pub struct CountdownTask {
    numbers: usize,
    max_number: u32,
    seed: u64,
    held_out: Vec<Problem>,
    held_out_set: HashSet<(Vec<u32>, i64)>,
    tokenizer: BuiltinTokenizer,
}

crate::register_task!("countdown", |spec| Ok(Box::new(CountdownTask::from_spec(
    spec
)?)));

impl CountdownTask {
    /// `numbers` per problem (3 or 4), each from `1..=max_number`; `held_out` problems set
    /// aside, drawn with `seed`. Refuses a held-out set that would take over half of what
    /// training draws.
    pub fn new(numbers: usize, max_number: u32, held_out: usize, seed: u64) -> Result<Self> {
        if !(3..=4).contains(&numbers) {
            return Err(ModelError::Input(format!(
                "countdown with {numbers} numbers: 3 or 4 are supported"
            )));
        }
        if !(2..=LARGEST_MAX_NUMBER).contains(&max_number) {
            return Err(ModelError::Input(format!(
                "countdown max_number {max_number}: must be between 2 and {LARGEST_MAX_NUMBER}"
            )));
        }
        if held_out == 0 || held_out > 5_000 {
            return Err(ModelError::Input(format!(
                "held-out size {held_out}: must be between 1 and 5000"
            )));
        }
        let mut rng = problem_rng(seed ^ 0xC0DE_C0DE, u64::MAX);
        let mut held_out_set = HashSet::with_capacity(held_out);
        let mut ordered = Vec::with_capacity(held_out);
        // Each new problem takes fewer than 1/(1 - share) draws while the held-out share of
        // the problems is under MAX_HELD_OUT_SHARE; past that bound the split is refused.
        let mut draws_left = 4 * held_out + 1_000;
        while ordered.len() < held_out {
            if draws_left == 0 {
                return Err(too_many_held_out(held_out, numbers, max_number));
            }
            draws_left -= 1;
            let problem = draw(&mut rng, numbers, max_number);
            if held_out_set.insert(problem.unordered()) {
                ordered.push(problem.problem());
            }
        }
        // How much of what training draws is held out, measured on fresh draws.
        let probes = 2_000;
        let held = (0..probes)
            .filter(|_| held_out_set.contains(&draw(&mut rng, numbers, max_number).unordered()))
            .count();
        if held as f64 > MAX_HELD_OUT_SHARE * probes as f64 {
            return Err(too_many_held_out(held_out, numbers, max_number));
        }
        Ok(CountdownTask {
            numbers,
            max_number,
            seed,
            held_out: ordered,
            held_out_set,
            tokenizer: BuiltinTokenizer::new(),
        })
    }

    /// Digits of the largest number.
    fn number_digits(&self) -> usize {
        self.max_number.to_string().len()
    }

    /// Reads `{"numbers": 3 | 4, "max_number": 2..=99}` (defaults 3 and 9) and refuses any
    /// other parameter by name.
    pub fn from_spec(spec: &TaskSpec) -> Result<Self> {
        let mut numbers = 3;
        let mut max_number = DEFAULT_MAX_NUMBER;
        match &spec.params {
            serde_json::Value::Null => {}
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    let small = value.as_u64().and_then(|n| u32::try_from(n).ok());
                    match (key.as_str(), small) {
                        ("numbers", Some(n)) => numbers = n as usize,
                        ("max_number", Some(n)) => max_number = n,
                        _ => {
                            return Err(ModelError::Input(format!(
                                "countdown: unknown or malformed parameter `{key}` = {value} (it reads `numbers`: 3 or 4, `max_number`: 2 to 99)"
                            )))
                        }
                    }
                }
            }
            other => {
                return Err(ModelError::Input(format!(
                    "countdown parameters must be an object, got {other}"
                )))
            }
        }
        CountdownTask::new(numbers, max_number, spec.held_out, spec.seed)
    }

    /// The spec that builds a three-number countdown on any node.
    pub fn spec(held_out: usize, seed: u64) -> TaskSpec {
        TaskSpec::new("countdown", seed, held_out)
    }
}

/// The error for a held-out set too large for the problems there are.
fn too_many_held_out(held_out: usize, numbers: usize, max_number: u32) -> ModelError {
    ModelError::Input(format!(
        "a held-out set of {held_out} would take over half of what training draws from countdown \
         with {numbers} numbers up to {max_number}: hold out fewer or raise max_number"
    ))
}

fn draw(rng: &mut impl Rng, count: usize, max_number: u32) -> Countdown {
    loop {
        let numbers: Vec<u32> = (0..count)
            .map(|_| rng.random_range(1..=max_number))
            .collect();
        let mut order: Vec<usize> = (0..count).collect();
        for i in (1..count).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let mut text = numbers[order[0]].to_string();
        for index in &order[1..] {
            text.push(OPERATORS[rng.random_range(0..OPERATORS.len())]);
            text.push_str(&numbers[*index].to_string());
        }
        match evaluate(&text) {
            Some(target) if (0..=MAX_TARGET).contains(&target) => {
                return Countdown { numbers, target }
            }
            _ => continue,
        }
    }
}

impl Task for CountdownTask {
    fn tokenizer(&self) -> &dyn TextTokenizer {
        &self.tokenizer
    }

    fn prompt_tokens(&self) -> usize {
        // <bos>, the numbers and their commas, `:`, three target digits, `=`, one spare.
        self.numbers * (self.number_digits() + 1) + 6
    }

    fn answer_tokens(&self) -> usize {
        // The numbers and operators, one pair of parentheses, <eos>.
        self.numbers * self.number_digits() + (self.numbers - 1) + 2 + 1
    }

    fn train_problem(&self, index: u64) -> Problem {
        let mut rng = problem_rng(self.seed, index);
        loop {
            let problem = draw(&mut rng, self.numbers, self.max_number);
            if !self.held_out_set.contains(&problem.unordered()) {
                return problem.problem();
            }
        }
    }

    fn held_out(&self) -> &[Problem] {
        &self.held_out
    }

    fn is_correct(&self, response: &str, problem: &Problem) -> bool {
        solves(response, problem)
    }

    fn demonstration(&self, problem: &Problem) -> String {
        Countdown::from_reference(&problem.reference)
            .and_then(|c| c.first_solution())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_follow_precedence_and_parentheses() {
        assert_eq!(evaluate("3*5+8"), Some(23));
        assert_eq!(evaluate("8+3*5"), Some(23));
        assert_eq!(evaluate("(3+5)*8"), Some(64));
        assert_eq!(evaluate("9-8-1"), Some(0));
        assert_eq!(evaluate("3+"), None);
        assert_eq!(evaluate("(3+5"), None);
        assert_eq!(evaluate("3 5"), None, "two numbers side by side");
        assert_eq!(evaluate("3 * 5 + 8"), Some(23));
        assert_eq!(evaluate("03*5"), None, "a leading zero");
        assert_eq!(evaluate(&"(".repeat(10_000)), None, "bounded");
        assert_eq!(evaluate(""), None);
    }

    #[test]
    fn the_verifier_accepts_every_right_answer_and_nothing_else() {
        let problem = Countdown {
            numbers: vec![3, 5, 8],
            target: 23,
        }
        .problem();
        assert_eq!(problem.prompt, "3,5,8:23=");
        for right in ["3*5+8", "8+3*5", "5*3+8", "8+5*3", " (3*5)+8 "] {
            assert!(solves(right, &problem), "{right}");
        }
        for wrong in [
            "3*5+9", "35-8-4", "3*5+8+8", "15+8", "3*5", "23", "3*5+8=", "03*5+8",
        ] {
            assert!(!solves(wrong, &problem), "{wrong}");
        }
        assert_eq!(format_reward("8-5-3", &problem), 1.0);
        assert_eq!(correct_reward("8-5-3", &problem), 0.0);
        assert_eq!(format_reward("8-5", &problem), 0.0);
        assert_eq!(closeness_reward("8-5", &problem), 0.0, "not every number");
    }

    #[test]
    fn closeness_falls_with_the_distance_to_the_target() {
        let problem = Countdown {
            numbers: vec![3, 5, 8],
            target: 23,
        }
        .problem();
        assert_eq!(closeness_reward("3*5+8", &problem), 1.0);
        // 3*8-5 = 19 misses by 4 of 23; 8-5-3 = 0 misses by the whole target.
        assert!((closeness_reward("3*8-5", &problem) - (1.0 - 4.0 / 23.0)).abs() < 1e-6);
        assert_eq!(closeness_reward("8-5-3", &problem), 0.0);
        assert_eq!(closeness_reward("3*5*8", &problem), 0.0, "120 is far past");
        assert_eq!(
            closeness_reward("3*5+9", &problem),
            0.0,
            "a number not given"
        );
        assert_eq!(closeness_reward("3*5+", &problem), 0.0, "not an expression");
        let small = Countdown {
            numbers: vec![1, 1, 2],
            target: 0,
        }
        .problem();
        assert_eq!(
            closeness_reward("1-1*2", &small),
            0.9,
            "scale is at least 10"
        );
    }

    #[test]
    fn every_problem_has_a_demonstration_that_fits_and_solves_it() {
        for (numbers, max_number) in [(3, DEFAULT_MAX_NUMBER), (3, 20), (4, 9), (4, 99)] {
            let task = CountdownTask::new(numbers, max_number, 200, 1).unwrap();
            for index in 0..500 {
                let problem = task.train_problem(index);
                let demo = task.demonstration(&problem);
                assert!(task.is_correct(&demo, &problem), "{problem:?}: {demo:?}");
                assert!(task.prompt_ids(&problem).is_ok(), "{problem:?}");
                let answer = task.demonstration_ids(&problem).unwrap();
                assert!(answer.len() <= task.answer_tokens(), "{problem:?}");
                let drawn = Countdown::from_reference(&problem.reference).unwrap();
                assert!(drawn.numbers.iter().all(|n| (1..=max_number).contains(n)));
                assert!(
                    !task.held_out_set.contains(&drawn.unordered()),
                    "{problem:?}"
                );
            }
        }
    }

    #[test]
    fn parameters_are_read_and_bad_ones_refused_by_name() {
        let spec = |params| TaskSpec {
            params,
            ..CountdownTask::spec(50, 2)
        };
        let four = CountdownTask::from_spec(&spec(serde_json::json!({"numbers": 4}))).unwrap();
        let problem = four.train_problem(3);
        assert!(four.is_correct(&four.demonstration(&problem), &problem));
        let wider = CountdownTask::from_spec(&spec(serde_json::json!({"max_number": 20}))).unwrap();
        assert_eq!((wider.prompt_tokens(), wider.answer_tokens()), (15, 11));
        for (params, named) in [
            (serde_json::json!({"digits": 2}), "digits"),
            (serde_json::json!({"max_number": 100}), "max_number 100"),
            (serde_json::json!({"max_number": 1}), "max_number 1"),
            (serde_json::json!({"max_number": -3}), "`max_number` = -3"),
            (
                serde_json::json!({"max_number": 4_294_967_296_u64}),
                "`max_number` = 4294967296",
            ),
            (serde_json::json!({"numbers": 5}), "5 numbers"),
        ] {
            let error = CountdownTask::from_spec(&spec(params)).err().unwrap();
            assert!(error.to_string().contains(named), "{error}");
        }
    }

    #[test]
    fn a_held_out_set_larger_than_half_the_problems_is_refused() {
        // Three numbers from 1..=2 make 17 distinct problems: 14 held out would leave training
        // drawing held-out problems most of the time; 30 cannot be drawn at all.
        for held_out in [14, 30] {
            let error = CountdownTask::new(3, 2, held_out, 0).err().unwrap();
            assert!(error.to_string().contains("over half"), "{error}");
        }
        assert!(CountdownTask::new(3, 2, 2, 0).is_ok());
    }
}
