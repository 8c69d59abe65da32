//! Losses on per-token tensors: PPO-clip policy loss (GRPO, RLOO and REINFORCE++ use it with
//! their own advantages), KL estimators against a reference policy, supervised cross-entropy,
//! the clipped value loss of a critic, and the Bradley-Terry loss of a reward model. All built
//! from differentiable candle ops; masks are 0/1 tensors of the same shape as the values.

use crate::error::{ModelError, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// How per-token losses become one number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Aggregation {
    /// Mean over all unmasked tokens of the batch (DAPO's token-level mean).
    TokenMean,
    /// Mean over sequences of each sequence's token mean (the original GRPO).
    SequenceMean,
    /// Sum over tokens divided by (batch size x this constant), as Dr.GRPO does with the
    /// maximum response length: no length bias.
    SumOverConstant(f64),
}

/// Reduces per-token `values` (b, t) under `mask` (b, t) to a scalar.
pub fn aggregate(values: &Tensor, mask: &Tensor, how: Aggregation) -> Result<Tensor> {
    let masked = (values * mask)?;
    let rows = values.dim(0)? as f64;
    Ok(match how {
        Aggregation::TokenMean => {
            let count = mask
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            (masked.sum_all()? / count.max(1.0))?
        }
        Aggregation::SequenceMean => {
            let per_row = masked.sum(1)?;
            let lengths = mask.sum(1)?.clamp(1.0, f64::MAX)?;
            (per_row.div(&lengths)?.sum_all()? / rows)?
        }
        Aggregation::SumOverConstant(constant) => {
            if constant <= 0.0 {
                return Err(ModelError::Input(format!(
                    "normalising constant {constant} must be positive"
                )));
            }
            (masked.sum_all()? / (rows * constant))?
        }
    })
}

/// Figures about one policy update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyStats {
    pub loss: f64,
    /// Share of tokens where the clipped objective was in force.
    pub clip_fraction: f64,
    /// Mean of (old - new) log-probability over tokens: a cheap KL(old || new) estimate.
    pub approx_kl: f64,
}

/// PPO-clip: -min(r A, clip(r, 1-eps, 1+eps) A) per token, r = exp(logp - old_logp), each
/// token's term multiplied by its `token_weights` when given (truncated importance sampling).
/// `advantages` is (b, t) (broadcast a per-sequence advantage over its tokens first).
pub fn ppo_clip(
    logp: &Tensor,
    old_logp: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    clip: f64,
    how: Aggregation,
    token_weights: Option<&Tensor>,
) -> Result<(Tensor, PolicyStats)> {
    let ratio = (logp - old_logp)?.exp()?;
    let unclipped = (&ratio * advantages)?;
    let clipped = (ratio.clamp(1.0 - clip, 1.0 + clip)? * advantages)?;
    let mut per_token = unclipped.minimum(&clipped)?.neg()?;
    if let Some(weights) = token_weights {
        per_token = (per_token * weights)?;
    }
    let loss = aggregate(&per_token, mask, how)?;
    let tokens = mask
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?
        .max(1.0);
    // The clipped term is the one in force where it is the smaller objective.
    let was_clipped = clipped.lt(&unclipped)?.to_dtype(mask.dtype())?;
    let clip_fraction = (was_clipped * mask)?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?
        / tokens;
    let approx_kl = ((old_logp - logp)? * mask)?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?
        / tokens;
    let stats = PolicyStats {
        loss: loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?,
        clip_fraction,
        approx_kl,
    };
    Ok((loss, stats))
}

/// Estimators of KL(policy || reference) per token from log-probabilities of sampled tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum KlEstimator {
    /// log p - log q: unbiased, high variance, can be negative.
    K1,
    /// exp(log q - log p) - (log q - log p) - 1: unbiased, low variance, never negative.
    K3,
}

/// Per-token KL estimate (b, t), differentiable in `logp`.
pub fn kl(logp: &Tensor, ref_logp: &Tensor, estimator: KlEstimator) -> Result<Tensor> {
    Ok(match estimator {
        KlEstimator::K1 => (logp - ref_logp)?,
        KlEstimator::K3 => {
            let log_ratio = (ref_logp - logp)?;
            ((log_ratio.exp()? - &log_ratio)? - 1.0)?
        }
    })
}

