//! Writing `config.json` so that transformers reads back the same computation: the
//! transformers-5 `rope_parameters`, with the top-level `rope_theta` (and `rope_scaling` when
//! scaled) that transformers 4 reads.

use super::{Family, LayerAttention, ModelConfig};
use candle_core::DType;
use serde_json::{json, Map, Value};

fn token_ids(ids: &[u32]) -> Value {
    match ids {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    }
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        _ => "float32",
    }
}

pub(super) fn to_json(config: &ModelConfig, dtype: DType) -> Value {
    let family = config.family;
    let mut map = Map::new();
    let mut put = |key: &str, value: Value| {
        map.insert(key.to_string(), value);
    };
    put("architectures", json!([family.architecture()]));
    put("model_type", json!(family.model_type()));
    put("vocab_size", json!(config.vocab_size));
    put("hidden_size", json!(config.hidden_size));
    put("intermediate_size", json!(config.intermediate_size));
    put("num_hidden_layers", json!(config.num_hidden_layers));
    put("num_attention_heads", json!(config.num_attention_heads));
    put("num_key_value_heads", json!(config.num_key_value_heads));
    put("head_dim", json!(config.head_dim));
    put("hidden_act", json!(config.hidden_act.name()));
    put(
        "max_position_embeddings",
        json!(config.max_position_embeddings),
    );
    put("rms_norm_eps", json!(config.rms_norm_eps));
    let mut rope = config.rope_scaling.to_json();
    rope.insert("rope_theta".into(), json!(config.rope_theta));
    put("rope_parameters", Value::Object(rope.clone()));
    put("rope_theta", json!(config.rope_theta));
    if config.rope_scaling.rope_type() != "default" {
        put("rope_scaling", Value::Object(rope));
    }
    put("tie_word_embeddings", json!(config.tie_word_embeddings));
    put("attention_dropout", json!(0.0));
    match family {
        Family::Llama => {
            put("attention_bias", json!(config.attention_bias));
            put("mlp_bias", json!(config.mlp_bias));
        }
        Family::Qwen3 => put("attention_bias", json!(config.attention_bias)),
        Family::Qwen2 | Family::Mistral => {}
    }
    match family {
        Family::Llama => {}
        Family::Mistral => put("sliding_window", json!(config.sliding_window)),
        Family::Qwen2 | Family::Qwen3 => {
            put("use_sliding_window", json!(config.sliding_window.is_some()));
            put("sliding_window", json!(config.sliding_window));
            let kinds: Vec<&str> = (0..config.num_hidden_layers)
                .map(|layer| match config.layer_attention(layer) {
                    LayerAttention::Full => "full_attention",
                    LayerAttention::Sliding => "sliding_attention",
                })
                .collect();
            put("layer_types", json!(kinds));
            put("max_window_layers", json!(config.num_hidden_layers));
        }
    }
    put("bos_token_id", token_ids(&config.bos_token_id));
    put("eos_token_id", token_ids(&config.eos_token_id));
    put("pad_token_id", json!(config.pad_token_id));
    put("dtype", json!(dtype_name(dtype)));
    put("torch_dtype", json!(dtype_name(dtype)));
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;

    #[test]
    fn written_configs_read_back_equal() {
        let mut config = ModelConfig::tiny(50, 32, 3, 4, 2);
        config.rope_scaling = RopeScaling::Yarn {
            factor: Some(4.0),
            original_max_position_embeddings: 64.0,
            attention_factor: None,
            beta_fast: Some(16.0),
            beta_slow: None,
            mscale: None,
            mscale_all_dim: None,
            truncate: false,
        };
        config.eos_token_id = vec![2, 3];
        config.bos_token_id = vec![1];
        let text = to_json(&config, DType::BF16).to_string();
        assert_eq!(ModelConfig::from_json_str(&text).unwrap(), config);
        let mut qwen = config.clone();
        qwen.family = Family::Qwen3;
        qwen.qk_norm = true;
        qwen.sliding_window = Some(8);
        qwen.layer_types = vec![
            LayerAttention::Full,
            LayerAttention::Sliding,
            LayerAttention::Sliding,
        ];
        qwen.eos_token_id = vec![5];
        qwen.bos_token_id = Vec::new();
        let text = to_json(&qwen, DType::F32).to_string();
        assert_eq!(ModelConfig::from_json_str(&text).unwrap(), qwen);
    }
}
