//! Reading a `config.json` strictly: every field that changes the computation of the supported
//! families is read, with each family's transformers default when it is absent, in both layouts
//! real checkpoints use (transformers 4: top-level `rope_theta` and `rope_scaling`; transformers
//! 5: `rope_parameters`). Fields that change nothing (metadata, generation defaults) are
//! accepted; any other field is refused by name and value.

use super::rope::RopeScaling;
use super::{Activation, Family, LayerAttention, ModelConfig};
use serde_json::{Map, Value};

/// What to do with a config field that is not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    /// Refuse it, naming the field and its value (the default).
    #[default]
    Strict,
    /// Log a warning and go on. Values that cannot be computed are refused all the same.
    WarnUnknown,
}

/// Fields that do not change the model's outputs: metadata, loading hints and generation
/// defaults (generation settings are the caller's).
const NO_EFFECT: &[&str] = &[
    "architectures",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "_name_or_path",
    "name_or_path",
    "_commit_hash",
    "use_cache",
    "initializer_range",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "return_dict",
    "return_dict_in_generate",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "id2label",
    "label2id",
    "problem_type",
    "finetuning_task",
    "tokenizer_class",
    "prefix",
    "task_specific_params",
    "is_encoder_decoder",
    "is_decoder",
    "add_cross_attention",
    "cross_attention_hidden_size",
    "tie_encoder_decoder",
    "chunk_size_feed_forward",
    "pruned_heads",
    "decoder_start_token_id",
    "sep_token_id",
    "attn_implementation",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "keys_to_ignore_at_inference",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
];

/// Fields every supported family reads.
const COMMON: &[&str] = &[
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "partial_rotary_factor",
    "original_max_position_embeddings",
    "tie_word_embeddings",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
];

/// Fields a family reads besides the common ones.
fn family_fields(family: Family) -> &'static [&'static str] {
    match family {
        // `pretraining_tp` only splits the same products into slices.
        Family::Llama => &["attention_bias", "mlp_bias", "pretraining_tp"],
        // Qwen2's attention always has q/k/v biases; transformers ignores `attention_bias` there.
        Family::Qwen2 => &[
            "attention_bias",
            "use_sliding_window",
            "sliding_window",
            "max_window_layers",
            "layer_types",
        ],
        Family::Qwen3 => &[
            "attention_bias",
            "use_sliding_window",
            "sliding_window",
            "max_window_layers",
            "layer_types",
        ],
        Family::Mistral => &["sliding_window"],
    }
}

type Parsed<T> = std::result::Result<T, String>;

struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// A field's value, with null read as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    /// A field read with `read` (null is absent); `kind` names what it must be in the error.
    fn typed<T>(
        &self,
        key: &str,
        kind: &str,
        read: impl Fn(&Value) -> Option<T>,
    ) -> Parsed<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => read(value)
                .map(Some)
                .ok_or_else(|| format!("`{key}` {value} is not {kind}")),
        }
    }

    fn usize(&self, key: &str) -> Parsed<Option<usize>> {
        self.typed(key, "a non-negative integer", |v| {
            v.as_u64().map(|n| n as usize)
        })
    }

    fn required(&self, key: &str) -> Parsed<usize> {
        self.usize(key)?
            .ok_or_else(|| format!("`{key}` is missing"))
    }

    fn f64(&self, key: &str) -> Parsed<Option<f64>> {
        self.typed(key, "a number", Value::as_f64)
    }

    fn bool(&self, key: &str) -> Parsed<Option<bool>> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    /// A token id given as an integer or a list of integers.
    fn token_ids(&self, key: &str) -> Parsed<Option<Vec<u32>>> {
        let one = |value: &Value| -> Parsed<u32> {
            value
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("`{key}` holds {value}, not a token id"))
        };
        // Absent takes the family default; null means none.
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(Vec::new())),
            Some(Value::Array(items)) => items.iter().map(one).collect::<Parsed<_>>().map(Some),
            Some(value) => one(value).map(|id| Some(vec![id])),
        }
    }
}

