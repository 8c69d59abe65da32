//! A policy-gradient batch as the trainer uses it: responses with the log-probabilities they
//! were sampled with, the reference's, and the advantages; read from a step's columns, and
//! without the rows that carry no learning signal (DAPO's dynamic sampling keeps only groups
//! whose rewards differ).

use super::columns::{ADVANTAGE, OLD_LOGPROB, PROMPT, REF_LOGPROB, RESPONSE};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use troupe::data::Batch;

/// The rows of `rows` whose `keep` is true, in order.
pub(crate) fn kept<T>(rows: Vec<T>, keep: &[bool]) -> Vec<T> {
    rows.into_iter()
        .zip(keep)
        .filter_map(|(row, keep)| keep.then_some(row))
        .collect()
}

/// The inverse of `kept`: `chosen` back in the rows whose `keep` is true, empty rows elsewhere
/// (`chosen` must hold one row per true `keep`).
pub(crate) fn spread<T>(chosen: Vec<Vec<T>>, keep: &[bool]) -> Vec<Vec<T>> {
    let mut chosen = chosen.into_iter();
    keep.iter()
        .map(|keep| match keep {
            true => chosen.next().unwrap_or_default(),
            false => Vec::new(),
        })
        .collect()
}

/// Advantages: one per response (GRPO, RLOO, ...) or one per response token (GAE with a critic).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Advantages {
    PerSequence(Vec<f32>),
    PerToken(Vec<Vec<f32>>),
}

impl Advantages {
    /// The `advantage` column of a step: per token when its rows are ragged, else per response.
    pub fn from_column(batch: &Batch) -> Result<Self> {
        Ok(match batch.column(ADVANTAGE).map(|c| c.row_shape.len()) {
            Some(1) => Advantages::PerToken(batch.ragged_f32(ADVANTAGE)?),
            _ => Advantages::PerSequence(batch.f32_values(ADVANTAGE)?),
        })
    }

    /// For each row, whether its advantage is anywhere not zero (a row that teaches something).
    pub fn signal_rows(&self) -> Vec<bool> {
        match self {
            Advantages::PerSequence(values) => values.iter().map(|v| *v != 0.0).collect(),
            Advantages::PerToken(rows) => rows
                .iter()
                .map(|row| row.iter().any(|v| *v != 0.0))
                .collect(),
        }
    }

    pub fn rows(&self) -> usize {
        match self {
            Advantages::PerSequence(values) => values.len(),
            Advantages::PerToken(rows) => rows.len(),
        }
    }
}

/// A policy-gradient batch: responses to prompts, the log-probabilities they were sampled with,
/// the reference's (for the KL penalty), and the advantages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyBatch {
    pub prompts: Vec<Vec<u32>>,
    pub responses: Vec<Vec<u32>>,
    pub old_logprobs: Vec<Vec<f32>>,
    pub ref_logprobs: Option<Vec<Vec<f32>>>,
    pub advantages: Advantages,
}

impl PolicyBatch {
    /// Reads a step's columns: `prompt`, `response`, `old_logprob`, `advantage` (one f32 per
    /// row, or a ragged row per response token) and, when present, `ref_logprob`.
    pub fn from_columns(batch: &Batch) -> Result<Self> {
        let advantages = Advantages::from_column(batch)?;
        Ok(PolicyBatch {
            prompts: batch.ragged_u32(PROMPT)?,
            responses: batch.ragged_u32(RESPONSE)?,
            old_logprobs: batch.ragged_f32(OLD_LOGPROB)?,
            ref_logprobs: match batch.column(REF_LOGPROB) {
                Some(_) => Some(batch.ragged_f32(REF_LOGPROB)?),
                None => None,
            },
            advantages,
        })
    }

    pub fn rows(&self) -> usize {
        self.prompts.len()
    }

    /// Response tokens over all rows.
    pub fn tokens(&self) -> usize {
        self.responses.iter().map(Vec::len).sum()
    }

    /// The rows whose advantage is not zero everywhere: a GRPO group whose samples all scored
    /// the same has zero advantages, and its rows would only dilute a token-mean loss (and
    /// cost a forward and backward pass). Their KL penalty goes with them.
    pub fn without_zero_advantages(self) -> PolicyBatch {
        let keep = self.advantages.signal_rows();
        PolicyBatch {
            prompts: kept(self.prompts, &keep),
            responses: kept(self.responses, &keep),
            old_logprobs: kept(self.old_logprobs, &keep),
            ref_logprobs: self.ref_logprobs.map(|rows| kept(rows, &keep)),
            advantages: match self.advantages {
                Advantages::PerSequence(values) => Advantages::PerSequence(kept(values, &keep)),
                Advantages::PerToken(rows) => Advantages::PerToken(kept(rows, &keep)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_with_signal_are_kept_and_spread_back() {
        let per_token = Advantages::PerToken(vec![vec![0.0, 0.0], vec![0.0, 0.5], vec![]]);
        assert_eq!(per_token.signal_rows(), vec![false, true, false]);
        let keep = Advantages::PerSequence(vec![1.0, 0.0, -0.5, 0.0]).signal_rows();
        assert_eq!(keep, vec![true, false, true, false]);
        let chosen = kept(vec![vec![1.0], vec![2.0], vec![3.0, 3.5], vec![4.0]], &keep);
        assert_eq!(chosen, vec![vec![1.0], vec![3.0, 3.5]]);
        assert_eq!(
            spread(chosen, &keep),
            vec![vec![1.0], vec![], vec![3.0, 3.5], vec![]]
        );
    }

    fn batch(advantages: Advantages) -> PolicyBatch {
        PolicyBatch {
            prompts: vec![vec![1], vec![2], vec![3]],
            responses: vec![vec![4, 5], vec![6], vec![7, 8, 9]],
            old_logprobs: vec![vec![-1.0, -1.0], vec![-2.0], vec![-3.0, -3.0, -3.0]],
            ref_logprobs: Some(vec![vec![-0.5, -0.5], vec![-0.6], vec![-0.7, -0.7, -0.7]]),
            advantages,
        }
    }

    #[test]
    fn rows_without_signal_are_dropped_with_everything_they_carry() {
        let kept = batch(Advantages::PerSequence(vec![0.5, 0.0, -0.5])).without_zero_advantages();
        assert_eq!(kept.prompts, vec![vec![1], vec![3]]);
        assert_eq!(kept.responses, vec![vec![4, 5], vec![7, 8, 9]]);
        assert_eq!(kept.old_logprobs[1], vec![-3.0; 3]);
        assert_eq!(kept.ref_logprobs.as_ref().map(Vec::len), Some(2));
        assert_eq!(kept.tokens(), 5);
        let Advantages::PerSequence(values) = kept.advantages else {
            panic!("advantages changed kind");
        };
        assert_eq!(values, vec![0.5, -0.5]);
    }

    #[test]
    fn a_token_row_is_kept_if_any_token_has_signal() {
        let kept = batch(Advantages::PerToken(vec![
            vec![0.0, 0.0],
            vec![0.1],
            vec![0.0, 0.0, 0.0],
        ]))
        .without_zero_advantages();
        assert_eq!(kept.prompts, vec![vec![2]]);
        assert_eq!(kept.rows(), 1);
        let flat = batch(Advantages::PerSequence(vec![0.0; 3])).without_zero_advantages();
        assert_eq!((flat.rows(), flat.tokens()), (0, 0));
    }
}
