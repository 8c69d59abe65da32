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
        let messages = normalise_messages(&messages)?;
        let mut context: BTreeMap<String, Value> = self
            .special_tokens
            .iter()
            .map(|(name, text)| (name.clone(), Value::from(text.as_str())))
            .collect();
        context.insert("messages".into(), messages);
        context.insert("add_generation_prompt".into(), add_generation_prompt.into());
        context.insert("tools".into(), tools.unwrap_or(Value::from(())));
        context.insert("documents".into(), Value::from(()));
        template
            .render(Value::from(context))
            .map_err(|err| ModelError::Tokenizer(format!("chat_template: {err:#}")))
    }
}

/// The names transformers copies a message's reasoning under, in the order it looks for one.
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// What transformers does to messages before rendering: keys whose value is None are dropped,
/// and a message with reasoning under any of its names gets it as `thinking` (moved first) and
/// as `reasoning_content` too.
fn normalise_messages(messages: &Value) -> Result<Value> {
    let Ok(items) = messages.try_iter() else {
        return Ok(messages.clone());
    };
    let mut out = Vec::new();
    for message in items {
        if message.kind() != minijinja::value::ValueKind::Map {
            out.push(message);
            continue;
        }
        let mut entries: Vec<(Value, Value)> = Vec::new();
        for key in message
            .try_iter()
            .map_err(|err| ModelError::Input(format!("a chat message: {err}")))?
        {
            let value = message
                .get_item(&key)
                .map_err(|err| ModelError::Input(format!("a chat message: {err}")))?;
            if !value.is_none() && !value.is_undefined() {
                entries.push((key, value));
            }
        }
        let find = |name: &str| {
            entries
                .iter()
                .find(|(key, _)| key.as_str() == Some(name))
                .map(|(_, value)| value.clone())
        };
        if let Some(reasoning) = REASONING_FIELDS.iter().find_map(|name| find(name)) {
            // As the Python literal {"thinking": r, **message, "reasoning_content": r}: thinking
            // comes first (with the message's own value if it has one).
            let thinking = match entries
                .iter()
                .position(|(key, _)| key.as_str() == Some("thinking"))
            {
                Some(index) => entries.remove(index),
                None => (Value::from("thinking"), reasoning.clone()),
            };
            entries.insert(0, thinking);
            match entries
                .iter_mut()
                .find(|(key, _)| key.as_str() == Some("reasoning_content"))
            {
                Some((_, value)) => *value = reasoning,
                None => entries.push((Value::from("reasoning_content"), reasoning)),
            }
        }
        out.push(Value::from_iter(entries));
    }
    Ok(Value::from(out))
}

/// The current local time formatted as Python's naive `datetime.now().strftime` formats it
/// (transformers' `strftime_now`): the POSIX conversions (with glibc's `-`, `_`, `0`, `^`, `#`
/// flags) through C's strftime, `%f` as microseconds, `%z` and `%Z` empty (a naive time has no
/// zone). Anything else is refused, since C leaves unknown conversions undefined.
fn strftime_now(format: &str) -> std::result::Result<String, Error> {
    let bad = |why: String| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: {why}"));
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_micros())
        .unwrap_or(0);
    let mut for_c = String::with_capacity(format.len());
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            for_c.push(c);
            continue;
        }
        let mut flags = String::new();
        let mut conversion = chars.next();
        while let Some(flag) = conversion.filter(|c| "-_0^#".contains(*c)) {
            flags.push(flag);
            conversion = chars.next();
        }
        match conversion {
            Some('z' | 'Z') => {}
            Some('f') => for_c.push_str(&format!("{micros:06}")),
            Some(c) if "aAbBcCdDeFgGhHIjmMnprRsStTuUVwWxXyY%".contains(c) => {
                for_c.push('%');
                for_c.push_str(&flags);
                for_c.push(c);
            }
            other => {
                return Err(bad(format!(
                    "unsupported conversion %{}",
                    other.unwrap_or(' ')
                )))
            }
        }
    }
    let c_format =
        std::ffi::CString::new(for_c.as_str()).map_err(|_| bad("a NUL in the format".into()))?;
    // SAFETY: `time` and `localtime_r` write only into the locals given.
    let parts = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut parts: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut parts).is_null() {
            return Err(bad("no local time".into()));
        }
        parts
    };
    // strftime returns 0 both for an empty result and for a buffer too small: grow until the
    // output fits (or the format is plainly empty).
    let mut size = 256;
    loop {
        let mut buffer = vec![0_u8; size];
        // SAFETY: strftime writes at most `buffer.len()` bytes into `buffer`, reads the
        // NUL-terminated `c_format` and the initialised `parts`, and returns how many it wrote.
        let written = unsafe {
            libc::strftime(
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                c_format.as_ptr(),
                &parts,
            )
        };
        if written > 0 || for_c.is_empty() || size >= 1 << 16 {
            buffer.truncate(written);
            return String::from_utf8(buffer).map_err(|_| bad("not UTF-8".into()));
        }
        size *= 8;
    }
}

