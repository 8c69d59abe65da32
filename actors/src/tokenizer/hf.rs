//! Hugging Face tokenizers: `tokenizer.json` (byte-level BPE as Llama 3 and Qwen ship it, and
//! every other model the `tokenizers` crate reads) with the special tokens and chat template of
//! `tokenizer_config.json` (or `chat_template.jinja`, where transformers 5 saves it).

use super::chat::ChatTemplate;
use super::TextTokenizer;
use crate::config::Strictness;
use crate::error::{ModelError, Result};
use std::path::Path;

/// A Hugging Face tokenizer.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    pad: u32,
    eos: Option<u32>,
    bos: Option<u32>,
    chat: Option<ChatTemplate>,
}

/// A special token of `tokenizer_config.json`: a string, or an object with `content`.
fn token_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Object(map) => map
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

impl HfTokenizer {
    /// Loads `tokenizer.json` alone; padding and end tokens are looked up by their usual names.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ModelError::io(format!("reading {}", path.display()), err))?;
        Self::from_json_text(&text, path)
    }

    /// A tokenizer from the text of its `tokenizer.json` (`path` names it in errors).
    fn from_json_text(text: &str, path: &Path) -> Result<Self> {
        let inner: tokenizers::Tokenizer = text
            .parse()
            .map_err(|err| ModelError::Tokenizer(format!("{}: {err}", path.display())))?;
        let find = |names: &[&str]| names.iter().find_map(|name| inner.token_to_id(name));
        let eos = find(&["</s>", "<|endoftext|>", "<|im_end|>", "<eos>", "<|eot_id|>"]);
        let bos = find(&["<s>", "<|begin_of_text|>", "<bos>"]);
        let pad = find(&["<pad>", "<|pad|>", "[PAD]"]).or(eos).unwrap_or(0);
        Ok(HfTokenizer {
            inner,
            pad,
            eos,
            bos,
            chat: None,
        })
    }

    /// Loads a tokenizer directory: `tokenizer.json`, and from `tokenizer_config.json` the bos,
    /// eos and pad tokens and the chat template (a string, or a list of named templates of which
    /// `default` is taken), or `chat_template.jinja` when present.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_dir_with(dir, Strictness::Strict)
    }

    /// As `from_dir`; a `tokenizer_class` whose pipeline transformers rebuilds from its own code
    /// (so `tokenizer.json` alone may give other ids) is refused when `Strict`, logged otherwise.
    pub fn from_dir_with(dir: &Path, strictness: Strictness) -> Result<Self> {
        let json_path = dir.join("tokenizer.json");
        // Read once: the tokenizers crate and the class check both need the file.
        let text = std::fs::read_to_string(&json_path)
            .map_err(|err| ModelError::io(format!("reading {}", json_path.display()), err))?;
        let mut tokenizer = Self::from_json_text(&text, &json_path)?;
        let file: serde_json::Value = serde_json::from_str(&text)
            .map_err(|err| ModelError::Tokenizer(format!("{}: {err}", json_path.display())))?;
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path)
                .map_err(|err| ModelError::io(format!("reading {}", config_path.display()), err))?;
            serde_json::from_str(&text)
                .map_err(|err| ModelError::Tokenizer(format!("{}: {err}", config_path.display())))?
        } else {
            serde_json::Value::Null
        };
        // The model's config.json beside the tokenizer decides the class too (AutoTokenizer).
        let model_type = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|c| {
                c.get("model_type")
                    .and_then(|t| t.as_str())
                    .map(str::to_string)
            });
        let declared = config.get("tokenizer_class").and_then(|c| c.as_str());
        let class = super::class_check::resolve_class(declared, model_type.as_deref(), &file);
        super::class_check::check(class.as_deref(), &file, &config, strictness)?;
        // transformers pads and truncates only when a call asks; so does this.
        tokenizer.inner.with_padding(None);
        tokenizer
            .inner
            .with_truncation(None)
            .map_err(|err| ModelError::Tokenizer(format!("{}: {err}", json_path.display())))?;
        if config.get("split_special_tokens").and_then(|v| v.as_bool()) == Some(true) {
            tokenizer.inner.set_encode_special_tokens(true);
        }
        let special = |key: &str| -> Result<Option<(String, u32)>> {
            let Some(text) = config.get(key).and_then(token_text) else {
                return Ok(None);
            };
            let id = tokenizer.inner.token_to_id(&text).ok_or_else(|| {
                ModelError::Tokenizer(format!(
                    "tokenizer_config.json: {key} {text:?} is not in the vocabulary"
                ))
            })?;
            Ok(Some((text, id)))
        };
        let bos = special("bos_token")?;
        let eos = special("eos_token")?;
        let pad = special("pad_token")?;
        // Every `*_token` of tokenizer_config.json (and a dict of extra special tokens) is a
        // template variable in transformers.
        let mut named = std::collections::BTreeMap::new();
        if let Some(map) = config.as_object() {
            for (key, value) in map {
                if key.ends_with("_token") {
                    if let Some(text) = token_text(value) {
                        named.insert(key.clone(), text);
                    }
                }
            }
            if let Some(extra) = map.get("extra_special_tokens").and_then(|v| v.as_object()) {
                for (key, value) in extra {
                    if let Some(text) = token_text(value) {
                        named.insert(key.clone(), text);
                    }
                }
            }
        }
        if let Some((_, id)) = &bos {
            tokenizer.bos = Some(*id);
        }
        if let Some((_, id)) = &eos {
            tokenizer.eos = Some(*id);
            if pad.is_none() {
                tokenizer.pad = *id;
            }
        }
        if let Some((_, id)) = &pad {
            tokenizer.pad = *id;
        }
        let jinja_file = dir.join("chat_template.jinja");
        let source =
            if jinja_file.is_file() {
                Some(std::fs::read_to_string(&jinja_file).map_err(|err| {
                    ModelError::io(format!("reading {}", jinja_file.display()), err)
                })?)
            } else {
                match config.get("chat_template") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(text)) => Some(text.clone()),
                    Some(serde_json::Value::Array(named)) => named
                        .iter()
                        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                        .and_then(|t| t.get("template"))
                        .and_then(|t| t.as_str())
                        .map(str::to_string),
                    Some(other) => {
                        return Err(ModelError::Tokenizer(format!(
                    "tokenizer_config.json: chat_template {other} is neither a string nor a list"
                )))
                    }
                }
            };
        if let Some(source) = source {
            tokenizer.chat = Some(ChatTemplate::new(source, named)?);
        }
        Ok(tokenizer)
    }

    /// Token ids of `text`; with `add_special_tokens`, as the tokenizer's post-processor adds
    /// them (a bos token for Llama 3).
    pub fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|err| ModelError::Tokenizer(err.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens kept or skipped.
    pub fn decode_with(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|err| ModelError::Tokenizer(err.to_string()))
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The chat template, if the tokenizer has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// The prompt text of a conversation, as the model was trained to see it.
    pub fn apply_chat_template(
        &self,
        messages: &[super::ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat.as_ref().ok_or_else(|| {
            ModelError::Tokenizer("this tokenizer has no chat_template".to_string())
        })?;
        template.render(messages, None, add_generation_prompt)
    }
}

impl TextTokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, false)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_with(ids, true)
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

    fn bos_id(&self) -> Option<u32> {
        self.bos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_json_and_config_load() {
        let dir = std::env::temp_dir().join(format!("troupe-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"<pad>":0,"</s>":1,"hello":2,"world":3,"<unk>":4},"unk_token":"<unk>"}}"#;
        std::fs::write(dir.join("tokenizer.json"), json).unwrap();
        let tokenizer = HfTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        assert_eq!(tokenizer.encode("hello world").unwrap(), vec![2, 3]);
        assert_eq!(tokenizer.pad_id(), 0);
        assert_eq!(tokenizer.eos_id(), Some(1));
        assert_eq!(tokenizer.vocab_size(), 5);
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"eos_token":{"content":"world"},"pad_token":"<unk>",
               "chat_template":"{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"}"#,
        )
        .unwrap();
        let tokenizer = HfTokenizer::from_dir(&dir).unwrap();
        assert_eq!(tokenizer.eos_id(), Some(3));
        assert_eq!(tokenizer.pad_id(), 4);
        let text = tokenizer
            .apply_chat_template(&[super::super::ChatMessage::new("user", "hello")], false)
            .unwrap();
        assert_eq!(text, "helloworld");
        std::fs::write(dir.join("tokenizer_config.json"), r#"{"eos_token":"nope"}"#).unwrap();
        let err = HfTokenizer::from_dir(&dir).err().unwrap().to_string();
        assert!(err.contains("eos_token") && err.contains("nope"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