/// The entropy -sum p log p of each position's distribution, from its log-probabilities over
/// the vocabulary (..., vocab) -> (...); differentiable (an entropy bonus subtracts its mean).
pub fn token_entropy(log_probs: &Tensor) -> Result<Tensor> {
    Ok((log_probs.exp()? * log_probs)?
        .sum(candle_core::D::Minus1)?
        .neg()?)
}

/// Supervised fine-tuning: negative log-likelihood of the target tokens, token mean.
pub fn cross_entropy(target_logp: &Tensor, mask: &Tensor) -> Result<Tensor> {
    aggregate(&target_logp.neg()?, mask, Aggregation::TokenMean)
}

/// Critic loss: 0.5 max((v - R)^2, (clip(v, v_old +- clip) - R)^2), token mean; no clipping
/// without `clip`.
pub fn value_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    clip: Option<f64>,
) -> Result<Tensor> {
    let plain = (values - returns)?.sqr()?;
    let per_token = match clip {
        Some(clip) => {
            let delta = (values - old_values)?.clamp(-clip, clip)?;
            let clipped = ((old_values + delta)? - returns)?.sqr()?;
            plain.maximum(&clipped)?
        }
        None => plain,
    };
    aggregate(&(per_token * 0.5)?, mask, Aggregation::TokenMean)
}

