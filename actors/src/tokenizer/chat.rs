//! Chat templates: the Jinja `chat_template` of a tokenizer rendered with minijinja the way
//! transformers' `apply_chat_template` renders it: trimmed and left-stripped blocks, loop
//! controls, Python string and dict methods (`.strip()`, `.startswith()`, `.items()`, through
//! minijinja-contrib's pycompat), `raise_exception`, `strftime_now`, a `tojson` that writes what
//! Python's `json.dumps` writes, and the special tokens as variables.

use crate::error::{ModelError, Result};
use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const NAME: &str = "chat_template";

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A compiled chat template and the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    special_tokens: BTreeMap<String, String>,
}

impl ChatTemplate {
    /// Compiles `source`; `special_tokens` maps `bos_token`, `eos_token`, ... to their text.
    pub fn new(source: String, special_tokens: BTreeMap<String, String>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function(
            "strftime_now",
            |format: String| -> std::result::Result<String, Error> { strftime_now(&format) },
        );
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source).map_err(|err| {
            ModelError::Tokenizer(format!("chat_template does not compile: {err:#}"))
        })?;
        Ok(ChatTemplate {
            env,
            special_tokens,
        })
    }

    /// Renders typed messages (and tools, as JSON values).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tools = tools.map(Value::from_serialize);
        self.render_values(
            Value::from_serialize(messages),
            tools,
            add_generation_prompt,
        )
    }

    /// Renders messages and tools given as JSON text, keeping every object's key order (what
    /// `tojson` prints follows it, as in Python).
    pub fn render_json(
        &self,
        messages_json: &str,
        tools_json: Option<&str>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let parse = |text: &str, what: &str| -> Result<Value> {
            serde_json::from_str::<Value>(text)
                .map_err(|err| ModelError::Input(format!("{what} are not valid JSON: {err}")))
        };
        let messages = parse(messages_json, "chat messages")?;
        let tools = tools_json.map(|t| parse(t, "tools")).transpose()?;
        self.render_values(messages, tools, add_generation_prompt)
    }

    fn render_values(
        &self,
        messages: Value,
        tools: Option<Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|err| ModelError::Tokenizer(err.to_string()))?;
        let mut context: BTreeMap<String, Value> = self
            .special_tokens
            .iter()
            .map(|(name, text)| (name.clone(), Value::from(text.as_str())))
            .collect();
        context.insert("messages".into(), messages);
        context.insert("add_generation_prompt".into(), add_generation_prompt.into());
        context.insert("tools".into(), tools.unwrap_or(Value::from(())));
        template
            .render(Value::from(context))
            .map_err(|err| ModelError::Tokenizer(format!("chat_template: {err:#}")))
    }
}

/// The current local time formatted by C's strftime, as transformers' `strftime_now`.
fn strftime_now(format: &str) -> std::result::Result<String, Error> {
    let bad = |why: &str| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: {why}"));
    let c_format = std::ffi::CString::new(format).map_err(|_| bad("a NUL in the format"))?;
    let mut buffer = vec![0_u8; 256];
    // SAFETY: `time` and `localtime_r` write only into the locals given; strftime writes at most
    // `buffer.len()` bytes into `buffer` and returns how many it wrote.
    let written = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut parts: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut parts).is_null() {
            return Err(bad("no local time"));
        }
        libc::strftime(
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            c_format.as_ptr(),
            &parts,
        )
    };
    buffer.truncate(written);
    String::from_utf8(buffer).map_err(|_| bad("not UTF-8"))
}

/// `tojson` as transformers defines it: Python's `json.dumps(x, ensure_ascii=False, indent=...,
/// sort_keys=...)`, whose separators are ", " and ": " (or "," and ": " with an indent).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    if ensure_ascii == Some(true) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson(ensure_ascii=True) is not supported",
        ));
    }
    let mut out = String::new();
    write_python_json(&value, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_python_json(
    value: &Value,
    indent: Option<usize>,
    sort_keys: bool,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), Error> {
    use minijinja::value::ValueKind;
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * depth));
        }
    };
    let item_separator = if indent.is_some() { "," } else { ", " };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(integer) = value.as_i64().filter(|_| value.is_integer()) {
                out.push_str(&integer.to_string());
            } else {
                let number = f64::try_from(value.clone())?;
                if number.is_finite() && number.fract() == 0.0 && number.abs() < 1e16 {
                    out.push_str(&format!("{number:.1}"));
                } else {
                    out.push_str(&number.to_string());
                }
            }
        }
        ValueKind::String => {
            let text = value.as_str().unwrap_or_default();
            out.push_str(&serde_json::to_string(text).map_err(|err| {
                Error::new(ErrorKind::InvalidOperation, format!("tojson: {err}"))
            })?);
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(item_separator);
                }
                newline(out, depth + 1);
                write_python_json(item, indent, sort_keys, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (index, key) in keys.iter().enumerate() {
                if index > 0 {
                    out.push_str(item_separator);
                }
                newline(out, depth + 1);
                let name = key.as_str().map(str::to_string).unwrap_or(key.to_string());
                out.push_str(&serde_json::to_string(&name).unwrap_or_default());
                out.push_str(": ");
                write_python_json(&value.get_item(key)?, indent, sort_keys, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson cannot write a {other:?}"),
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> ChatTemplate {
        let tokens = [("bos_token", "<s>"), ("eos_token", "</s>")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        ChatTemplate::new(source.to_string(), tokens).unwrap()
    }

    #[test]
    fn python_methods_loop_controls_and_specials() {
        let chat = template(
            "{{ bos_token }}{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}\
             [{{ m.role|upper }}] {{ m.content.strip() }}{% if m.content.startswith(' x') %}!{% endif %}\n\
             {% endfor %}{% if add_generation_prompt %}[ASSISTANT]{% endif %}",
        );
        let messages = [
            ChatMessage::new("user", " xhi "),
            ChatMessage::new("skip", "no"),
            ChatMessage::new("assistant", "yo"),
        ];
        let text = chat.render(&messages, None, true).unwrap();
        // trim_blocks: the newline after a block tag is dropped, as in transformers.
        assert_eq!(text, "<s>[USER] xhi![ASSISTANT] yo[ASSISTANT]");
    }

    #[test]
    fn tojson_writes_what_python_writes_in_document_order() {
        let chat = template("{{ tools|tojson }}|{{ tools[0]|tojson(indent=2) }}");
        let tools = r#"[{"type": "function", "function": {"name": "f", "weight": 1.0, "n": 3,
            "text": "é\n\"q\"", "list": [], "ok": true, "none": null}}]"#;
        let text = chat.render_json("[]", Some(tools), false).unwrap();
        let (flat, indented) = text.split_once('|').unwrap();
        assert_eq!(
            flat,
            r#"[{"type": "function", "function": {"name": "f", "weight": 1.0, "n": 3, "text": "é\n\"q\"", "list": [], "ok": true, "none": null}}]"#
        );
        assert!(
            indented.starts_with("{\n  \"type\": \"function\",\n  \"function\": {\n    \"name\"")
        );
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let chat = template(
            "{% if messages|length == 0 %}{{ raise_exception('no messages') }}{% endif %}",
        );
        let err = chat.render(&[], None, false).unwrap_err().to_string();
        assert!(err.contains("no messages"), "{err}");
    }
}
