//! Tokenizers: the small built-in character tokenizer of the synthetic tasks (digits,
//! arithmetic operators, a few specials), and Hugging Face `tokenizer.json` files through the
//! `tokenizers` crate (pure-Rust features only), behind one trait.

use crate::error::{ModelError, Result};
use std::path::Path;

/// What the roles need from a tokenizer.
pub trait TextTokenizer: Send + Sync {
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    fn decode(&self, ids: &[u32]) -> Result<String>;
    fn vocab_size(&self) -> usize;
    fn pad_id(&self) -> u32;
    fn eos_id(&self) -> Option<u32>;
}

/// Characters of the built-in tokenizer after the specials, in id order.
const CHARACTERS: &str = "0123456789+-*/=()., ?:";

/// A character-level tokenizer for synthetic arithmetic: `<pad>`=0, `<bos>`=1, `<eos>`=2, then
/// the digits, `+ - * / = ( ) . ,`, space, `?` and `:`.
#[derive(Debug, Clone, Default)]
pub struct BuiltinTokenizer;

impl BuiltinTokenizer {
    pub const PAD: u32 = 0;
    pub const BOS: u32 = 1;
    pub const EOS: u32 = 2;
    const SPECIALS: u32 = 3;

    pub fn new() -> Self {
        BuiltinTokenizer
    }
}

impl TextTokenizer for BuiltinTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .map(|c| {
                CHARACTERS
                    .chars()
                    .position(|known| known == c)
                    .map(|index| index as u32 + Self::SPECIALS)
                    .ok_or_else(|| {
                        ModelError::Tokenizer(format!(
                            "the built-in tokenizer has no token for {c:?}"
                        ))
                    })
            })
            .collect()
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        let characters: Vec<char> = CHARACTERS.chars().collect();
        let mut text = String::new();
        for id in ids {
            match *id {
                Self::PAD | Self::BOS => {}
                Self::EOS => break,
                other => {
                    let c = characters
                        .get((other - Self::SPECIALS) as usize)
                        .ok_or_else(|| {
                            ModelError::Tokenizer(format!(
                                "id {other} is outside the built-in vocabulary"
                            ))
                        })?;
                    text.push(*c);
                }
            }
        }
        Ok(text)
    }

    fn vocab_size(&self) -> usize {
        Self::SPECIALS as usize + CHARACTERS.chars().count()
    }

    fn pad_id(&self) -> u32 {
        Self::PAD
    }

    fn eos_id(&self) -> Option<u32> {
        Some(Self::EOS)
    }
}

/// A Hugging Face `tokenizer.json`.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    pad: u32,
    eos: Option<u32>,
}

impl HfTokenizer {
    /// Loads `tokenizer.json`; padding and end tokens are looked up by their usual names.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|err| ModelError::Tokenizer(format!("{}: {err}", path.display())))?;
        let find = |names: &[&str]| names.iter().find_map(|name| inner.token_to_id(name));
        let eos = find(&["</s>", "<|endoftext|>", "<|im_end|>", "<eos>", "<|eot_id|>"]);
        let pad = find(&["<pad>", "<|pad|>", "[PAD]"]).or(eos).unwrap_or(0);
        Ok(HfTokenizer { inner, pad, eos })
    }
}

impl TextTokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|err| ModelError::Tokenizer(err.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|err| ModelError::Tokenizer(err.to_string()))
    }

    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn pad_id(&self) -> u32 {
        self.pad
    }

    fn eos_id(&self) -> Option<u32> {
        self.eos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_round_trips_and_rejects_unknown_characters() {
        let tokenizer = BuiltinTokenizer::new();
        let ids = tokenizer.encode("12+345=").unwrap();
        assert_eq!(ids.len(), 7);
        assert_eq!(tokenizer.decode(&ids).unwrap(), "12+345=");
        let mut with_eos = ids.clone();
        with_eos.push(BuiltinTokenizer::EOS);
        with_eos.push(ids[0]);
        assert_eq!(
            tokenizer.decode(&with_eos).unwrap(),
            "12+345=",
            "decoding stops at <eos>"
        );
        assert!(tokenizer
            .encode("12a")
            .unwrap_err()
            .to_string()
            .contains("'a'"));
        assert_eq!(tokenizer.vocab_size(), 3 + 22);
    }

    #[test]
    fn hf_tokenizer_json_loads() {
        let dir = std::env::temp_dir().join(format!("troupe-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"<pad>":0,"</s>":1,"hello":2,"world":3,"<unk>":4},"unk_token":"<unk>"}}"#;
        std::fs::write(&path, json).unwrap();
        let tokenizer = HfTokenizer::from_file(&path).unwrap();
        assert_eq!(tokenizer.encode("hello world").unwrap(), vec![2, 3]);
        assert_eq!(tokenizer.pad_id(), 0);
        assert_eq!(tokenizer.eos_id(), Some(1));
        assert_eq!(tokenizer.vocab_size(), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
