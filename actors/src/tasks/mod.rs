//! Tasks: what a recipe learns. A `Task` gives problems (a prompt and a reference the reward
//! functions and the success check read), a tokenizer, the prompt and answer lengths, a held-out
//! split that training never draws, how success is judged, and a worked answer for the
//! supervised warm start. Tasks are registered by name (`register_task!`), so any actor on any
//! node rebuilds the same task from a `TaskSpec`; problems are drawn by index, deterministically,
//! so a prompt source and a reward actor agree on problem `i` without it travelling between them.
//! Two ship with the project: three-digit addition (`arithmetic`, one right answer) and
//! countdown (`countdown`, many right answers, checked by a verifier).

pub mod arithmetic;
pub mod countdown;

use crate::error::{ModelError, Result};
use crate::tokenizer::TextTokenizer;
use serde::{Deserialize, Serialize};

/// One problem: the prompt text and what judging an answer needs (the answer itself, or the
/// data a verifier checks against).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Problem {
    pub prompt: String,
    pub reference: String,
}

/// What a recipe learns.
pub trait Task: Send + Sync {
    /// Encodes prompts and decodes responses.
    fn tokenizer(&self) -> &dyn TextTokenizer;
    /// The id put before every prompt (the tokenizer's, by default).
    fn bos_id(&self) -> Option<u32> {
        self.tokenizer().bos_id()
    }
    /// Most tokens of a prompt, the `bos` included.
    fn prompt_tokens(&self) -> usize;
    /// Most new tokens of an answer, the end-of-sequence token included.
    fn answer_tokens(&self) -> usize;
    /// Training problem number `index`: the same for every caller, never a held-out one.
    fn train_problem(&self, index: u64) -> Problem;
    /// Problems training never sees, for measuring success.
    fn held_out(&self) -> &[Problem];
    /// Whether a decoded response solves `problem`.
    fn is_correct(&self, response: &str, problem: &Problem) -> bool;
    /// A right answer, for the supervised warm start.
    fn demonstration(&self, problem: &Problem) -> String;

    /// Writes the tokenizer's files beside a checkpoint in `dir`, so transformers and inference
    /// engines load it with the same ids (the tokenizer's `write_files`, by default).
    fn write_tokenizer(&self, dir: &std::path::Path, max_positions: usize) -> Result<()> {
        self.tokenizer().write_files(dir, max_positions)
    }

    /// The prompt's token ids (`bos` first).
    fn prompt_ids(&self, problem: &Problem) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self.bos_id().into_iter().collect();
        ids.extend(self.tokenizer().encode(&problem.prompt)?);
        if ids.len() > self.prompt_tokens() {
            return Err(ModelError::Input(format!(
                "prompt {:?} is {} tokens, more than the task's {}",
                problem.prompt,
                ids.len(),
                self.prompt_tokens()
            )));
        }
        Ok(ids)
    }

    /// The demonstration's token ids, the end-of-sequence token last.
    fn demonstration_ids(&self, problem: &Problem) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer().encode(&self.demonstration(problem))?;
        ids.extend(self.tokenizer().eos_id());
        Ok(ids)
    }
}

/// Which task to build, anywhere: a registered name, its parameters, and the seed of its
/// problems and split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    /// The task's own settings (its registration says which it reads); `null` for defaults.
    /// Travels as JSON text (the actor-call codec cannot carry a self-describing value).
    #[serde(with = "json_text")]
    pub params: serde_json::Value,
    pub seed: u64,
    /// Held-out problems.
    pub held_out: usize,
}

impl TaskSpec {
    pub fn new(name: &str, seed: u64, held_out: usize) -> Self {
        TaskSpec {
            name: name.to_string(),
            params: serde_json::Value::Null,
            seed,
            held_out,
        }
    }

    /// Builds the task from its registration.
    pub fn build(&self) -> Result<Box<dyn Task>> {
        let registration = inventory::iter::<TaskRegistration>
            .into_iter()
            .find(|registration| registration.name == self.name)
            .ok_or_else(|| {
                let known: Vec<&str> = inventory::iter::<TaskRegistration>
                    .into_iter()
                    .map(|r| r.name)
                    .collect();
                ModelError::Input(format!(
                    "no task registered as `{}` (registered: {})",
                    self.name,
                    known.join(", ")
                ))
            })?;
        (registration.build)(self)
    }
}

/// `serde_json::Value` as its JSON text.
mod json_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &serde_json::Value,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<serde_json::Value, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// A task registered by name (see `register_task!`).
pub struct TaskRegistration {
    pub name: &'static str,
    pub build: fn(&TaskSpec) -> Result<Box<dyn Task>>,
}

inventory::collect!(TaskRegistration);

/// Registers a task under a name a `TaskSpec` can refer to, on every node (the workers run the
/// same binary): `troupe_actors::register_task!("reverse", |spec| Ok(Box::new(Reverse::new(spec)?)));`
#[macro_export]
macro_rules! register_task {
    ($name:expr, $build:expr) => {
        $crate::inventory_submit! {
            $crate::tasks::TaskRegistration { name: $name, build: $build }
        }
    };
}

/// Refuses parameters a task does not read, naming them.
pub fn no_params(spec: &TaskSpec) -> Result<()> {
    match &spec.params {
        serde_json::Value::Null => Ok(()),
        serde_json::Value::Object(map) if map.is_empty() => Ok(()),
        other => Err(ModelError::Input(format!(
            "task `{}` takes no parameters, got {other}",
            spec.name
        ))),
    }
}

/// A seeded generator for problem `index` of a task seeded `seed` (a different stream per
/// index, so problems can be drawn in any order).
pub fn problem_rng(seed: u64, index: u64) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    rand::rngs::StdRng::seed_from_u64(mixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_travels_through_the_actor_codec() {
        let mut spec = TaskSpec::new("countdown", 3, 200);
        spec.params = serde_json::json!({"numbers": 4});
        let bytes = troupe::codec::encode(&spec).unwrap();
        let back: TaskSpec = troupe::codec::decode(&bytes).unwrap();
        assert_eq!(back, spec);
        assert!(TaskSpec::new("nope", 0, 1)
            .build()
            .err()
            .unwrap()
            .to_string()
            .contains("arithmetic"));
    }
}
