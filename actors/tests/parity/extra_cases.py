"""Cases outside the table of model_cases.py, each checking one thing the table cannot.

- `llama3_long`: a 2,048-token prompt, where RoPE angles in the thousands amplify any difference
  in how the rotary frequencies and angles are rounded (transformers computes them in f32); the
  script checks that f64 angles would move the last logits by more than the suite's tolerance.
- `tied_head_differs`: a checkpoint whose config ties the embeddings but which stores an
  `lm_head.weight` different from the embedding; transformers then keeps the stored head.
- `both_layouts`: a directory with both `model.safetensors` and a shard index pointing at
  other weights; transformers loads the single file.

Each writes a checkpoint and `reference.json` {"ids": [...], "logits_from": k,
"logits": [[...]] for positions k.. of a single unpadded forward}.
"""

import os
import types

import torch
from safetensors.torch import load_file

from references import FAMILIES, log, reload_model, save_model, single_forward, write_json

LONG_LENGTH = 2048
LONG_TAIL = 32
TOLERANCE = 1e-4


def tiny_llama(seed, **overrides):
    config_cls, model_cls = FAMILIES["llama"]
    torch.manual_seed(seed)
    config = config_cls(
        vocab_size=256, hidden_size=256, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        initializer_range=0.1, **overrides,
    )
    return model_cls(config).eval()


def f64_rotary_forward(self, x, position_ids):
    """The rotary embedding with f64 frequencies and angles: the ablation of the long case."""
    theta = self.config.rope_parameters["rope_theta"]
    dim = self.config.head_dim
    inverse = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    angles = position_ids[:, :, None].double() * inverse[None, None, :]
    emb = torch.cat((angles, angles), dim=-1)
    return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


def write_reference(directory, model, ids, tail):
    logits = single_forward(model, ids)
    start = len(ids) - tail
    write_json(os.path.join(directory, "reference.json"),
               {"ids": ids, "logits_from": start, "logits": logits[start:].tolist()})
    return logits


def long_case(out_dir):
    directory = os.path.join(out_dir, "llama3_long")
    model = tiny_llama(5001, rope_theta=500000.0)
    save_model(model, directory)
    model = reload_model(directory, FAMILIES["llama"][1])
    generator = torch.Generator().manual_seed(5002)
    ids = torch.randint(1, 256, (LONG_LENGTH,), generator=generator).tolist()
    with torch.no_grad():
        logits = write_reference(directory, model, ids, LONG_TAIL)
        rotary = model.model.rotary_emb
        rotary.forward = types.MethodType(f64_rotary_forward, rotary)
        ablated = single_forward(model, ids)
    moved = (ablated[-LONG_TAIL:] - logits[-LONG_TAIL:]).abs().max().item()
    log(f"  llama3_long: f64 angles move the last {LONG_TAIL} positions' logits by {moved:.2e}")
    assert moved > TOLERANCE, f"the long case cannot tell f64 angles from f32 ones ({moved:.2e})"
    return {"name": "llama3_long", "dir": "llama3_long", "what": f"{LONG_LENGTH} tokens, theta 5e5"}


def tied_head_case(out_dir):
    directory = os.path.join(out_dir, "tied_head_differs")
    model = tiny_llama(5003)
    save_model(model, directory)
    # Declare the embeddings tied while the stored head differs from the embedding.
    config_path = os.path.join(directory, "config.json")
    with open(config_path) as f:
        text = f.read()
    assert '"tie_word_embeddings": false' in text
    with open(config_path, "w") as f:
        f.write(text.replace('"tie_word_embeddings": false', '"tie_word_embeddings": true'))
    reloaded = reload_model(directory, FAMILIES["llama"][1])
    head = reloaded.lm_head.weight
    embedding = reloaded.model.embed_tokens.weight
    assert not torch.equal(head, embedding), "transformers tied a head that differs"
    with torch.no_grad():
        write_reference(directory, reloaded, list(range(3, 15)), 12)
    return {"name": "tied_head_differs", "dir": "tied_head_differs",
            "what": "tie_word_embeddings true, a stored lm_head that differs"}


def both_layouts_case(out_dir):
    directory = os.path.join(out_dir, "both_layouts")
    model = tiny_llama(5004)
    save_model(model, directory)
    # Shards of other weights beside the single file: an index that transformers ignores.
    other = tiny_llama(5005)
    shard_dir = os.path.join(out_dir, "both_layouts_shards")
    save_model(other, shard_dir, sharded=True)
    for name in os.listdir(shard_dir):
        if name.startswith("model-") or name == "model.safetensors.index.json":
            os.replace(os.path.join(shard_dir, name), os.path.join(directory, name))
    reloaded = reload_model(directory, FAMILIES["llama"][1])
    single = load_file(os.path.join(directory, "model.safetensors"))
    assert torch.equal(reloaded.model.embed_tokens.weight, single["model.embed_tokens.weight"])
    with torch.no_grad():
        write_reference(directory, reloaded, list(range(20, 32)), 12)
    return {"name": "both_layouts", "dir": "both_layouts",
            "what": "model.safetensors beside an index of other shards"}


def write_extra_cases(out_dir):
    return [long_case(out_dir), tied_head_case(out_dir), both_layouts_case(out_dir)]