/// Whether transformers accepts an explicit null for `key` (and what null then means is handled
/// where the field is read); any other null it refuses, and so does this.
fn nullable(family: Family, key: &str, map: &Map<String, Value>) -> bool {
    if NO_EFFECT.contains(&key) {
        return true;
    }
    // A null top-level rope_theta is fine when the rope dictionary has its own.
    let dict_theta = ["rope_parameters", "rope_scaling"].iter().any(|dict| {
        map.get(*dict)
            .and_then(|d| d.get("rope_theta"))
            .is_some_and(|theta| !theta.is_null())
    });
    match key {
        "rope_theta" => dict_theta,
        // Read only by llama3 and yarn, where a null is refused (read_rope).
        "original_max_position_embeddings" => true,
        "attention_bias" => family == Family::Qwen2,
        "bos_token_id"
        | "eos_token_id"
        | "pad_token_id"
        | "rope_scaling"
        | "rope_parameters"
        | "partial_rotary_factor"
        | "sliding_window"
        | "layer_types"
        | "quantization_config"
        | "auto_map"
        | "pretraining_tp" => true,
        "num_key_value_heads" => family != Family::Mistral,
        "head_dim" => matches!(family, Family::Llama | Family::Mistral),
        "attention_dropout" => family == Family::Llama,
        _ => false,
    }
}

