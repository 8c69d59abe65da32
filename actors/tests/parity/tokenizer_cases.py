"""The tokenizer side of the parity references: byte-level BPE tokenizers and chat templates.

Owns training the two small tokenizers (llama3_style and qwen_style) on a fixed text, their
tokenizer_config.json and chat templates (Llama 3 style, and Qwen style with tools and tool calls),
and expected.json: the encode, decode and chat-template results transformers gives for them, each
checked against the raw tokenizer.json where the Rust side reads it.

make_references.py runs this and documents the format of expected.json.
"""

import json
import os
import shutil

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, Qwen2Tokenizer

from references import log, write_json


def training_text():
    """A few hundred lines of varied English, code and non-ASCII text."""
    subjects = ["The model", "A small cat", "Our team", "The compiler", "Every user", "This function", "The river",
                "A tired engineer", "The weather", "My neighbour's dog"]
    verbs = ["reads", "writes", "ignores", "returns", "follows", "counts", "explains", "rejects", "loads", "prints"]
    objects = ["the configuration file.", "three hundred tokens!", "a list of numbers, quickly.", "the last message?",
               "every weight in bfloat16.", "an error: missing key 'lm_head'.", "the answer (probably 42).",
               "its own name; then stops."]
    lines = [f"{s} {v} {o}" for s in subjects for v in verbs for o in objects[: 3 + len(s) % 5]]
    lines += [
        "def forward(self, x):\n    return self.proj(x) * 2  # double it",
        "for (int i = 0; i < n; ++i) { total += values[i]; }",
        "fn main() { println!(\"hello, {}\", name); }",
        "let tokens: Vec<u32> = text.split_whitespace().map(|w| w.len() as u32).collect();",
        "if __name__ == \"__main__\":\n\tmain()",
        "SELECT name, count(*) FROM users WHERE age >= 18 GROUP BY name;",
        "{\"role\": \"user\", \"content\": \"What's the time?\"}",
        "    indented line with trailing spaces   ",
        "Numbers: 0 1 12 123 1234 12345 3.14159 2024-06-01 1,000,000",
        "héllo wörld 東京 🙂",
        "Ça va? Très bien, merci. Größe, Straße, naïve café.",
        "東京は日本の首都です。大阪も大きい都市です。",
        "Привет, мир! Как дела?",
        "Emoji test: 🙂 🚀 ❤️ 👍🏽 and symbols ∑ ∫ √ ≤ ≥ → ←",
        "I'm sure you'll see they've done it; we'd like that, isn't it?",
        "Line one\nLine two\n\nLine four after a blank line",
        "Tabs\tbetween\twords and  double  spaces",
    ] * 4
    return lines


SPLIT_LLAMA3_STYLE = r" ?\p{L}+| ?\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

