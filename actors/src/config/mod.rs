//! The model's shape: what a Hugging Face `config.json` of the Llama, Qwen2, Qwen3 or Mistral
//! family says about the computation, read strictly (`parse`), written back in the layout
//! transformers 5 reads (`write`), with RoPE (`rope`) and activations (`activation`) as types.

mod activation;
mod parse;
pub mod rope;
mod write;

pub use activation::Activation;
pub use parse::Strictness;
pub use rope::RopeScaling;

use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The decoder families whose checkpoints load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    Llama,
    Qwen2,
    Qwen3,
    Mistral,
}

impl Family {
    /// The `model_type` of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Mistral => "mistral",
        }
    }

    /// The transformers class of the causal language model.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Qwen3 => "Qwen3ForCausalLM",
            Family::Mistral => "MistralForCausalLM",
        }
    }

    pub fn from_model_type(model_type: &str) -> Option<Self> {
        [Family::Llama, Family::Qwen2, Family::Qwen3, Family::Mistral]
            .into_iter()
            .find(|family| family.model_type() == model_type)
    }
}

/// Which keys a layer's queries see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerAttention {
    /// Every earlier key (causal).
    Full,
    /// The last `sliding_window` keys, the query's own included.
    Sliding,
}

/// A decoder's shape and every setting that changes its computation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: fewer key/value heads than query heads.
    pub num_key_value_heads: usize,
    /// Width of one attention head (may differ from hidden / heads, as in Qwen3).
    pub head_dim: usize,
    pub hidden_act: Activation,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    /// The output projection reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Biases on the attention projections: q, k, v and o for Llama and Qwen3 (`attention_bias`),
    /// q, k and v only for Qwen2 (always).
    pub attention_bias: bool,
    /// Biases on gate, up and down (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Qwen3's RMSNorm of each query and key head before RoPE.
    pub qk_norm: bool,
    /// The window of sliding-attention layers.
    pub sliding_window: Option<usize>,
    /// Per layer; empty means every layer attends fully.
    pub layer_types: Vec<LayerAttention>,
    pub bos_token_id: Vec<u32>,
    pub eos_token_id: Vec<u32>,
    pub pad_token_id: Option<u32>,
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
            family: Family::Llama,
            vocab_size,
            hidden_size: hidden,
            intermediate_size: hidden * 4,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim: hidden / heads.max(1),
            hidden_act: Activation::Silu,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::Default,
            max_position_embeddings: 512,
            tie_word_embeddings: true,
            attention_bias: false,
            mlp_bias: false,
            qk_norm: false,
            sliding_window: None,
            layer_types: Vec::new(),
            bos_token_id: Vec::new(),
            eos_token_id: Vec::new(),
            pad_token_id: None,
        }
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Whether q, k and v carry biases.
    pub fn qkv_bias(&self) -> bool {
        self.family == Family::Qwen2 || self.attention_bias
    }

    /// Whether the output projection of attention carries a bias.
    pub fn o_bias(&self) -> bool {
        self.family != Family::Qwen2 && self.attention_bias
    }

    /// How layer `index` attends: as `layer_types` says; without it, Mistral slides in every
    /// layer when it has a window, and the others attend fully.
    pub fn layer_attention(&self, index: usize) -> LayerAttention {
        match self.layer_types.get(index) {
            Some(kind) => *kind,
            None if self.family == Family::Mistral && self.sliding_window.is_some() => {
                LayerAttention::Sliding
            }
            None => LayerAttention::Full,
        }
    }

    /// Checks that the shape is consistent.
    pub fn validate(&self) -> Result<()> {
        let fail = |why: String| Err(ModelError::Config(why));
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 {
                return fail(format!("{name} 0 must be positive"));
            }
        }
        // Every tensor's element count must fit in memory arithmetic.
        let fits = |a: usize, b: usize| a.checked_mul(b).is_some_and(|n| n < (1 << 40));
        let widest = self.num_attention_heads.max(self.num_key_value_heads);
        if !fits(widest, self.head_dim)
            || !fits(self.vocab_size, self.hidden_size)
            || !fits(self.intermediate_size, self.hidden_size)
            || !fits(widest.saturating_mul(self.head_dim), self.hidden_size)
        {
            return fail(format!(
                "the shapes are too large: {}",
                self.shape_summary()
            ));
        }
        if self.sliding_window.is_some() && self.family == Family::Llama {
            return fail(format!(
                "sliding_window {:?}: model_type llama has no sliding attention",
                self.sliding_window
            ));
        }
        if self.num_attention_heads == 0 || self.head_dim == 0 {
            return fail(format!(
                "num_attention_heads {} and head_dim {} must be positive",
                self.num_attention_heads, self.head_dim
            ));
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return fail(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {kv}",
                self.num_attention_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return fail(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return fail(format!(
                "rms_norm_eps {} and rope_theta {} must be positive",
                self.rms_norm_eps, self.rope_theta
            ));
        }
        if !self.layer_types.is_empty() && self.layer_types.len() != self.num_hidden_layers {
            return fail(format!(
                "layer_types has {} entries for {} layers",
                self.layer_types.len(),
                self.num_hidden_layers
            ));
        }
        if (0..self.num_hidden_layers)
            .any(|layer| self.layer_attention(layer) == LayerAttention::Sliding)
            && self.sliding_window.is_none_or(|window| window == 0)
        {
            return fail(format!(
                "sliding-attention layers need a positive sliding_window, not {:?}",
                self.sliding_window
            ));
        }
        self.rope_scaling.validate(self)?;
        Ok(())
    }

    /// Reads a `config.json`, refusing any field that would change the output and is not
    /// understood (see `docs/models.md`).
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_file_with(path, Strictness::Strict)
    }

    /// As `from_file`; `Strictness::WarnUnknown` logs unknown fields instead of refusing them
    /// (values that cannot be computed, such as an unknown `rope_type`, are still refused).
    pub fn from_file_with(path: &Path, strictness: Strictness) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ModelError::io(format!("reading {}", path.display()), err))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|err| ModelError::Config(format!("{}: {err}", path.display())))?;
        parse::from_json(&value, strictness)
            .map_err(|err| ModelError::Config(format!("{}: {err}", path.display())))
    }

    /// Parses the JSON text of a `config.json` strictly.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|err| ModelError::Config(err.to_string()))?;
        parse::from_json(&value, Strictness::Strict).map_err(ModelError::Config)
    }

    /// The `config.json` that transformers (4.x and 5.x) reads back to the same computation.
    pub fn to_json(&self, dtype: candle_core::DType) -> serde_json::Value {
        write::to_json(self, dtype)
    }

    /// Writes `config.json` in the Hugging Face layout.
    pub fn to_file(&self, path: &Path, dtype: candle_core::DType) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.to_json(dtype))
            .map_err(|err| ModelError::Config(err.to_string()))?;
        std::fs::write(path, text)
            .map_err(|err| ModelError::io(format!("writing {}", path.display()), err))
    }

    /// Every parameter's Hugging Face name and shape, in name order: what a checkpoint of this
    /// config holds (the decoder builds exactly these).
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.kv_heads() * self.head_dim;
        let mut shapes = vec![
            (
                "model.embed_tokens.weight".to_string(),
                vec![self.vocab_size, h],
            ),
            ("model.norm.weight".to_string(), vec![h]),
        ];
        if !self.tie_word_embeddings {
            shapes.push(("lm_head.weight".to_string(), vec![self.vocab_size, h]));
        }
        for layer in 0..self.num_hidden_layers {
            let p = format!("model.layers.{layer}.");
            let mut add =
                |name: &str, shape: Vec<usize>| shapes.push((format!("{p}{name}"), shape));
            add("input_layernorm.weight", vec![h]);
            add("post_attention_layernorm.weight", vec![h]);
            for (name, out, inputs) in [("q_proj", q, h), ("k_proj", kv, h), ("v_proj", kv, h)] {
                add(&format!("self_attn.{name}.weight"), vec![out, inputs]);
                if self.qkv_bias() {
                    add(&format!("self_attn.{name}.bias"), vec![out]);
                }
            }
            add("self_attn.o_proj.weight", vec![h, q]);
            if self.o_bias() {
                add("self_attn.o_proj.bias", vec![h]);
            }
            if self.qk_norm {
                add("self_attn.q_norm.weight", vec![self.head_dim]);
                add("self_attn.k_norm.weight", vec![self.head_dim]);
            }
            for (name, out, inputs) in [("gate_proj", i, h), ("up_proj", i, h), ("down_proj", h, i)]
            {
                add(&format!("mlp.{name}.weight"), vec![out, inputs]);
                if self.mlp_bias {
                    add(&format!("mlp.{name}.bias"), vec![out]);
                }
            }
        }
        shapes.sort_by(|a, b| a.0.cmp(&b.0));
        shapes
    }

    /// Parameter count.
    pub fn num_parameters(&self) -> usize {
        self.parameter_shapes()
            .iter()
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum()
    }

    /// The config fields that decide a tensor's shape, for error messages.
    pub fn shape_summary(&self) -> String {
        format!(
            "model_type {}, vocab_size {}, hidden_size {}, intermediate_size {}, \
             num_attention_heads {}, num_key_value_heads {}, head_dim {}, tie_word_embeddings {}",
            self.family.model_type(),
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
            self.tie_word_embeddings
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_qwen2_config_with_family_defaults() {
        let text = r#"{"model_type":"qwen2","vocab_size":100,"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"tie_word_embeddings":true}"#;
        let config = ModelConfig::from_json_str(text).expect("parse");
        assert!(config.qkv_bias() && !config.o_bias());
        assert_eq!(config.head_dim(), 16);
        assert_eq!(config.rope_theta, 10_000.0);
        assert_eq!(config.max_position_embeddings, 32_768);
        assert!(config.sliding_window.is_none());
    }

    #[test]
    fn rejects_inconsistent_heads() {
        let mut config = ModelConfig::tiny(10, 64, 1, 4, 3);
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("num_key_value_heads"));
        config.num_key_value_heads = 2;
        config.head_dim = 15;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("head_dim"));
    }

    #[test]
    fn parameter_count_of_a_known_shape() {
        // Qwen2.5-0.5B: 494,032,768 parameters.
        let text = r#"{"model_type":"qwen2","vocab_size":151936,"hidden_size":896,
            "intermediate_size":4864,"num_hidden_layers":24,"num_attention_heads":14,
            "num_key_value_heads":2,"tie_word_embeddings":true,"rope_theta":1000000.0}"#;
        let config = ModelConfig::from_json_str(text).expect("parse");
        assert_eq!(config.num_parameters(), 494_032_768);
    }
}