/// Bradley-Terry: mean of -log sigmoid(chosen - rejected), computed as a stable softplus.
pub fn bradley_terry(chosen: &Tensor, rejected: &Tensor) -> Result<Tensor> {
    let x = (rejected - chosen)?;
    let softplus = (x.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    Ok(softplus.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(values: &[f64], shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn scalar(x: &Tensor) -> f64 {
        x.to_scalar::<f64>().unwrap()
    }

    #[test]
    fn aggregations_by_hand() {
        let values = t(&[1.0, 2.0, 3.0, 4.0, 100.0, 0.0], (2, 3));
        let mask = t(&[1.0, 1.0, 1.0, 1.0, 0.0, 0.0], (2, 3));
        assert!(
            (scalar(&aggregate(&values, &mask, Aggregation::TokenMean).unwrap()) - 2.5).abs()
                < 1e-12
        );
        // Row means 2 and 4.
        assert!(
            (scalar(&aggregate(&values, &mask, Aggregation::SequenceMean).unwrap()) - 3.0).abs()
                < 1e-12
        );
        // Sum 10 over (2 rows x 5).
        assert!(
            (scalar(&aggregate(&values, &mask, Aggregation::SumOverConstant(5.0)).unwrap()) - 1.0)
                .abs()
                < 1e-12
        );
    }

    #[test]
    fn ppo_clip_by_hand() {
        // Token 1: ratio e^0.5 = 1.6487, A = 1: min(1.6487, 1.2) = 1.2 -> -1.2 (clipped).
        // Token 2: ratio e^-0.5 = 0.6065, A = 1: min(0.6065, 0.8) = 0.6065 -> -0.6065.
        // Token 3: ratio 1, A = -2: -(-2) = 2. Token mean: (-1.2 - 0.60653 + 2) / 3.
        let logp = t(&[0.5, -0.5, 0.0], (1, 3));
        let old = t(&[0.0, 0.0, 0.0], (1, 3));
        let advantages = t(&[1.0, 1.0, -2.0], (1, 3));
        let mask = t(&[1.0, 1.0, 1.0], (1, 3));
        let (loss, stats) = ppo_clip(
            &logp,
            &old,
            &advantages,
            &mask,
            0.2,
            Aggregation::TokenMean,
            None,
        )
        .unwrap();
        let expected = (-1.2 - (-0.5_f64).exp() + 2.0) / 3.0;
        assert!(
            (scalar(&loss) - expected).abs() < 1e-9,
            "{} vs {expected}",
            scalar(&loss)
        );
        assert!((stats.clip_fraction - 1.0 / 3.0).abs() < 1e-12);
        assert!((stats.approx_kl - 0.0).abs() < 1e-12);
    }

    #[test]
    fn kl_estimators_by_hand() {
        let logp = t(&[-1.0, -2.0], (1, 2));
        let reference = t(&[-2.0, -2.0], (1, 2));
        let k1 = kl(&logp, &reference, KlEstimator::K1)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        assert_eq!(k1[0], vec![1.0, 0.0]);
        // k3 with log q - log p = -1: e^-1 + 1 - 1 = 0.367879.
        let k3 = kl(&logp, &reference, KlEstimator::K3)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        assert!((k3[0][0] - (-1.0_f64).exp()).abs() < 1e-12 && k3[0][1].abs() < 1e-12);
    }

    #[test]
    fn cross_entropy_value_and_bradley_terry_by_hand() {
        let logp = t(&[-0.5, -1.5, -9.0], (1, 3));
        let mask = t(&[1.0, 1.0, 0.0], (1, 3));
        assert!((scalar(&cross_entropy(&logp, &mask).unwrap()) - 1.0).abs() < 1e-12);
        // v = 2, old 1, R = 0, clip 0.5: plain 4, clipped (1.5)^2 = 2.25; max 4 -> 0.5 * 4 = 2.
        let v = t(&[2.0], (1, 1));
        let old = t(&[1.0], (1, 1));
        let r = t(&[0.0], (1, 1));
        let m = t(&[1.0], (1, 1));
        assert!((scalar(&value_loss(&v, &old, &r, &m, Some(0.5)).unwrap()) - 2.0).abs() < 1e-12);
        // v = 1, old 2, R = 3, clip 0.5: plain 4, clipped (1.5 - 3)^2 = 2.25 -> 2.
        let v = t(&[1.0], (1, 1));
        let old = t(&[2.0], (1, 1));
        let r = t(&[3.0], (1, 1));
        assert!((scalar(&value_loss(&v, &old, &r, &m, Some(0.5)).unwrap()) - 2.0).abs() < 1e-12);
        // chosen 2, rejected 0: -log sigmoid(2) = ln(1 + e^-2) = 0.126928.
        let chosen = Tensor::new(&[2.0_f64, 0.0], &Device::Cpu).unwrap();
        let rejected = Tensor::new(&[0.0_f64, 0.0], &Device::Cpu).unwrap();
        let expected = ((1.0 + (-2.0_f64).exp()).ln() + 2.0_f64.ln()) / 2.0;
        assert!((scalar(&bradley_terry(&chosen, &rejected).unwrap()) - expected).abs() < 1e-12);
    }

    #[test]
    fn entropy_and_its_gradient_by_hand() {
        use crate::model::layers::log_softmax_last_dim;
        let entropy_of = |logits: &[f64]| {
            let x = Tensor::new(logits, &Device::Cpu).unwrap();
            scalar(&token_entropy(&log_softmax_last_dim(&x).unwrap()).unwrap())
        };
        assert!(
            (entropy_of(&[0.0; 4]) - 4.0_f64.ln()).abs() < 1e-12,
            "uniform"
        );
        // p = (e/(e+1), 1/(e+1)): H = 0.582203...
        let p = 1.0_f64.exp() / (1.0 + 1.0_f64.exp());
        let expected = -(p * p.ln() + (1.0 - p) * (1.0 - p).ln());
        assert!((entropy_of(&[1.0, 0.0]) - expected).abs() < 1e-12);
        // The gradient against central differences, for every logit.
        let logits = [0.3, -1.2, 2.0];
        let var = candle_core::Var::new(&logits, &Device::Cpu).unwrap();
        let entropy = token_entropy(&log_softmax_last_dim(var.as_tensor()).unwrap()).unwrap();
        let grads = entropy.backward().unwrap();
        let grad = grads
            .get(var.as_tensor())
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for i in 0..logits.len() {
            let (mut up, mut down) = (logits, logits);
            up[i] += 1e-6;
            down[i] -= 1e-6;
            let numeric = (entropy_of(&up) - entropy_of(&down)) / 2e-6;
            assert!(
                (grad[i] - numeric).abs() < 1e-6,
                "logit {i}: {} vs {numeric}",
                grad[i]
            );
        }
    }
}
