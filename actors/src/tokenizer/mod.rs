//! Tokenizers: the small built-in character tokenizer of the synthetic tasks (digits,
//! arithmetic operators, a few specials), also written as a `tokenizer.json` (`builtin_json`);
//! Hugging Face tokenizers (`hf`: byte-level BPE and the rest through the `tokenizers` crate,
//! special tokens from `tokenizer_config.json`); and chat templates (`chat`), behind one trait.

mod builtin_json;
mod chat;
mod class_check;
mod hf;

pub use builtin_json::write_builtin_tokenizer;
pub use chat::{ChatMessage, ChatTemplate};
pub use hf::HfTokenizer;

use crate::error::{ModelError, Result};

/// What the roles need from a tokenizer.
pub trait TextTokenizer: Send + Sync {
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    fn decode(&self, ids: &[u32]) -> Result<String>;
    fn vocab_size(&self) -> usize;
    fn pad_id(&self) -> u32;
    fn eos_id(&self) -> Option<u32>;
    /// The id put before a prompt, if the tokenizer has one.
    fn bos_id(&self) -> Option<u32> {
        None
    }
    /// Writes the tokenizer's files into a checkpoint directory (nothing by default).
    fn write_files(&self, dir: &std::path::Path, max_positions: usize) -> Result<()> {
        let _ = (dir, max_positions);
        Ok(())
    }
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

    fn bos_id(&self) -> Option<u32> {
        Some(Self::BOS)
    }

    /// `tokenizer.json` and `tokenizer_config.json`, so transformers and inference engines
    /// load the checkpoint with the same ids.
    fn write_files(&self, dir: &std::path::Path, max_positions: usize) -> Result<()> {
        write_builtin_tokenizer(dir, max_positions)
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
}
