//! The built-in character tokenizer written as `tokenizer.json` and `tokenizer_config.json`, so
//! the recipes' checkpoints load in transformers and in inference engines with the same ids:
//! a word-level model over single characters (each character split off by the pre-tokenizer),
//! the three specials as added tokens, and a decoder that joins pieces without spaces.

use super::{BuiltinTokenizer, CHARACTERS};
use crate::error::{ModelError, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

const SPECIALS: [&str; 3] = ["<pad>", "<bos>", "<eos>"];

fn tokenizer_json() -> Value {
    let mut vocab = Map::new();
    for (id, token) in SPECIALS.iter().enumerate() {
        vocab.insert(token.to_string(), json!(id));
    }
    for (index, c) in CHARACTERS.chars().enumerate() {
        vocab.insert(c.to_string(), json!(index + SPECIALS.len()));
    }
    let added: Vec<Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(id, token)| {
            json!({"id": id, "content": token, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Split",
            "pattern": {"Regex": "."},
            "behavior": "Isolated",
            "invert": false
        },
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}

/// Writes the built-in tokenizer's `tokenizer.json` and `tokenizer_config.json` into `dir`.
pub fn write_builtin_tokenizer(dir: &Path, model_max_length: usize) -> Result<()> {
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIALS[BuiltinTokenizer::BOS as usize],
        "eos_token": SPECIALS[BuiltinTokenizer::EOS as usize],
        "pad_token": SPECIALS[BuiltinTokenizer::PAD as usize],
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": false,
        "add_bos_token": false,
        "add_eos_token": false
    });
    for (name, value) in [
        ("tokenizer.json", tokenizer_json()),
        ("tokenizer_config.json", config),
    ] {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(&value)
            .map_err(|err| ModelError::Tokenizer(err.to_string()))?;
        std::fs::write(&path, text)
            .map_err(|err| ModelError::io(format!("writing {}", path.display()), err))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{HfTokenizer, TextTokenizer};

    #[test]
    fn the_written_tokenizer_gives_the_builtin_ids() {
        let dir = std::env::temp_dir().join(format!("troupe-builtin-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_builtin_tokenizer(&dir, 64).unwrap();
        let written = HfTokenizer::from_dir(&dir).unwrap();
        let builtin = BuiltinTokenizer::new();
        for text in ["12+345=", "8 * (3 - 1) = 16?", "0.5, 7/2:"] {
            let ids = builtin.encode(text).unwrap();
            assert_eq!(written.encode(text).unwrap(), ids, "{text}");
            assert_eq!(written.decode(&ids).unwrap(), text);
        }
        assert_eq!(written.vocab_size(), builtin.vocab_size());
        assert_eq!(written.eos_id(), Some(BuiltinTokenizer::EOS));
        assert_eq!(written.pad_id(), BuiltinTokenizer::PAD);
        assert_eq!(written.bos_id(), Some(BuiltinTokenizer::BOS));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
