//! Batched generation with a key/value cache: prompts of different lengths (left-padded, with an
//! attention mask), temperature, top-k, top-p, stop tokens and seeded sampling; every sampled
//! token comes back with its log-probability and the weight version that produced it. Also the
//! per-token log-probabilities of given sequences, which training differentiates.

use crate::error::{ModelError, Result};
use crate::model::{attention_mask, layers::log_softmax_last_dim, Decoder, KvCache, PaddedBatch};
use candle_core::{DType, Tensor, D};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How to sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    /// A sequence ends after any of these (it is kept in the output).
    pub stop_tokens: Vec<u32>,
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            max_new_tokens: 32,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            stop_tokens: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Refuses a negative or non-finite temperature, a top-p outside (0, 1], a top-k of 0.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(ModelError::Input(format!(
                "temperature {} must be >= 0",
                self.temperature
            )));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ModelError::Input(format!("top_p {p} must be in (0, 1]")));
            }
        }
        if self.top_k == Some(0) {
            return Err(ModelError::Input("top_k must be at least 1".to_string()));
        }
        Ok(())
    }
}

/// What generation produced, per prompt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Generation {
    /// New tokens (a stop token included when one ended the sequence).
    pub tokens: Vec<Vec<u32>>,
    /// log p(token) under the temperature-scaled policy, before top-k/top-p truncation.
    pub logprobs: Vec<Vec<f32>>,
    /// Whether a stop token ended the sequence (else it ran out of `max_new_tokens`).
    pub stopped: Vec<bool>,
    /// The weight version of the model that generated.
    pub weight_version: u64,
}

/// Generates continuations of `prompts`.
pub fn generate(
    model: &Decoder,
    prompts: &[Vec<u32>],
    pad_id: u32,
    config: &SamplingConfig,
    weight_version: u64,
) -> Result<Generation> {
    config.validate()?;
    let vocab = model.config().vocab_size as u32;
    if let Some(bad) = prompts.iter().flatten().find(|id| **id >= vocab) {
        return Err(ModelError::Input(format!(
            "token id {bad} is outside the vocabulary of {vocab}"
        )));
    }
    let batch = PaddedBatch::left_padded(prompts, pad_id)?;
    let longest = batch.width() + config.max_new_tokens;
    if longest > model.config().max_position_embeddings {
        return Err(ModelError::Input(format!(
            "prompt plus max_new_tokens is {longest} positions; the model has {}",
            model.config().max_position_embeddings
        )));
    }
    let b = batch.batch_size();
    let device = model.device().clone();
    let dtype = model.dtype();
    let mut rngs: Vec<rand::rngs::StdRng> = (0..b)
        .map(|row| {
            rand::rngs::StdRng::seed_from_u64(
                config.seed ^ (row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            )
        })
        .collect();
    let mut cache = KvCache::new(model.config().num_hidden_layers);
    let mut valid = batch.valid.clone();
    let mut next_position: Vec<u32> = batch
        .positions()
        .iter()
        .map(|row| row.last().copied().unwrap_or(0) + 1)
        .collect();
    let (ids, positions, mask) = batch.tensors(dtype, &device)?;
    let mut logits = model.forward(&ids, &positions, &mask, Some(&mut cache))?;
    let mut out = Generation {
        tokens: vec![Vec::new(); b],
        logprobs: vec![Vec::new(); b],
        stopped: vec![false; b],
        weight_version,
    };
    for step in 0..config.max_new_tokens {
        let last = logits
            .narrow(1, logits.dim(1)? - 1, 1)?
            .squeeze(1)?
            .to_dtype(DType::F32)?;
        let scaled = if config.temperature > 0.0 {
            (last / config.temperature as f64)?
        } else {
            last
        };
        let log_probs = log_softmax_last_dim(&scaled)?.to_vec2::<f32>()?;
        let mut chosen = Vec::with_capacity(b);
        for (row, row_log_probs) in log_probs.iter().enumerate() {
            if out.stopped[row] {
                chosen.push(pad_id);
                continue;
            }
            let token = if config.temperature == 0.0 {
                argmax(row_log_probs)
            } else {
                sample(row_log_probs, config, &mut rngs[row])
            };
            out.tokens[row].push(token);
            out.logprobs[row].push(row_log_probs[token as usize]);
            if config.stop_tokens.contains(&token) {
                out.stopped[row] = true;
            }
            chosen.push(token);
        }
        if out.stopped.iter().all(|stopped| *stopped) || step + 1 == config.max_new_tokens {
            break;
        }
        for flags in valid.iter_mut() {
            // A finished row is fed padding from here on; only its own (ignored) rows see it.
            flags.push(true);
        }
        let ids = Tensor::from_vec(chosen, (b, 1), &device)?;
        let positions = Tensor::from_vec(next_position.clone(), (b, 1), &device)?;
        for position in next_position.iter_mut() {
            *position += 1;
        }
        let mask = attention_mask(&valid, 1, dtype, &device)?;
        logits = model.forward(&ids, &positions, &mask, Some(&mut cache))?;
    }
    Ok(out)
}

fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (index, value) in values.iter().enumerate() {
        if *value > values[best] {
            best = index;
        }
    }
    best as u32
}