/// Reads a parsed `config.json`.
pub(super) fn from_json(value: &Value, strictness: Strictness) -> Parsed<ModelConfig> {
    let map = value
        .as_object()
        .ok_or_else(|| "config.json is not a JSON object".to_string())?;
    let fields = Fields { map };
    let model_type = match fields.get("model_type") {
        Some(Value::String(name)) => name.as_str(),
        Some(other) => return Err(format!("`model_type` {other} is not a string")),
        None => return Err("`model_type` is missing".to_string()),
    };
    let family = Family::from_model_type(model_type).ok_or_else(|| {
        format!("`model_type` \"{model_type}\" is not supported (llama, qwen2, qwen3, mistral)")
    })?;
    check_fields(map, family, strictness)?;
    // Unknown fields were dealt with above; the nulls of fields this family reads are checked.
    let read = |key: &str| COMMON.contains(&key) || family_fields(family).contains(&key);
    if let Some((key, _)) = map
        .iter()
        .find(|(key, value)| value.is_null() && read(key) && !nullable(family, key, map))
    {
        return Err(format!(
            "`{key}` is null; transformers refuses that for model_type \"{}\" too",
            family.model_type()
        ));
    }

    let hidden_size = fields.required("hidden_size")?;
    let num_attention_heads = fields.required("num_attention_heads")?;
    if num_attention_heads == 0 {
        return Err("`num_attention_heads` 0 must be positive".to_string());
    }
    let num_hidden_layers = fields.required("num_hidden_layers")?;
    if family == Family::Llama && !hidden_size.is_multiple_of(num_attention_heads) {
        return Err(format!(
            "`hidden_size` {hidden_size} is not a multiple of `num_attention_heads` \
             {num_attention_heads} (transformers refuses this for Llama)"
        ));
    }
    // An explicit null and an absent field differ in transformers: null is replaced after the
    // class default has been applied (by as many key/value heads as query heads, by
    // hidden / heads), absent takes the class default (32 for Qwen, 8 for Mistral; Qwen3's
    // head_dim is 128).
    let num_key_value_heads = match map.get("num_key_value_heads") {
        Some(Value::Null) => num_attention_heads,
        Some(_) => fields.required("num_key_value_heads")?,
        None => match family {
            Family::Llama => num_attention_heads,
            Family::Qwen2 | Family::Qwen3 => 32,
            Family::Mistral => 8,
        },
    };
    let head_dim = match map.get("head_dim") {
        Some(Value::Null) => hidden_size / num_attention_heads,
        Some(_) => fields.required("head_dim")?,
        None => match family {
            Family::Qwen3 => 128,
            _ => hidden_size / num_attention_heads,
        },
    };
    let hidden_act = match fields.get("hidden_act") {
        None => Activation::Silu,
        Some(Value::String(name)) => Activation::from_name(name).ok_or_else(|| {
            format!(
                "`hidden_act` \"{name}\" is not supported (silu, swish, gelu, gelu_python, \
                 gelu_new, gelu_pytorch_tanh, gelu_python_tanh, gelu_fast, gelu_accurate, \
                 quick_gelu, relu)"
            )
        })?,
        Some(other) => return Err(format!("`hidden_act` {other} is not a string")),
    };
    let max_position_embeddings =
        fields
            .usize("max_position_embeddings")?
            .unwrap_or(match family {
                Family::Llama => 2048,
                Family::Qwen2 | Family::Qwen3 => 32_768,
                Family::Mistral => 131_072,
            });
    if let Some(factor) = fields.f64("partial_rotary_factor")? {
        if factor != 1.0 {
            return Err(format!(
                "`partial_rotary_factor` {factor}: these families rotate the whole head"
            ));
        }
    }
    let rope = read_rope(&fields, max_position_embeddings)?;
    let attention_dropout = fields.f64("attention_dropout")?.unwrap_or(0.0);
    if attention_dropout != 0.0 {
        let why = format!(
            "`attention_dropout` {attention_dropout}: this decoder applies no dropout, so \
             training would differ from transformers"
        );
        match strictness {
            Strictness::Strict => return Err(why),
            Strictness::WarnUnknown => tracing::warn!("{why}"),
        }
    }
    let (sliding_window, layer_types) = read_attention_kinds(&fields, family, num_hidden_layers)?;
    let attention_bias = match family {
        Family::Llama | Family::Qwen3 => fields.bool("attention_bias")?.unwrap_or(false),
        Family::Qwen2 | Family::Mistral => false,
    };
    let (default_bos, default_eos) = match family {
        Family::Llama | Family::Mistral => (vec![1], vec![2]),
        Family::Qwen2 | Family::Qwen3 => (Vec::new(), Vec::new()),
    };
    let config = ModelConfig {
        family,
        vocab_size: fields.required("vocab_size")?,
        hidden_size,
        intermediate_size: fields.required("intermediate_size")?,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        hidden_act,
        rms_norm_eps: fields.f64("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: rope.theta,
        rope_scaling: rope.scaling,
        max_position_embeddings,
        tie_word_embeddings: fields.bool("tie_word_embeddings")?.unwrap_or(false),
        attention_bias,
        mlp_bias: family == Family::Llama && fields.bool("mlp_bias")?.unwrap_or(false),
        qk_norm: family == Family::Qwen3,
        sliding_window,
        layer_types,
        bos_token_id: fields.token_ids("bos_token_id")?.unwrap_or(default_bos),
        eos_token_id: fields.token_ids("eos_token_id")?.unwrap_or(default_eos),
        pad_token_id: fields
            .token_ids("pad_token_id")?
            .and_then(|ids| ids.first().copied()),
    };
    config.validate().map_err(|err| match err {
        crate::ModelError::Config(why) => why,
        other => other.to_string(),
    })?;
    Ok(config)
}

/// Refuses (or warns about) fields this family does not read and that are not known to change
/// nothing; refuses outright what names a different computation.
fn check_fields(map: &Map<String, Value>, family: Family, strictness: Strictness) -> Parsed<()> {
    if let Some(value) = map.get("quantization_config").filter(|v| !v.is_null()) {
        return Err(format!(
            "`quantization_config` {value}: quantized checkpoints are not supported"
        ));
    }
    if let Some(value) = map.get("auto_map").filter(|v| !v.is_null()) {
        return Err(format!(
            "`auto_map` {value}: the checkpoint needs its own modeling code"
        ));
    }
    if let Some(Value::Array(names)) = map.get("architectures") {
        if let Some(bad) = names
            .iter()
            .find(|name| !name.as_str().is_some_and(|n| n.ends_with("ForCausalLM")))
        {
            return Err(format!(
                "`architectures` holds {bad}: only causal language models load here"
            ));
        }
    }
    for (key, value) in map {
        let known = NO_EFFECT.contains(&key.as_str())
            || COMMON.contains(&key.as_str())
            || family_fields(family).contains(&key.as_str());
        if known {
            continue;
        }
        let why = format!(
            "unknown field `{key}` = {value} for model_type \"{}\": it may change the \
             computation, and this loader does not read it",
            family.model_type()
        );
        match strictness {
            Strictness::Strict => return Err(why),
            Strictness::WarnUnknown => tracing::warn!("{why}"),
        }
    }
    Ok(())
}

/// RoPE from either layout. transformers 5 prefers `rope_scaling` when both are present; here
/// two that disagree are refused.
fn read_rope(fields: &Fields, max_positions: usize) -> Parsed<super::rope::ParsedRope> {
    let top_theta = fields.f64("rope_theta")?;
    let original_max = fields.f64("original_max_position_embeddings")?;
    let original_max_null = fields
        .map
        .get("original_max_position_embeddings")
        .is_some_and(Value::is_null);
    let dict = |key: &str| -> Parsed<Option<&Map<String, Value>>> {
        match fields.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(other) => Err(format!("`{key}` {other} is not an object")),
        }
    };
    let empty = Map::new();
    let scaling = dict("rope_scaling")?;
    let parameters = dict("rope_parameters")?;
    for (key, map) in [("rope_scaling", scaling), ("rope_parameters", parameters)] {
        if let Some(nested) = map.and_then(|m| {
            m.iter()
                .find(|(k, _)| k.as_str() == "full_attention" || k.as_str() == "sliding_attention")
        }) {
            return Err(format!(
                "`{key}.{}` {}: per-layer-type RoPE is not supported",
                nested.0, nested.1
            ));
        }
    }
    let parse = |key: &str, map: &Map<String, Value>| {
        RopeScaling::parse(key, map, top_theta, original_max, max_positions)
    };
    let parsed = match (scaling, parameters) {
        (Some(scaling), Some(parameters)) => {
            let a = parse("rope_scaling", scaling)?;
            let b = parse("rope_parameters", parameters)?;
            if a.scaling != b.scaling || a.theta != b.theta {
                return Err(format!(
                    "`rope_scaling` {} and `rope_parameters` {} disagree",
                    Value::Object(scaling.clone()),
                    Value::Object(parameters.clone())
                ));
            }
            Ok(a)
        }
        (Some(map), None) => parse("rope_scaling", map),
        (None, Some(map)) => parse("rope_parameters", map),
        (None, None) => parse("rope_parameters", &empty),
    }?;
    // transformers copies a top-level original_max_position_embeddings into the dictionary of
    // these types, null included, and then fails on it.
    let uses_original = matches!(
        parsed.scaling,
        RopeScaling::Llama3 { .. } | RopeScaling::Yarn { .. }
    );
    if original_max_null && uses_original {
        return Err(format!(
            "`original_max_position_embeddings` is null with rope_type \"{}\"",
            parsed.scaling.rope_type()
        ));
    }
    Ok(parsed)
}