LLAMA3_CHAT_TEMPLATE = """{{- bos_token }}
{%- set ns = namespace(system='') %}
{%- for message in messages %}
    {%- if loop.first and message['role'] == 'system' %}
        {%- set ns.system = message['content'] | trim %}
    {%- endif %}
{%- endfor %}
{%- if ns.system %}
    {{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + ns.system + '<|eot_id|>' }}
{%- endif %}
{%- for message in messages %}
    {%- if not (loop.first and message['role'] == 'system') %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}
        {{- message['content'] | trim }}
        {{- '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

QWEN_CHAT_TEMPLATE = """{%- set default_system = 'You are a helpful assistant.' %}
{%- if messages and messages[0].role == 'system' %}
    {%- set system = messages[0].content %}
{%- else %}
    {%- set system = default_system %}
{%- endif %}
{{- '<|im_start|>system\\n' + system }}
{%- if tools %}
    {{- '\\n\\n# Tools\\n\\nYou may call these functions. Their signatures are inside <tools></tools>:\\n<tools>' }}
    {%- for tool in tools %}
        {{- '\\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\\n</tools>\\n\\nTo call one, answer with <tool_call></tool_call> around a JSON object with "name" and "arguments".' }}
{%- endif %}
{{- '<|im_end|>\\n' }}
{%- for message in messages %}
    {%- if message.role not in ['system', 'user', 'assistant', 'tool'] %}
        {{- raise_exception('Unexpected role: ' + message.role) }}
    {%- endif %}
    {%- if message.role == 'system' and not loop.first %}
        {{- raise_exception('A system message must come first') }}
    {%- endif %}
    {%- if message.role == 'user' %}
        {{- '<|im_start|>user\\n' + message.content + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {%- set content = message.content or '' %}
        {%- if content.startswith('<think>') and '</think>' in content %}
            {%- set content = content.split('</think>')[-1].strip() %}
        {%- endif %}
        {{- '<|im_start|>assistant\\n' + content.strip() }}
        {%- for call in message.tool_calls or [] %}
            {%- set fn = call.function if call.function is defined else call %}
            {{- '\\n<tool_call>\\n{"name": "' + fn.name + '", "arguments": ' + (fn.arguments | tojson) + '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + message.content.strip() + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city, e.g. Zürich or 東京 (use <city> & country)",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city's name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

TOKENIZER_SPECS = {
    "llama3_style": {
        "special": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "config": {
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "pad_token": "<|end_of_text|>",
            "clean_up_tokenization_spaces": True,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": 131072,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": LLAMA3_CHAT_TEMPLATE,
        },
        "texts": [
            ("Hello world", True),
            ("Hello world", False),
            ("   leading spaces and a trailing one ", True),
            ("line one\nline two\n\n  indented\tand tabbed", False),
            ("héllo wörld 東京 🙂", True),
            ("<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>", False),
            ("<|begin_of_text|>already has bos", True),
            ("Numbers 1234567 and 3.14159, isn't it?", False),
            ("def f(x):\n    return x * 2  # comment", True),
            ("", True),
        ],
        "chats": [
            ([{"role": "user", "content": "Hello!"}], True, None),
            ([{"role": "system", "content": "  You are terse.  "},
              {"role": "user", "content": "What is 2+2?\n"},
              {"role": "assistant", "content": " 4 "},
              {"role": "user", "content": "And 東京?"}], True, None),
            ([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}], False, None),
            ([{"role": "user", "content": "first"}, {"role": "assistant", "content": "second"}], False, None),
        ],
    },
    "qwen_style": {
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "config": {
            "add_prefix_space": False,
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": None,
            "clean_up_tokenization_spaces": False,
            "errors": "replace",
            "split_special_tokens": False,
            "model_max_length": 32768,
            "tokenizer_class": "Qwen2Tokenizer",
            "chat_template": QWEN_CHAT_TEMPLATE,
        },
        "texts": [
            ("Hello world", True),
            ("   leading spaces and a trailing one ", False),
            ("line one\nline two\n\n  indented\tand tabbed", False),
            ("héllo wörld 東京 🙂", False),
            ("cafe\u0301 (decomposed) vs café", False),
            ("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", True),
            ("Numbers 1234567 and 3.14159, isn't it? I'M SURE", False),
            ("def f(x):\n    return x * 2  # comment", True),
        ],
        "chats": [
            ([{"role": "user", "content": "Hello!"}], True, None),
            ([{"role": "system", "content": "You are terse."},
              {"role": "user", "content": "What is 2+2?"},
              {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
              {"role": "user", "content": "And 東京?"}], False, None),
            ([{"role": "user", "content": "Weather in Zürich?"}], True, [WEATHER_TOOL]),
            ([{"role": "user", "content": "Weather in 東京?"},
              {"role": "assistant", "content": "",
               "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "東京", "unit": "celsius"}}}]},
              {"role": "tool", "content": " {\"temperature\": 21, \"sky\": \"clear & <calm>\"} "},
              {"role": "tool", "content": "second result"}], True, [WEATHER_TOOL]),
        ],
    },
}


def train_tokenizer(name):
    """A byte-level BPE with ~400 entries, its special tokens appended after the learned vocabulary."""
    tokenizer = Tokenizer(models.BPE(ignore_merges=(name == "llama3_style")))
    if name == "llama3_style":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(SPLIT_LLAMA3_STYLE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    else:
        # transformers rebuilds a Qwen2Tokenizer's pipeline from its own code, keeping only the vocabulary
        # and merges from tokenizer.json; borrow that pipeline so the file says what transformers does.
        pipeline = Qwen2Tokenizer().backend_tokenizer
        tokenizer.normalizer = pipeline.normalizer
        tokenizer.pre_tokenizer = pipeline.pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400 - len(TOKENIZER_SPECS[name]["special"]),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_text(), trainer)
    special = TOKENIZER_SPECS[name]["special"]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    if name == "llama3_style":
        bos = special[0]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def added_tokens_decoder(tokenizer, special):
    return {
        str(tokenizer.token_to_id(t)): {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True,
        }
        for t in special
    }


def write_tokenizer(name, out_dir):
    spec = TOKENIZER_SPECS[name]
    directory = os.path.join(out_dir, "tokenizers", name)
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    raw = train_tokenizer(name)
    raw.save(os.path.join(directory, "tokenizer.json"))
    config = {"added_tokens_decoder": added_tokens_decoder(raw, spec["special"]), **spec["config"]}
    write_json(os.path.join(directory, "tokenizer_config.json"), config, indent=2)

    hf = AutoTokenizer.from_pretrained(directory)
    raw = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    expected = {"encode": [], "decode": [], "chat": []}
    for text, add_special in spec["texts"]:
        ids = hf.encode(text, add_special_tokens=add_special)
        # The Rust side reads tokenizer.json; it must say what transformers does.
        assert ids == raw.encode(text, add_special_tokens=add_special).ids, (name, text)
        expected["encode"].append({"text": text, "add_special_tokens": add_special, "ids": ids})

    decode_inputs = [entry["ids"] for entry in expected["encode"] if entry["ids"]]
    decode_inputs.append(hf.encode("Wait . Really , isn't it ? Yes !", add_special_tokens=False))
    decode_inputs.append([raw.token_to_id(t) for t in spec["special"]] + hf.encode(" tail", add_special_tokens=False))
    for ids in decode_inputs:
        for skip in (False, True):
            text = hf.decode(ids, skip_special_tokens=skip)
            assert text == raw.decode(ids, skip_special_tokens=skip), (name, ids, skip)
            expected["decode"].append({"ids": ids, "skip_special_tokens": skip, "text": text})

    for messages, add_generation_prompt, tools in spec["chats"]:
        text = hf.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt)
        expected["chat"].append({
            "messages": messages, "add_generation_prompt": add_generation_prompt, "tools": tools, "text": text,
            # The same as JSON text, so a reader whose JSON maps sort their keys still sees the
            # key order that `tojson` must reproduce.
            "messages_json": json.dumps(messages, ensure_ascii=False),
            "tools_json": None if tools is None else json.dumps(tools, ensure_ascii=False),
        })
    try:
        hf.apply_chat_template([{"role": "robot", "content": "beep"}], tokenize=False)
        raised = False
    except Exception:  # noqa: BLE001 - jinja2 TemplateError from raise_exception
        raised = True
    assert raised == (name == "qwen_style"), f"{name}: unexpected handling of an invalid role"
    expected["bos_token"] = hf.bos_token
    expected["eos_token"] = hf.eos_token
    expected["pad_token"] = hf.pad_token
    assert (expected["bos_token"], expected["eos_token"], expected["pad_token"]) == (
        spec["config"]["bos_token"], spec["config"]["eos_token"], spec["config"]["pad_token"])
    write_json(os.path.join(directory, "expected.json"), expected, indent=2)
    log(f"  tokenizer {name}: {type(hf).__name__}, vocab {raw.get_vocab_size()}, "
        f"{len(expected['encode'])} encodes, {len(expected['decode'])} decodes, {len(expected['chat'])} chats")
    return {"name": name, "dir": f"tokenizers/{name}"}
