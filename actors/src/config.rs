//! The model's shape, read from (and written to) a Hugging Face `config.json` of the Llama or
//! Qwen2 family.

use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_max_positions() -> usize {
    4096
}

/// A decoder's shape: the fields of a Llama/Qwen2 `config.json` that matter here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(default)]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: fewer key/value heads than query heads (default: as many).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// The output projection reuses the token embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on the q/k/v projections (Qwen2 has them; Llama does not).
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

impl ModelConfig {
    /// A small Llama-style config for tests and synthetic tasks.
    pub fn tiny(
        vocab_size: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        kv_heads: usize,
    ) -> Self {
        ModelConfig {
            model_type: "llama".to_string(),
            vocab_size,
            hidden_size: hidden,
            intermediate_size: hidden * 4,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            max_position_embeddings: 512,
            tie_word_embeddings: true,
            attention_bias: Some(false),
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Whether q/k/v carry biases: as the config says, else true for Qwen2.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias.unwrap_or(self.model_type == "qwen2")
    }

    /// Checks that the shape is consistent.
    pub fn validate(&self) -> Result<()> {
        let fail = |why: String| Err(ModelError::Config(why));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return fail("vocab_size, hidden_size and num_hidden_layers must be positive".into());
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return fail(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return fail(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {kv}",
                self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return fail(format!(
                "head dimension {} must be even for RoPE",
                self.head_dim()
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return fail("rms_norm_eps and rope_theta must be positive".into());
        }
        Ok(())
    }

    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ModelError::io(format!("reading {}", path.display()), err))?;
        let config: ModelConfig = serde_json::from_str(&text)
            .map_err(|err| ModelError::Config(format!("{}: {err}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// Writes `config.json` in the Hugging Face layout.
    pub fn to_file(&self, path: &Path) -> Result<()> {
        let mut value =
            serde_json::to_value(self).map_err(|err| ModelError::Config(err.to_string()))?;
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "architectures".into(),
                serde_json::json!([if self.model_type == "qwen2" {
                    "Qwen2ForCausalLM"
                } else {
                    "LlamaForCausalLM"
                }]),
            );
            object.insert("hidden_act".into(), serde_json::json!("silu"));
        }
        let text = serde_json::to_string_pretty(&value)
            .map_err(|err| ModelError::Config(err.to_string()))?;
        std::fs::write(path, text)
            .map_err(|err| ModelError::io(format!("writing {}", path.display()), err))
    }

    /// Parameter count.
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let kv = self.kv_heads() * self.head_dim();
        let bias = if self.qkv_bias() { h + 2 * kv } else { 0 };
        let layer = h * h * 2 + h * kv * 2 + bias + 3 * h * self.intermediate_size + 2 * h;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + h + layer * self.num_hidden_layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_qwen2_config_with_defaults() {
        let text = r#"{"model_type":"qwen2","vocab_size":100,"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"tie_word_embeddings":true}"#;
        let config: ModelConfig = serde_json::from_str(text).expect("parse");
        config.validate().expect("valid");
        assert!(config.qkv_bias());
        assert_eq!(config.head_dim(), 16);
        assert_eq!(config.rope_theta, 10_000.0);
    }

    #[test]
    fn rejects_inconsistent_heads() {
        let mut config = ModelConfig::tiny(10, 64, 1, 4, 3);
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("num_key_value_heads"));
        config.num_key_value_heads = Some(2);
        config.hidden_size = 66;
        assert!(config.validate().is_err());
    }
}
