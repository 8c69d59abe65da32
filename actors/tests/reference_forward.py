"""An independent NumPy implementation of the decoder's forward pass, for tests.

Usage: reference_forward.py CHECKPOINT_DIR INPUT_JSON OUTPUT_JSON

Reads config.json and model.safetensors (parsed by hand: an 8-byte header length, a JSON
header, then raw little-endian tensors), runs the Llama/Qwen2 forward pass in float64 on the
token ids in INPUT_JSON ({"ids": [[...], ...]}, equal-length rows, no padding), and writes the
logits as {"logits": [[[...]]]}.
"""

import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16}


def read_safetensors(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"]).astype(np.float64)
    return tensors


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(x, positions, theta):
    dim = x.shape[-1]
    inverse = 1.0 / theta ** (np.arange(0, dim // 2) * 2.0 / dim)
    angles = positions[:, None] * inverse[None, :]
    cos = np.concatenate([np.cos(angles)] * 2, axis=-1)
    sin = np.concatenate([np.sin(angles)] * 2, axis=-1)
    half = dim // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def linear(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def forward(config, w, ids):
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    hidden = config["hidden_size"]
    head_dim = hidden // heads
    eps = config.get("rms_norm_eps", 1e-6)
    theta = config.get("rope_theta", 10000.0)
    batch, length = ids.shape
    x = w["model.embed_tokens.weight"][ids]
    positions = np.arange(length, dtype=np.float64)
    causal = np.triu(np.full((length, length), -np.inf), k=1)
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = linear(h, w[p + "self_attn.q_proj.weight"], w.get(p + "self_attn.q_proj.bias"))
        k = linear(h, w[p + "self_attn.k_proj.weight"], w.get(p + "self_attn.k_proj.bias"))
        v = linear(h, w[p + "self_attn.v_proj.weight"], w.get(p + "self_attn.v_proj.bias"))
        q = q.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)
        k = k.reshape(batch, length, kv_heads, head_dim).transpose(0, 2, 1, 3)
        v = v.reshape(batch, length, kv_heads, head_dim).transpose(0, 2, 1, 3)
        q = rope(q, positions, theta)
        k = rope(k, positions, theta)
        k = np.repeat(k, heads // kv_heads, axis=1)
        v = np.repeat(v, heads // kv_heads, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim) + causal
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(axis=-1, keepdims=True)
        attended = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        x = x + linear(attended, w[p + "self_attn.o_proj.weight"], w.get(p + "self_attn.o_proj.bias"))
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = linear(h, w[p + "mlp.gate_proj.weight"])
        up = linear(h, w[p + "mlp.up_proj.weight"])
        silu = gate / (1.0 + np.exp(-gate))
        x = x + linear(silu * up, w[p + "mlp.down_proj.weight"])
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if config.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def main():
    checkpoint, inputs, output = sys.argv[1:4]
    with open(f"{checkpoint}/config.json") as f:
        config = json.load(f)
    weights = read_safetensors(f"{checkpoint}/model.safetensors")
    with open(inputs) as f:
        ids = np.array(json.load(f)["ids"], dtype=np.int64)
    logits = forward(config, weights, ids)
    with open(output, "w") as f:
        json.dump({"logits": logits.tolist()}, f)


if __name__ == "__main__":
    main()
