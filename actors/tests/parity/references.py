"""Tiny random-weight models and their reference outputs, computed by transformers itself.

Owns building tiny random-weight Llama, Qwen2, Qwen3 and Mistral models, saving them with
`save_pretrained` (float32, bfloat16 or float16 on disk, optionally sharded), rewriting a saved
config.json into the transformers-4 layout, reloading a checkpoint in float32 with eager attention,
and computing what goes into reference.json: logits and greedy continuations for single prompts and
a left-padded batch (full forwards without a cache, never stopping at EOS), plus the batch's logits
with the model run in bfloat16. It also owns the small helpers shared by the other parity modules
(`log`, `read_json`, `write_json`).

model_cases.py declares the cases built from these; make_references.py runs them and documents
the formats of reference.json and manifest.json.
"""

import copy
import json
import math
import os
import shutil

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

VOCAB = 256
GREEDY_STEPS = 16
SINGLE_LENGTHS = (8, 12)
BATCH_LENGTHS = (11, 8, 12)
PAD_ID = 0
SHARD_SIZE = "64KB"

FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

BASE_CONFIG = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=128,
    initializer_range=0.1,
    rms_norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)


def log(*args):
    print(*args, flush=True)


# --------------------------------------------------------------------------------------------
# Building, saving and reloading models


def randomize_norms_and_biases(model):
    """Norm weights become 1 + 0.1*N(0,1) and every bias 0.1*N(0,1), so that none is a no-op."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            elif name.endswith(".bias"):
                param.copy_(0.1 * torch.randn_like(param))


def build_model(family, config_kwargs, seed):
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(seed)
    config = config_cls(**{**BASE_CONFIG, **config_kwargs})
    model = model_cls(config).eval()
    randomize_norms_and_biases(model)
    return model


def save_model(model, directory, disk_dtype="float32", sharded=False):
    if os.path.exists(directory):
        shutil.rmtree(directory)
    on_disk = copy.deepcopy(model).to(DTYPES[disk_dtype])
    on_disk.save_pretrained(directory, max_shard_size=SHARD_SIZE if sharded else "50GB")


def reload_model(directory, expected_class):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    assert type(model) is expected_class, f"{directory}: reloaded as {type(model).__name__}"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config._attn_implementation == "eager"
    return model


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path, value, indent=None):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def to_v4_layout(config, rope_type_key, overrides):
    """Rewrite a transformers-5 config.json dict into the layout transformers 4 wrote.

    rope_parameters becomes a top-level rope_theta plus rope_scaling (null for the default rope,
    otherwise with the type under `rope_type_key`, "type" or "rope_type"); "dtype" becomes
    "torch_dtype"; layer_types goes away (transformers 4 Qwen2 configs did not have it).
    """
    config = dict(config)
    rope = dict(config.pop("rope_parameters"))
    config["rope_theta"] = rope.pop("rope_theta")
    rope_type = rope.pop("rope_type")
    config["rope_scaling"] = None if rope_type == "default" else {rope_type_key: rope_type, **rope}
    if "dtype" in config:
        config["torch_dtype"] = config.pop("dtype")
    config.pop("layer_types", None)
    config["transformers_version"] = "4.51.3"
    config.update(overrides)
    return dict(sorted(config.items()))


# --------------------------------------------------------------------------------------------
# Forward passes and greedy decoding (no generate(): EOS must not stop it, no logits processors)


@torch.no_grad()
def forward(model, ids, attention_mask=None, position_ids=None):
    return model(
        input_ids=ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).logits.float()


def top_margin(last_logits):
    """Gap between the largest and second-largest logit, per row."""
    top = torch.topk(last_logits, 2, dim=-1).values
    return (top[..., 0] - top[..., 1]).min().item()


def single_forward(model, ids):
    ids_t = torch.tensor([ids])
    positions = torch.arange(len(ids)).unsqueeze(0)
    return forward(model, ids_t, position_ids=positions)[0]


def single_reference(model, ids):
    logits = single_forward(model, ids)
    sequence = list(ids)
    greedy, margin = [], math.inf
    for _ in range(GREEDY_STEPS):
        last = single_forward(model, sequence)[-1]
        margin = min(margin, top_margin(last))
        token = int(torch.argmax(last))
        greedy.append(token)
        sequence.append(token)
    return {"ids": list(ids), "logits": logits.tolist(), "greedy": greedy}, margin


def left_padded(prompts):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def positions_from_mask(mask):
    """What generate() does: cumulative sum of the mask, minus one, padded slots set to 1."""
    positions = mask.cumsum(-1) - 1
    return positions.masked_fill(mask == 0, 1)


def batch_reference(model, prompts):
    ids, mask = left_padded(prompts)
    logits = forward(model, ids, mask, positions_from_mask(mask))
    width = ids.shape[1]
    per_prompt = [logits[row, width - len(p) :].tolist() for row, p in enumerate(prompts)]
    greedy = [[] for _ in prompts]
    margin = math.inf
    for _ in range(GREEDY_STEPS):
        last = forward(model, ids, mask, positions_from_mask(mask))[:, -1]
        margin = min(margin, top_margin(last))
        tokens = torch.argmax(last, dim=-1)
        for row, token in enumerate(tokens.tolist()):
            greedy[row].append(token)
        ids = torch.cat([ids, tokens.unsqueeze(1)], dim=1)
        mask = torch.cat([mask, torch.ones((len(prompts), 1), dtype=torch.long)], dim=1)
    return {"prompts": [list(p) for p in prompts], "logits": per_prompt, "greedy": greedy}, margin


def bf16_batch_logits(model, prompts):
    """The left-padded batch's logits (real positions) with the model run in bf16 by transformers:
    the reference for a bf16 run, whose distance from the f32 logits is bf16's own."""
    half = copy.deepcopy(model).to(torch.bfloat16)
    ids, mask = left_padded(prompts)
    logits = forward(half, ids, mask, positions_from_mask(mask))
    width = ids.shape[1]
    return [logits[row, width - len(p) :].tolist() for row, p in enumerate(prompts)]


def make_prompts(seed):
    generator = torch.Generator().manual_seed(seed)

    def draw(length):
        return torch.randint(0, VOCAB, (length,), generator=generator).tolist()

    return [draw(n) for n in SINGLE_LENGTHS], [draw(n) for n in BATCH_LENGTHS]


def compute_reference(model, seed):
    singles, batch_prompts = make_prompts(seed)
    reference = {"single": [], "batch": None}
    margin = math.inf
    for ids in singles:
        entry, m = single_reference(model, ids)
        reference["single"].append(entry)
        margin = min(margin, m)
    reference["batch"], m = batch_reference(model, batch_prompts)
    margin = min(margin, m)
    # The left-padded batch must agree with unpadded forwards of each prompt.
    for prompt, logits in zip(batch_prompts, reference["batch"]["logits"]):
        diff = (single_forward(model, prompt) - torch.tensor(logits)).abs().max().item()
        assert diff < 1e-4, f"padded batch differs from unpadded forward by {diff}"
    reference["min_margin"] = margin
    reference["seed"] = seed
    return reference
