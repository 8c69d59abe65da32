//! Whether `tokenizer.json` alone gives transformers' ids. transformers 5 uses the file's
//! pipeline for `PreTrainedTokenizerFast` (and no class), but for model-specific classes it
//! rebuilds the normalizer, pre-tokenizer and decoder from its own code and keeps only the
//! vocabulary, merges and post-processor. For `Qwen2Tokenizer` the file must hold exactly the
//! pipeline transformers builds; other such classes are refused (strict) or logged.

use crate::config::Strictness;
use crate::error::{ModelError, Result};
use serde_json::{json, Value};

/// The split pattern of Qwen2's pre-tokenizer (the one every Qwen2/2.5/3 `tokenizer.json`
/// carries, and the one transformers' `Qwen2Tokenizer` builds).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Classes whose pipeline transformers takes from `tokenizer.json`.
const FILE_PIPELINE: &[&str] = &["PreTrainedTokenizerFast", "TokenizersBackend"];

/// The tokenizer class transformers' AutoTokenizer would load for this directory, in the cases
/// these families meet: Qwen2 always gets `Qwen2Tokenizer` (transformers overrides what its hub
/// configs declare); a declared `LlamaTokenizer` over a byte-level file gets the file's pipeline;
/// otherwise the declared class, or with none the model type's (`Qwen2Tokenizer` for Qwen3).
/// None means the file's pipeline (no class and no model type: `PreTrainedTokenizerFast` use).
pub(super) fn resolve_class(
    declared: Option<&str>,
    model_type: Option<&str>,
    tokenizer_json: &Value,
) -> Option<String> {
    if model_type == Some("qwen2") {
        return Some("Qwen2Tokenizer".into());
    }
    let llama =
        declared.is_some_and(|name| name.strip_suffix("Fast").unwrap_or(name) == "LlamaTokenizer");
    match declared {
        Some(_) if llama && has_byte_level(tokenizer_json) => None,
        Some(name) => Some(name.to_string()),
        None => match model_type {
            Some("qwen3") => Some("Qwen2Tokenizer".into()),
            Some(other) => Some(format!("(the default tokenizer of model_type \"{other}\")")),
            None => None,
        },
    }
}

/// Whether the pre-tokenizer or the decoder is (or holds) a ByteLevel step.
fn has_byte_level(tokenizer_json: &Value) -> bool {
    fn holds(value: &Value) -> bool {
        match value {
            Value::Object(map) => {
                map.get("type").is_some_and(|t| t == "ByteLevel") || map.values().any(holds)
            }
            Value::Array(items) => items.iter().any(holds),
            _ => false,
        }
    }
    holds(&tokenizer_json["pre_tokenizer"]) || holds(&tokenizer_json["decoder"])
}

/// Checks that `tokenizer_json` tokenizes as transformers' `class` (from `resolve_class`) would.
pub(super) fn check(
    class: Option<&str>,
    tokenizer_json: &Value,
    tokenizer_config: &Value,
    strictness: Strictness,
) -> Result<()> {
    let Some(class) = class else { return Ok(()) };
    if FILE_PIPELINE.contains(&class) {
        return Ok(());
    }
    let why = match class {
        "Qwen2Tokenizer" | "Qwen2TokenizerFast" => {
            match qwen2_difference(tokenizer_json, tokenizer_config) {
                None => return Ok(()),
                Some(difference) => format!(
                "tokenizer class {class}: transformers rebuilds this tokenizer's pipeline, and \
                 tokenizer.json differs from it: {difference}"
            ),
            }
        }
        other => format!(
            "tokenizer class {other}: transformers builds this tokenizer's normalizer, \
             pre-tokenizer and decoder from its own code, not from tokenizer.json, so the ids \
             could differ; load with Strictness::WarnUnknown to use tokenizer.json as it is"
        ),
    };
    match strictness {
        Strictness::Strict => Err(ModelError::Tokenizer(why)),
        Strictness::WarnUnknown => {
            tracing::warn!("{why}");
            Ok(())
        }
    }
}