/// Samples from log-probabilities after top-k and top-p truncation.
fn sample(log_probs: &[f32], config: &SamplingConfig, rng: &mut impl Rng) -> u32 {
    let mut order: Vec<usize> = (0..log_probs.len()).collect();
    order.sort_by(|a, b| log_probs[*b].total_cmp(&log_probs[*a]));
    if let Some(k) = config.top_k {
        order.truncate(k.max(1));
    }
    let mut kept = Vec::with_capacity(order.len());
    let mut mass = 0.0_f64;
    for index in order {
        let p = (log_probs[index] as f64).exp();
        kept.push((index, p));
        mass += p;
        if config.top_p.is_some_and(|top_p| mass >= top_p as f64) {
            break;
        }
    }
    let mut draw = rng.random::<f64>() * mass;
    for (index, p) in &kept {
        draw -= p;
        if draw <= 0.0 {
            return *index as u32;
        }
    }
    kept.last().map(|(index, _)| *index as u32).unwrap_or(0)
}

/// log p(ids[j+1] | ids[..=j]) for every column j of a padded batch: (b, t-1), differentiable.
/// Positions whose target is padding hold meaningless values; mask them.
pub fn sequence_logprobs(model: &Decoder, batch: &PaddedBatch) -> Result<Tensor> {
    let logits = model.forward_batch(batch)?;
    logprobs_of_targets(&logits, batch)
}

/// As `sequence_logprobs`, from logits already computed.
pub fn logprobs_of_targets(logits: &Tensor, batch: &PaddedBatch) -> Result<Tensor> {
    let log_probs = predicting_log_probs(logits, batch)?;
    gather_targets(&log_probs, batch)
}

/// As `sequence_logprobs`, with the entropy of the policy at every column as well (b, t-1).
/// The entropy is summed over the vocabulary in f32 whatever the model's dtype, and returned
/// in the model's dtype. With `entropy_gradient` it is differentiable (an entropy bonus needs
/// that); without, it is computed from detached log-probabilities, so a diagnostic-only entropy
/// keeps no (b, t-1, vocab) tensors alive until the backward pass.
pub fn sequence_logprobs_and_entropy(
    model: &Decoder,
    batch: &PaddedBatch,
    entropy_gradient: bool,
) -> Result<(Tensor, Tensor)> {
    let logits = model.forward_batch(batch)?;
    let log_probs = predicting_log_probs(&logits, batch)?;
    let source = if entropy_gradient {
        log_probs.clone()
    } else {
        log_probs.detach()
    };
    let entropy = crate::train::losses::token_entropy(&source.to_dtype(DType::F32)?)?
        .to_dtype(log_probs.dtype())?;
    Ok((gather_targets(&log_probs, batch)?, entropy))
}

/// Log-probabilities over the vocabulary at every column that predicts a next token
/// (b, t-1, vocab).
fn predicting_log_probs(logits: &Tensor, batch: &PaddedBatch) -> Result<Tensor> {
    let t = batch.width();
    if t < 2 {
        return Err(ModelError::Input(
            "sequences need at least two tokens".to_string(),
        ));
    }
    log_softmax_last_dim(&logits.narrow(1, 0, t - 1)?)
}

/// The log-probability of each next token (b, t-1) out of `log_probs` (b, t-1, vocab).
fn gather_targets(log_probs: &Tensor, batch: &PaddedBatch) -> Result<Tensor> {
    let (b, t) = (batch.batch_size(), batch.width());
    let targets: Vec<u32> = batch.ids.iter().flat_map(|row| row[1..].to_vec()).collect();
    let targets = Tensor::from_vec(targets, (b, t - 1, 1), log_probs.device())?;
    Ok(log_probs.gather(&targets, D::Minus1)?.squeeze(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_head() {
        let log_probs: Vec<f32> = [0.1_f32, 0.6, 0.3].iter().map(|p| p.ln()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let greedy = SamplingConfig {
            top_k: Some(1),
            ..SamplingConfig::default()
        };
        for _ in 0..20 {
            assert_eq!(sample(&log_probs, &greedy, &mut rng), 1);
        }
        let nucleus = SamplingConfig {
            top_p: Some(0.85),
            ..SamplingConfig::default()
        };
        for _ in 0..200 {
            assert_ne!(
                sample(&log_probs, &nucleus, &mut rng),
                0,
                "0.1 lies outside the 0.85 nucleus"
            );
        }
    }
}