/// `tojson` as transformers defines it: Python's `json.dumps(x, ensure_ascii=False, indent=...,
/// separators=..., sort_keys=...)`, whose default separators are ", " and ": " (or "," and
/// ": " with an indent).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    if ensure_ascii == Some(true) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson(ensure_ascii=True) is not supported",
        ));
    }
    let (item, key) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(other) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson separators must be two strings, not {other:?}"),
            ))
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let style = JsonStyle {
        indent,
        sort_keys: sort_keys.unwrap_or(false),
        item,
        key,
    };
    let mut out = String::new();
    write_python_json(&value, &style, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

struct JsonStyle {
    indent: Option<usize>,
    sort_keys: bool,
    item: String,
    key: String,
}

/// A float as Python's `repr` writes it: the shortest digits that read back, in positional
/// notation for exponents -4 to 15 and scientific (`1e-05`, `1.5e+16`) otherwise.
fn python_float(number: f64) -> String {
    if number.is_nan() {
        return "NaN".into();
    }
    if number.is_infinite() {
        return if number > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        }
        .into();
    }
    let scientific = format!("{number:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (whole, fraction) = digits.split_at(point as usize);
            format!("{whole}.{fraction}")
        };
        format!("{sign}{text}")
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exponent_sign}{:02}", exponent.abs())
    }
}

fn write_python_json(
    value: &Value,
    style: &JsonStyle,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), Error> {
    use minijinja::value::ValueKind;
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = style.indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * depth));
        }
    };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => out.push_str(&value.to_string()),
        ValueKind::Number => out.push_str(&python_float(f64::try_from(value.clone())?)),
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
                    out.push_str(&style.item);
                }
                newline(out, depth + 1);
                write_python_json(item, style, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if style.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (index, key) in keys.iter().enumerate() {
                if index > 0 {
                    out.push_str(&style.item);
                }
                newline(out, depth + 1);
                let name = key.as_str().map(str::to_string).unwrap_or(key.to_string());
                out.push_str(&serde_json::to_string(&name).unwrap_or_default());
                out.push_str(&style.key);
                write_python_json(&value.get_item(key)?, style, depth + 1, out)?;
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
    fn floats_are_written_as_python_writes_them() {
        for (number, python) in [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456.789, "123456.789"),
            (-2.5e-7, "-2.5e-07"),
            (1e15, "1000000000000000.0"),
            (0.0, "0.0"),
        ] {
            assert_eq!(python_float(number), python, "{number}");
        }
    }

    #[test]
    fn strftime_now_refuses_unknown_conversions() {
        assert_eq!(strftime_now("%Y").unwrap().len(), 4);
        assert!(strftime_now("%-d %b %Y").is_ok());
        assert!(strftime_now("%Q").is_err());
        assert_eq!(
            strftime_now("[%Z%z]").unwrap(),
            "[]",
            "a naive time has no zone"
        );
        assert_eq!(strftime_now("%f").unwrap().len(), 6);
        assert!(strftime_now("%").is_err());
        assert_eq!(strftime_now("").unwrap(), "");
    }

    #[test]
    fn none_keys_are_dropped_and_reasoning_is_aliased() {
        let chat = template(
            "{% for m in messages %}{% for k, v in m.items() %}{{ k }}={{ v }};{% endfor %}|{% endfor %}\
             {{ documents is none }}",
        );
        let text = chat
            .render_json(
                r#"[{"role":"user","content":"hi","tool_calls":null},
                    {"role":"assistant","content":"ok","reasoning":"because"}]"#,
                None,
                false,
            )
            .unwrap();
        assert_eq!(
            text,
            "role=user;content=hi;|thinking=because;role=assistant;content=ok;reasoning=because;\
             reasoning_content=because;|True"
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