/// What in the file differs from the pipeline `Qwen2Tokenizer` builds, if anything.
fn qwen2_difference(tokenizer_json: &Value, tokenizer_config: &Value) -> Option<String> {
    let prefix = tokenizer_config
        .get("add_prefix_space")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let pre = &tokenizer_json["pre_tokenizer"];
    let steps = pre["pretokenizers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let split_ok = pre["type"] == "Sequence"
        && steps.len() == 2
        && steps[0]["type"] == "Split"
        && steps[0]["pattern"] == json!({ "Regex": QWEN2_SPLIT })
        && steps[0]["behavior"] == "Isolated"
        && steps[0]["invert"] == false
        && steps[1]["type"] == "ByteLevel"
        && steps[1]["add_prefix_space"] == prefix
        && steps[1]["use_regex"] == false;
    if !split_ok {
        return Some(format!("pre_tokenizer {pre}"));
    }
    let normalizer = &tokenizer_json["normalizer"];
    if normalizer["type"] != "NFC" {
        return Some(format!("normalizer {normalizer}"));
    }
    let decoder = &tokenizer_json["decoder"];
    if decoder["type"] != "ByteLevel" {
        return Some(format!("decoder {decoder}"));
    }
    let model = &tokenizer_json["model"];
    let empty = |v: &Value| v.is_null() || *v == "";
    let model_ok = model["type"] == "BPE"
        && model["dropout"].is_null()
        && model["unk_token"].is_null()
        && model["fuse_unk"] != true
        && empty(&model["continuing_subword_prefix"])
        && empty(&model["end_of_word_suffix"])
        && model["byte_fallback"] != true
        && model["ignore_merges"] != true;
    if !model_ok {
        let mut settings = model.clone();
        if let Some(map) = settings.as_object_mut() {
            map.remove("vocab");
            map.remove("merges");
        }
        return Some(format!("model {settings}"));
    }
    // With `added_tokens_decoder` in tokenizer_config.json, transformers adds those tokens and
    // not the file's `added_tokens`: the two must be the same.
    if let Some(decoder) = tokenizer_config
        .get("added_tokens_decoder")
        .and_then(Value::as_object)
    {
        let fields = [
            "content",
            "lstrip",
            "rstrip",
            "single_word",
            "normalized",
            "special",
        ];
        let from_file: Vec<(String, Vec<&Value>)> = tokenizer_json["added_tokens"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|token| {
                let id = token["id"].to_string();
                (id, fields.iter().map(|f| &token[*f]).collect())
            })
            .collect();
        let mut from_config: Vec<(String, Vec<&Value>)> = decoder
            .iter()
            .map(|(id, token)| (id.clone(), fields.iter().map(|f| &token[*f]).collect()))
            .collect();
        let mut from_file = from_file;
        from_file.sort_by(|a, b| a.0.cmp(&b.0));
        from_config.sort_by(|a, b| a.0.cmp(&b.0));
        if from_file != from_config {
            return Some(
                "added_tokens of tokenizer.json differ from added_tokens_decoder of \
                 tokenizer_config.json"
                    .to_string(),
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen_file() -> Value {
        json!({
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
            ]},
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
            "model": {"type": "BPE", "dropout": null, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "byte_fallback": false, "ignore_merges": false,
                      "vocab": {}, "merges": []}
        })
    }

    #[test]
    fn qwen2_files_are_checked_and_other_classes_refused() {
        let config = json!({});
        assert!(check(
            Some("Qwen2Tokenizer"),
            &qwen_file(),
            &config,
            Strictness::Strict
        )
        .is_ok());
        let mut changed = qwen_file();
        changed["normalizer"] = json!({"type": "NFKC"});
        let err = check(
            Some("Qwen2Tokenizer"),
            &changed,
            &config,
            Strictness::Strict,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("Qwen2Tokenizer") && err.contains("NFKC"),
            "{err}"
        );
        assert_eq!(
            resolve_class(Some("PreTrainedTokenizerFast"), Some("qwen2"), &qwen_file()).as_deref(),
            Some("Qwen2Tokenizer"),
            "transformers overrides the declared class of a qwen2 model"
        );
        assert_eq!(
            resolve_class(None, Some("qwen3"), &qwen_file()).as_deref(),
            Some("Qwen2Tokenizer")
        );
        assert_eq!(
            resolve_class(Some("PreTrainedTokenizerFast"), Some("qwen3"), &qwen_file()),
            Some("PreTrainedTokenizerFast".into())
        );
        assert_eq!(
            resolve_class(Some("LlamaTokenizerFast"), Some("llama"), &qwen_file()),
            None,
            "byte-level: the file"
        );
        assert_eq!(resolve_class(None, None, &qwen_file()), None);
        let with_config =
            json!({"added_tokens_decoder": {"7": {"content": "<x>", "special": true}}});
        assert!(check(
            Some("Qwen2Tokenizer"),
            &qwen_file(),
            &with_config,
            Strictness::Strict
        )
        .is_err());
        let prefixed = json!({"add_prefix_space": true});
        assert!(check(
            Some("Qwen2Tokenizer"),
            &qwen_file(),
            &prefixed,
            Strictness::Strict
        )
        .is_err());
        let err = check(
            Some("LlamaTokenizer"),
            &qwen_file(),
            &config,
            Strictness::Strict,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("LlamaTokenizer"), "{err}");
        assert!(check(
            Some("LlamaTokenizer"),
            &qwen_file(),
            &config,
            Strictness::WarnUnknown
        )
        .is_ok());
        assert!(check(
            Some("PreTrainedTokenizerFast"),
            &changed,
            &config,
            Strictness::Strict
        )
        .is_ok());
        assert!(check(None, &changed, &config, Strictness::Strict).is_ok());
    }
}
