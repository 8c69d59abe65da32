//! Rotary position embeddings' frequencies: the base `rope_theta` and the scaling types that
//! transformers 5 computes for these families (`default`, `linear`, `dynamic`, `llama3`, `yarn`),
//! read from either config layout and turned into inverse frequencies and the factor that
//! scales cos and sin.

use super::ModelConfig;
use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How the rotary frequencies are scaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    Default,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Dynamic NTK: the base grows once a sequence runs past `max_position_embeddings`; below
    /// it the frequencies are the default ones. Longer sequences are refused.
    Dynamic {
        factor: f64,
    },
    /// Llama 3.1's scaling: low frequencies divided by `factor`, high ones kept, a smooth ramp
    /// between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// YaRN: interpolation ramped in by dimension, with an attention factor on cos and sin.
    Yarn {
        /// None: `max_position_embeddings / original_max_position_embeddings`.
        factor: Option<f64>,
        original_max_position_embeddings: f64,
        attention_factor: Option<f64>,
        beta_fast: Option<f64>,
        beta_slow: Option<f64>,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
        truncate: bool,
    },
}

/// The keys each `rope_type` may carry besides `rope_type`/`type` and `rope_theta`.
fn allowed_keys(rope_type: &str) -> Option<&'static [&'static str]> {
    Some(match rope_type {
        "default" => &[],
        "linear" | "dynamic" => &["factor"],
        "llama3" => &[
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
        ],
        "yarn" => &[
            "factor",
            "original_max_position_embeddings",
            "attention_factor",
            "beta_fast",
            "beta_slow",
            "mscale",
            "mscale_all_dim",
            "truncate",
        ],
        _ => return None,
    })
}

/// What the parser found: the scaling and the base.
pub(super) struct ParsedRope {
    pub scaling: RopeScaling,
    pub theta: f64,
}