/// Which layers slide, and over what window.
fn read_attention_kinds(
    fields: &Fields,
    family: Family,
    layers: usize,
) -> Parsed<(Option<usize>, Vec<LayerAttention>)> {
    match family {
        Family::Llama => Ok((None, Vec::new())),
        Family::Mistral => {
            // Mistral slides in every layer, 4096 unless the config says otherwise (or null).
            let window = match fields.map.get("sliding_window") {
                None => Some(4096),
                Some(Value::Null) => None,
                Some(_) => fields.usize("sliding_window")?,
            };
            let kinds = match window {
                Some(_) => vec![LayerAttention::Sliding; layers],
                None => Vec::new(),
            };
            Ok((window, kinds))
        }
        Family::Qwen2 | Family::Qwen3 => {
            let enabled = fields.bool("use_sliding_window")?.unwrap_or(false);
            let window = if enabled {
                match fields.map.get("sliding_window") {
                    None => Some(4096),
                    Some(Value::Null) => None,
                    Some(_) => fields.usize("sliding_window")?,
                }
            } else {
                None
            };
            let kinds = match fields.get("layer_types") {
                Some(Value::Array(names)) => names
                    .iter()
                    .map(|name| match name.as_str() {
                        Some("full_attention") => Ok(LayerAttention::Full),
                        Some("sliding_attention") => Ok(LayerAttention::Sliding),
                        _ => Err(format!(
                            "`layer_types` holds {name}: only \"full_attention\" and \
                             \"sliding_attention\" are supported"
                        )),
                    })
                    .collect::<Parsed<Vec<_>>>()?,
                Some(other) => return Err(format!("`layer_types` {other} is not a list")),
                None => {
                    let first_sliding = fields.usize("max_window_layers")?.unwrap_or(28);
                    (0..layers)
                        .map(|layer| {
                            if window.is_some() && layer >= first_sliding {
                                LayerAttention::Sliding
                            } else {
                                LayerAttention::Full
                            }
                        })
                        .collect()
                }
            };
            if window.is_none() && kinds.contains(&LayerAttention::Sliding) {
                return Err(format!(
                    "`layer_types` asks for sliding attention but there is no window \
                     (use_sliding_window {enabled}, sliding_window {})",
                    fields.map.get("sliding_window").unwrap_or(&Value::Null)
                ));
            }
            Ok((window, kinds))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Parsed<ModelConfig> {
        from_json(&serde_json::from_str(text).unwrap(), Strictness::Strict)
    }

    const BASE: &str = r#""vocab_size":100,"hidden_size":64,"intermediate_size":128,
        "num_hidden_layers":2,"num_attention_heads":4"#;

    #[test]
    fn both_rope_layouts_give_the_same_config() {
        let v4 = parse(&format!(
            r#"{{"model_type":"llama",{BASE},"rope_theta":500000.0,
            "rope_scaling":{{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
            "high_freq_factor":4.0,"original_max_position_embeddings":64}}}}"#
        ))
        .unwrap();
        let v5 = parse(&format!(
            r#"{{"model_type":"llama",{BASE},"rope_parameters":{{"rope_type":"llama3",
            "rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
            "original_max_position_embeddings":64}}}}"#
        ))
        .unwrap();
        assert_eq!(v4, v5);
        assert_eq!(v5.rope_theta, 500_000.0);
        assert_eq!(v5.rope_scaling.rope_type(), "llama3");
    }

    #[test]
    fn lists_of_token_ids_and_explicit_head_dim() {
        let config = parse(&format!(
            r#"{{"model_type":"llama",{BASE},"eos_token_id":[7,8,9],"bos_token_id":6,
            "head_dim":24}}"#
        ))
        .unwrap();
        assert_eq!(config.eos_token_id, vec![7, 8, 9]);
        assert_eq!(config.bos_token_id, vec![6]);
        assert_eq!(config.head_dim, 24);
        // Absent takes the class default, null the derived value.
        let qwen = |extra: &str| {
            parse(&format!(r#"{{"model_type":"qwen3",{BASE}{extra}}}"#))
                .map(|c| (c.num_key_value_heads, c.head_dim))
        };
        let err = qwen("").unwrap_err();
        assert!(
            err.contains("num_key_value_heads"),
            "32 kv heads do not divide 4: {err}"
        );
        assert_eq!(qwen(r#","num_key_value_heads":null"#).unwrap(), (4, 128));
        let err = qwen(r#","num_key_value_heads":2,"head_dim":null"#).unwrap_err();
        assert!(err.contains("head_dim") && err.contains("null"), "{err}");
        let llama = parse(&format!(
            r#"{{"model_type":"llama",{BASE},"head_dim":null,"num_key_value_heads":null,
            "eos_token_id":null}}"#
        ))
        .unwrap();
        assert_eq!((llama.head_dim, llama.num_key_value_heads), (16, 4));
        assert!(
            llama.eos_token_id.is_empty(),
            "null means no eos, not the default"
        );
        let err = parse(&format!(
            r#"{{"model_type":"llama",{BASE},"rms_norm_eps":null}}"#
        ))
        .unwrap_err();
        assert!(err.contains("rms_norm_eps"), "{err}");
    }

    #[test]
    fn refusals_name_the_field_and_value() {
        for (extra, words) in [
            (r#""my_new_field":3"#, vec!["my_new_field", "3"]),
            (r#""hidden_act":"relu2""#, vec!["hidden_act", "relu2"]),
            (
                r#""partial_rotary_factor":0.5"#,
                vec!["partial_rotary_factor", "0.5"],
            ),
            (
                r#""attention_dropout":0.1"#,
                vec!["attention_dropout", "0.1"],
            ),
            (
                r#""quantization_config":{"quant_method":"gptq"}"#,
                vec!["quantization_config"],
            ),
            (
                r#""rope_parameters":{"rope_type":"longrope"}"#,
                vec!["rope_type", "longrope"],
            ),
            (r#""sliding_window":4096"#, vec!["sliding_window", "4096"]),
        ] {
            let err = parse(&format!(r#"{{"model_type":"llama",{BASE},{extra}}}"#)).unwrap_err();
            for word in words {
                assert!(err.contains(word), "{extra}: {err}");
            }
        }
        let err = parse(&format!(r#"{{"model_type":"gemma",{BASE}}}"#)).unwrap_err();
        assert!(err.contains("model_type") && err.contains("gemma"), "{err}");
        let lenient = from_json(
            &serde_json::from_str(&format!(
                r#"{{"model_type":"llama",{BASE},"my_new_field":3}}"#
            ))
            .unwrap(),
            Strictness::WarnUnknown,
        );
        assert!(lenient.is_ok());
    }

    #[test]
    fn qwen_sliding_layers_follow_max_window_layers() {
        let config = parse(&format!(
            r#"{{"model_type":"qwen2",{BASE},"num_key_value_heads":4,"use_sliding_window":true,
            "sliding_window":4,"max_window_layers":1}}"#
        ))
        .unwrap();
        assert_eq!(config.sliding_window, Some(4));
        assert_eq!(
            config.layer_types,
            vec![LayerAttention::Full, LayerAttention::Sliding]
        );
        let off = parse(&format!(
            r#"{{"model_type":"qwen2",{BASE},"num_key_value_heads":4,"use_sliding_window":false,
            "sliding_window":32768,"max_window_layers":1}}"#
        ))
        .unwrap();
        assert!(off.sliding_window.is_none());
        assert!(!off.layer_types.contains(&LayerAttention::Sliding));
        let err = parse(&format!(
            r#"{{"model_type":"qwen3",{BASE},"num_key_value_heads":4,
            "layer_types":["full_attention","chunked_attention"]}}"#
        ))
        .unwrap_err();
        assert!(
            err.contains("layer_types") && err.contains("chunked_attention"),
            "{err}"
        );
    }
}
