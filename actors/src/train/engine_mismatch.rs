//! The gap between the log-probabilities a rollout engine reported for the tokens it sampled
//! and the trainer's own for the same tokens, and its correction: truncated importance sampling
//! (TIS), which weighs each token's policy-gradient term by min(pi_trainer / pi_engine, cap).
//! An engine other than the trainer's own code (vLLM's kernels, another dtype) samples from a
//! slightly different policy than the one being trained; without the weights the update is
//! quietly off-policy.

use crate::error::Result;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// Token means over a batch's response tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineMismatch {
    /// Mean |log pi_trainer - log pi_engine|.
    pub logprob_abs_diff: f64,
    /// KL(engine || trainer) estimated from the engine's own samples with k3:
    /// r - 1 - log r, r = pi_trainer / pi_engine (never negative).
    pub kl: f64,
    /// Share of tokens whose ratio r exceeded the TIS cap (0 without one).
    pub tis_clipped_share: f64,
}

/// Compares `trainer_logp` (detached, b x t) with `engine_logp` over `mask`; with `tis_cap`
/// also returns each token's weight min(r, cap).
pub fn engine_mismatch(
    trainer_logp: &Tensor,
    engine_logp: &Tensor,
    mask: &Tensor,
    tis_cap: Option<f64>,
) -> Result<(EngineMismatch, Option<Tensor>)> {
    let tokens = mean_denominator(mask)?;
    let masked_mean = |values: &Tensor| -> Result<f64> {
        Ok((values * mask)?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            / tokens)
    };
    let log_ratio = (trainer_logp.detach() - engine_logp)?;
    let ratio = log_ratio.exp()?;
    let k3 = ((&ratio - 1.0)? - &log_ratio)?;
    let mut mismatch = EngineMismatch {
        logprob_abs_diff: masked_mean(&log_ratio.abs()?)?,
        kl: masked_mean(&k3)?,
        tis_clipped_share: 0.0,
    };
    let weights = match tis_cap {
        Some(cap) => {
            let over = ratio.gt(cap)?.to_dtype(mask.dtype())?;
            mismatch.tis_clipped_share = masked_mean(&over)?;
            Some(ratio.clamp(f64::MIN, cap)?)
        }
        None => None,
    };
    Ok((mismatch, weights))
}

fn mean_denominator(mask: &Tensor) -> Result<f64> {
    Ok(mask
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?
        .max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(values: &[f64], shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn equal_log_probabilities_show_no_mismatch_and_weigh_one() {
        let logp = t(&[-1.0, -2.0, -0.5], (1, 3));
        let mask = t(&[1.0, 1.0, 0.0], (1, 3));
        let (mismatch, weights) = engine_mismatch(&logp, &logp, &mask, Some(2.0)).unwrap();
        assert_eq!(mismatch, EngineMismatch::default());
        assert_eq!(weights.unwrap().to_vec2::<f64>().unwrap()[0], vec![1.0; 3]);
    }

    #[test]
    fn mismatch_and_truncated_weights_by_hand() {
        // Token 1: trainer -1, engine -2: r = e = 2.718 > cap 2 -> weight 2, clipped.
        // Token 2: trainer -2, engine -1.5: r = e^-0.5 = 0.6065 -> weight 0.6065.
        // Token 3 is masked out (a huge gap that must not count).
        let trainer = t(&[-1.0, -2.0, -9.0], (1, 3));
        let engine = t(&[-2.0, -1.5, -0.1], (1, 3));
        let mask = t(&[1.0, 1.0, 0.0], (1, 3));
        let (mismatch, weights) = engine_mismatch(&trainer, &engine, &mask, Some(2.0)).unwrap();
        assert!((mismatch.logprob_abs_diff - 0.75).abs() < 1e-12);
        let e = std::f64::consts::E;
        let k3 = ((e - 1.0 - 1.0) + ((-0.5_f64).exp() - 1.0 + 0.5)) / 2.0;
        assert!((mismatch.kl - k3).abs() < 1e-12, "{} vs {k3}", mismatch.kl);
        assert!((mismatch.tis_clipped_share - 0.5).abs() < 1e-12);
        let weights = weights.unwrap().to_vec2::<f64>().unwrap();
        assert!((weights[0][0] - 2.0).abs() < 1e-12);
        assert!((weights[0][1] - (-0.5_f64).exp()).abs() < 1e-12);
        let (_, none) = engine_mismatch(&trainer, &engine, &mask, None).unwrap();
        assert!(none.is_none());
    }
}