impl RopeScaling {
    /// The `rope_type` name.
    pub fn rope_type(&self) -> &'static str {
        match self {
            RopeScaling::Default => "default",
            RopeScaling::Linear { .. } => "linear",
            RopeScaling::Dynamic { .. } => "dynamic",
            RopeScaling::Llama3 { .. } => "llama3",
            RopeScaling::Yarn { .. } => "yarn",
        }
    }

    /// Reads one rope dictionary (`rope_parameters` of transformers 5 or `rope_scaling` of 4).
    /// `top_theta` is the top-level `rope_theta`; `original_max` a top-level
    /// `original_max_position_embeddings` (which transformers prefers for llama3 and yarn).
    pub(super) fn parse(
        field: &str,
        dict: &Map<String, Value>,
        top_theta: Option<f64>,
        original_max: Option<f64>,
        max_positions: usize,
    ) -> std::result::Result<ParsedRope, String> {
        let name = |key: &str| -> Option<&Value> { dict.get(key).filter(|v| !v.is_null()) };
        let rope_type = match (name("rope_type"), name("type")) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!("{field}: `rope_type` {a} and `type` {b} disagree"))
            }
            (Some(v), _) | (None, Some(v)) => v
                .as_str()
                .ok_or_else(|| format!("{field}.rope_type {v} is not a string"))?
                .to_string(),
            (None, None) => "default".to_string(),
        };
        let allowed = allowed_keys(&rope_type).ok_or_else(|| {
            format!(
                "{field}.rope_type \"{rope_type}\" is not supported (supported: default, linear, \
                 dynamic, llama3, yarn)"
            )
        })?;
        for (key, value) in dict {
            // transformers keeps a null here and then fails on it.
            if value.is_null()
                && matches!(
                    key.as_str(),
                    "rope_theta" | "original_max_position_embeddings" | "rope_type"
                )
            {
                return Err(format!("{field}.{key} is null"));
            }
            let known = matches!(key.as_str(), "rope_type" | "type" | "rope_theta")
                || allowed.contains(&key.as_str());
            if key == "partial_rotary_factor" {
                if value.as_f64() != Some(1.0) {
                    return Err(format!(
                        "{field}.partial_rotary_factor {value}: these families rotate the whole head"
                    ));
                }
            } else if !known {
                return Err(format!(
                    "{field}.{key} {value} is not a key of rope_type \"{rope_type}\""
                ));
            }
        }
        let number = |key: &str| -> std::result::Result<Option<f64>, String> {
            match name(key) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| format!("{field}.{key} {v} is not a number")),
            }
        };
        let required = |key: &str| -> std::result::Result<f64, String> {
            number(key)?
                .ok_or_else(|| format!("{field} of rope_type \"{rope_type}\" needs `{key}`"))
        };
        let theta = match number("rope_theta")? {
            Some(theta) => theta,
            None => top_theta.unwrap_or(10_000.0),
        };
        let original = || -> std::result::Result<f64, String> {
            Ok(match original_max {
                Some(value) => value,
                None => number("original_max_position_embeddings")?.unwrap_or(max_positions as f64),
            })
        };
        let scaling = match rope_type.as_str() {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear {
                factor: required("factor")?,
            },
            "dynamic" => RopeScaling::Dynamic {
                factor: required("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: required("factor")?,
                low_freq_factor: required("low_freq_factor")?,
                high_freq_factor: required("high_freq_factor")?,
                original_max_position_embeddings: original()?,
            },
            "yarn" => {
                if !dict.contains_key("factor") {
                    return Err(format!("{field} of rope_type \"yarn\" needs `factor`"));
                }
                // transformers reads `get("truncate", True)`: absent is true, null is false.
                let truncate = match dict.get("truncate") {
                    None => true,
                    Some(Value::Null) => false,
                    Some(v) => v
                        .as_bool()
                        .ok_or_else(|| format!("{field}.truncate {v} is not a boolean"))?,
                };
                RopeScaling::Yarn {
                    factor: number("factor")?,
                    original_max_position_embeddings: original()?,
                    attention_factor: number("attention_factor")?,
                    beta_fast: number("beta_fast")?,
                    beta_slow: number("beta_slow")?,
                    mscale: number("mscale")?,
                    mscale_all_dim: number("mscale_all_dim")?,
                    truncate,
                }
            }
            _ => unreachable!("allowed_keys covers every accepted type"),
        };
        Ok(ParsedRope { scaling, theta })
    }

    /// The dictionary transformers 5 reads as `rope_parameters` (without `rope_theta`).
    pub(super) fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("rope_type".into(), self.rope_type().into());
        let mut put = |key: &str, value: Option<f64>| {
            if let Some(value) = value {
                map.insert(key.into(), value.into());
            }
        };
        match self {
            RopeScaling::Default => {}
            RopeScaling::Linear { factor } | RopeScaling::Dynamic { factor } => {
                put("factor", Some(*factor))
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                put("factor", Some(*factor));
                put("low_freq_factor", Some(*low_freq_factor));
                put("high_freq_factor", Some(*high_freq_factor));
                put(
                    "original_max_position_embeddings",
                    Some(*original_max_position_embeddings),
                );
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                attention_factor,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
                truncate,
            } => {
                put(
                    "original_max_position_embeddings",
                    Some(*original_max_position_embeddings),
                );
                put("attention_factor", *attention_factor);
                put("beta_fast", *beta_fast);
                put("beta_slow", *beta_slow);
                put("mscale", *mscale);
                put("mscale_all_dim", *mscale_all_dim);
                map.insert("factor".into(), factor.map_or(Value::Null, Value::from));
                map.insert("truncate".into(), (*truncate).into());
            }
        }
        map
    }

    /// Checks the numbers (positive factors, ordered llama3 band).
    pub fn validate(&self, config: &ModelConfig) -> Result<()> {
        let fail = |why: String| Err(ModelError::Config(why));
        let positive = |name: &str, value: f64| -> Result<()> {
            if value > 0.0 && value.is_finite() {
                Ok(())
            } else {
                Err(ModelError::Config(format!(
                    "rope {name} {value} must be positive"
                )))
            }
        };
        match self {
            RopeScaling::Default => Ok(()),
            RopeScaling::Linear { factor } | RopeScaling::Dynamic { factor } => {
                positive("factor", *factor)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                positive("factor", *factor)?;
                positive("low_freq_factor", *low_freq_factor)?;
                positive(
                    "original_max_position_embeddings",
                    *original_max_position_embeddings,
                )?;
                if high_freq_factor <= low_freq_factor {
                    return fail(format!(
                        "rope high_freq_factor {high_freq_factor} must exceed low_freq_factor \
                         {low_freq_factor}"
                    ));
                }
                Ok(())
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                ..
            } => {
                positive(
                    "original_max_position_embeddings",
                    *original_max_position_embeddings,
                )?;
                // 0 means "the default" (transformers reads `beta or default`).
                for (name, beta) in [("beta_fast", beta_fast), ("beta_slow", beta_slow)] {
                    if let Some(beta) = beta.filter(|b| *b != 0.0) {
                        positive(name, beta)?;
                    }
                }
                let factor = factor.unwrap_or(
                    config.max_position_embeddings as f64 / original_max_position_embeddings,
                );
                positive("factor", factor)
            }
        }
    }

    /// The inverse frequency of each of the `head_dim / 2` rotary pairs, and the factor that
    /// multiplies cos and sin, as transformers computes them for sequences within
    /// `max_position_embeddings`: in f32, operation by operation as torch does (its scalars cast
    /// to f32), since the angles of positions in the thousands amplify any difference.
    pub fn frequencies(&self, config: &ModelConfig) -> (Vec<f32>, f64) {
        let dim = config.head_dim;
        let base = config.rope_theta;
        // base ** (arange(0, dim, 2) / dim), in f32.
        let powers = |base: f64| -> Vec<f32> {
            (0..dim / 2)
                .map(|i| {
                    let exponent = (2 * i) as f32 / dim as f32;
                    ((base as f32) as f64).powf(exponent as f64) as f32
                })
                .collect()
        };
        let plain: Vec<f32> = powers(base).iter().map(|p| 1.0_f32 / p).collect();
        match self {
            RopeScaling::Default | RopeScaling::Dynamic { .. } => (plain, 1.0),
            RopeScaling::Linear { factor } => {
                (plain.iter().map(|f| f / *factor as f32).collect(), 1.0)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelength = (old / low_freq_factor) as f32;
                let high_wavelength = (old / high_freq_factor) as f32;
                let factor = *factor as f32;
                let band = (high_freq_factor - low_freq_factor) as f32;
                let scaled = plain
                    .iter()
                    .map(|&frequency| {
                        // torch divides a number by a tensor as the tensor's reciprocal times
                        // the number; the same here, for the same bits.
                        let wavelength =
                            (1.0_f32 / frequency) * (2.0 * std::f64::consts::PI) as f32;
                        let kept = if wavelength > low_wavelength {
                            frequency / factor
                        } else {
                            frequency
                        };
                        // Neither high (short) nor low (long) frequency; the wavelengths are
                        // finite, so this is transformers' `~(w < high) * ~(w > low)`.
                        let medium = wavelength >= high_wavelength && wavelength <= low_wavelength;
                        if medium {
                            let smooth = ((1.0_f32 / wavelength) * *old as f32
                                - *low_freq_factor as f32)
                                / band;
                            (1.0 - smooth) * kept / factor + smooth * kept
                        } else {
                            kept
                        }
                    })
                    .collect();
                (scaled, 1.0)
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                attention_factor,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
                truncate,
            } => {
                let factor = factor.unwrap_or(config.max_position_embeddings as f64 / original);
                let get_mscale = |scale: f64, m: f64| {
                    if scale <= 1.0 {
                        1.0
                    } else {
                        0.1 * m * scale.ln() + 1.0
                    }
                };
                // transformers treats 0 like absent for these (`x or default`).
                let nonzero = |v: &Option<f64>| v.filter(|v| *v != 0.0);
                let attention = match attention_factor {
                    Some(value) => *value,
                    None => match (nonzero(mscale), nonzero(mscale_all_dim)) {
                        (Some(m), Some(all)) => get_mscale(factor, m) / get_mscale(factor, all),
                        _ => get_mscale(factor, 1.0),
                    },
                };
                let fast = nonzero(beta_fast).unwrap_or(32.0);
                let slow = nonzero(beta_slow).unwrap_or(1.0);
                let width = dim as f64;
                let correction = |rotations: f64| {
                    width * (original / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * base.ln())
                };
                let (mut low, mut high) = (correction(fast), correction(slow));
                if *truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let low = low.max(0.0);
                let mut high = high.min(width - 1.0);
                if low == high {
                    high += 0.001;
                }
                let span = (high - low) as f32;
                let powers = powers(base);
                let scaled = powers
                    .iter()
                    .enumerate()
                    .map(|(index, &power)| {
                        let extrapolation = 1.0_f32 / power;
                        let interpolation = 1.0_f32 / (factor as f32 * power);
                        let ramp = ((index as f32 - low as f32) / span).clamp(0.0, 1.0);
                        let keep = 1.0 - ramp;
                        interpolation * (1.0 - keep) + extrapolation * keep
                    })
                    .collect();
                (scaled, attention)
            }
        }
    }

    /// The largest position this scaling computes like transformers: dynamic NTK changes the
    /// frequencies past `max_position_embeddings` depending on the sequences seen so far.
    pub fn position_limit(&self, config: &ModelConfig) -> Option<usize> {
        match self {
            RopeScaling::Dynamic { .. } => Some(config.max_position_embeddings),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scaling: RopeScaling) -> ModelConfig {
        let mut config = ModelConfig::tiny(10, 64, 1, 2, 2);
        config.rope_theta = 10_000.0;
        config.rope_scaling = scaling;
        config
    }

    #[test]
    fn llama3_keeps_high_scales_low_and_smooths_between() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        };
        let config = config(scaling.clone());
        let (plain, _) = RopeScaling::Default.frequencies(&config);
        let (scaled, attention) = scaling.frequencies(&config);
        assert_eq!(attention, 1.0);
        assert_eq!(scaled[0], plain[0], "the highest frequency is kept");
        let last = plain.len() - 1;
        assert_eq!(scaled[last], plain[last] / 8.0);
        let between = (0..plain.len())
            .filter(|&i| scaled[i] != plain[i] && scaled[i] != plain[i] / 8.0)
            .count();
        assert!(between > 0, "some frequencies are smoothed");
    }

    #[test]
    fn yarn_attention_factor_follows_mscale() {
        let yarn = |attention_factor, mscale, mscale_all_dim| RopeScaling::Yarn {
            factor: Some(4.0),
            original_max_position_embeddings: 32.0,
            attention_factor,
            beta_fast: None,
            beta_slow: None,
            mscale,
            mscale_all_dim,
            truncate: true,
        };
        let config = config(RopeScaling::Default);
        let (_, plain) = yarn(None, None, None).frequencies(&config);
        assert!((plain - (0.1 * 4.0_f64.ln() + 1.0)).abs() < 1e-12);
        let (_, given) = yarn(Some(0.8), None, None).frequencies(&config);
        assert_eq!(given, 0.8);
        let (_, ratio) = yarn(None, Some(1.0), Some(1.0)).frequencies(&config);
        assert!((ratio - 1.0).abs() < 1e-12);
    }

    #[test]
    fn parse_refuses_unknown_types_and_keys() {
        let dict = |text: &str| -> Map<String, Value> { serde_json::from_str(text).unwrap() };
        let err = RopeScaling::parse(
            "rope_parameters",
            &dict(r#"{"rope_type":"longrope"}"#),
            None,
            None,
            64,
        )
        .err()
        .unwrap();
        assert!(
            err.contains("rope_type") && err.contains("longrope"),
            "{err}"
        );
        let err = RopeScaling::parse(
            "rope_scaling",
            &dict(r#"{"type":"yarn","factor":2.0,"mystery":1}"#),
            None,
            None,
            64,
        )
        .err()
        .unwrap();
        assert!(err.contains("mystery") && err.contains('1'), "{err}");
        let parsed = RopeScaling::parse(
            "rope_scaling",
            &dict(r#"{"type":"linear","factor":4.0}"#),
            Some(500_000.0),
            None,
            64,
        )
        .unwrap();
        assert_eq!(parsed.theta, 500_000.0);
        assert_eq!(parsed.scaling, RopeScaling::Linear { factor: 4.0 });
    }
}
