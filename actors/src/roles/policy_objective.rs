//! The policy objective a trainer optimises: PPO-clip's range, how the per-token loss is
//! aggregated, the KL penalty to the reference and its estimator, the entropy bonus, whether
//! rows without signal are skipped; and the check that refuses an objective the loss cannot use.

use crate::error::{ModelError, Result};
use crate::train::losses::{Aggregation, KlEstimator};
use serde::{Deserialize, Serialize};

/// The policy objective.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyConfig {
    /// PPO clip range (0.2 is usual).
    pub clip: f64,
    pub aggregation: Aggregation,
    /// Weight of the KL penalty to the reference (0 turns it off).
    pub kl_coef: f64,
    pub kl_estimator: KlEstimator,
    /// Train only on rows whose advantage is not zero (a group whose samples all scored the
    /// same teaches nothing): the loss is the mean over the rows with signal, and the step
    /// costs less as groups are solved or given up on.
    #[serde(default)]
    pub skip_zero_advantage: bool,
    /// Weight of an entropy bonus (the token mean of the policy's entropy is subtracted from
    /// the loss; 0 turns it off). It keeps sampling diverse where groups would otherwise all
    /// answer alike and stop teaching anything.
    #[serde(default)]
    pub entropy_coef: f64,
    /// Truncated importance sampling against the rollout engine: each token's term is weighed
    /// by min(pi_trainer / pi_engine, cap), with the PPO ratio taken against the trainer's own
    /// log-probabilities. For engines that are not the trainer's code (vLLM); None turns it off.
    #[serde(default)]
    pub tis_cap: Option<f64>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            clip: 0.2,
            aggregation: Aggregation::TokenMean,
            kl_coef: 0.0,
            kl_estimator: KlEstimator::K3,
            skip_zero_advantage: false,
            entropy_coef: 0.0,
            tis_cap: None,
        }
    }
}

impl PolicyConfig {
    /// PPO-clip at `clip` with a token-mean loss and a k3 KL penalty weighted `kl_coef`.
    pub fn clipped(clip: f64, kl_coef: f64) -> Self {
        PolicyConfig {
            clip,
            aggregation: Aggregation::TokenMean,
            kl_coef,
            kl_estimator: KlEstimator::K3,
            skip_zero_advantage: false,
            entropy_coef: 0.0,
            tis_cap: None,
        }
    }

    /// Refuses an objective the loss cannot use: a clip range that is not positive and finite,
    /// a negative or non-finite KL or entropy weight, a `SumOverConstant` divisor that is not
    /// positive, a TIS cap below 1 or not finite. Each error names the field and its value.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, value: f64, rule: &str| {
            Err(ModelError::Config(format!(
                "policy objective: {field} = {value} must be {rule}"
            )))
        };
        if !(self.clip > 0.0 && self.clip.is_finite()) {
            return bad("clip", self.clip, "positive and finite");
        }
        if !(self.kl_coef >= 0.0 && self.kl_coef.is_finite()) {
            return bad("kl_coef", self.kl_coef, ">= 0 and finite");
        }
        if !(self.entropy_coef >= 0.0 && self.entropy_coef.is_finite()) {
            return bad("entropy_coef", self.entropy_coef, ">= 0 and finite");
        }
        if let Some(cap) = self.tis_cap {
            if !(cap >= 1.0 && cap.is_finite()) {
                return bad("tis_cap", cap, ">= 1 and finite");
            }
        }
        if let Aggregation::SumOverConstant(divisor) = self.aggregation {
            if !(divisor > 0.0 && divisor.is_finite()) {
                return bad("aggregation's constant", divisor, "positive and finite");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_and_clipped_objectives_are_valid() {
        PolicyConfig::default().validate().unwrap();
        PolicyConfig::clipped(0.2, 0.01).validate().unwrap();
    }

    #[test]
    fn a_bad_weight_or_range_is_refused_by_name() {
        let refused = |policy: PolicyConfig, field: &str| {
            let error = policy.validate().unwrap_err().to_string();
            assert!(error.contains(field), "{error}");
        };
        refused(
            PolicyConfig {
                entropy_coef: -0.1,
                ..Default::default()
            },
            "entropy_coef = -0.1",
        );
        refused(
            PolicyConfig {
                entropy_coef: f64::NAN,
                ..Default::default()
            },
            "entropy_coef = NaN",
        );
        refused(
            PolicyConfig {
                kl_coef: f64::INFINITY,
                ..Default::default()
            },
            "kl_coef = inf",
        );
        refused(
            PolicyConfig {
                clip: 0.0,
                ..Default::default()
            },
            "clip = 0",
        );
        refused(
            PolicyConfig {
                aggregation: Aggregation::SumOverConstant(0.0),
                ..Default::default()
            },
            "aggregation's constant = 0",
        );
        refused(
            PolicyConfig {
                tis_cap: Some(0.5),
                ..Default::default()
            },
            "tis_cap = 0.5",
        );
    }
}
