"""The model cases of the parity references: accepted cases and refusals, as checkpoints.

Owns the `Case` type and the CASES table (tiny Llama, Qwen2, Qwen3 and Mistral configurations, each
saved in float32, bfloat16 or float16, optionally sharded, optionally in the transformers-4
config.json layout), the ablations and case-specific checks that prove each setting matters, and
`write_case`, which finds a seed with a clear greedy margin and writes the checkpoint and its
reference.json. It also owns the refusal checkpoints (each with exactly one thing the Rust decoder
must refuse).

Building, saving and reloading the models and computing the references are in references.py;
make_references.py runs this and documents the formats of reference.json and manifest.json.
"""

import copy
import math
import os
from dataclasses import dataclass, field
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from references import (
    BASE_CONFIG,
    FAMILIES,
    bf16_batch_logits,
    build_model,
    compute_reference,
    log,
    make_prompts,
    read_json,
    reload_model,
    save_model,
    single_forward,
    to_v4_layout,
    write_json,
)

MIN_MARGIN = 1e-3
MAX_ATTEMPTS = 20
# The smallest logit change an ablation must cause to count as "visible".
ABLATION_MIN_DIFF = 1e-3


# --------------------------------------------------------------------------------------------
# Ablations: the same weights with one setting ignored


def rebuild(model, **changes):
    """The same weights in a model whose config has `changes` applied."""
    values = model.config.to_dict()
    values.update(changes)
    config = type(model.config).from_dict(values)
    config._attn_implementation = "eager"
    other = type(model)(config).eval()
    missing, unexpected = other.load_state_dict(model.state_dict(), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return other


def with_default_rope(model):
    return rebuild(model, rope_parameters={"rope_type": "default", "rope_theta": model.config.rope_parameters["rope_theta"]})


def with_rope_theta(theta):
    return lambda model: rebuild(model, rope_parameters={"rope_type": "default", "rope_theta": theta})


def with_config(**changes):
    return lambda model: rebuild(model, **changes)


def zero_params(predicate):
    def ablate(model):
        other = copy.deepcopy(model)
        with torch.no_grad():
            for name, param in other.named_parameters():
                if predicate(name):
                    param.zero_()
        return other

    return ablate


def lm_head_tied(model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.copy_(other.model.embed_tokens.weight)
    return other


def qk_norm_removed(model):
    other = copy.deepcopy(model)
    for layer in other.model.layers:
        layer.self_attn.q_norm = torch.nn.Identity()
        layer.self_attn.k_norm = torch.nn.Identity()
    return other


def qk_norm_weights_ones(model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        for layer in other.model.layers:
            layer.self_attn.q_norm.weight.fill_(1.0)
            layer.self_attn.k_norm.weight.fill_(1.0)
    return other


def yarn_defaults(model):
    rope = dict(model.config.rope_parameters)
    for key in ("attention_factor", "beta_fast", "beta_slow"):
        rope.pop(key, None)
    return rebuild(model, rope_parameters=rope)


def yarn_attention_factor_one(model):
    return rebuild(model, rope_parameters={**model.config.rope_parameters, "attention_factor": 1.0})


def run_ablations(case, model, reference):
    prompts = [entry["ids"] for entry in reference["single"]]
    expected = [single_forward(model, ids) for ids in prompts]
    # Control: rebuilding with no change must reproduce the logits exactly.
    control = rebuild(model)
    for ids, logits in zip(prompts, expected):
        assert torch.equal(single_forward(control, ids), logits), f"{case.name}: rebuild control differs"
    for label, ablate in case.ablations:
        other = ablate(model)
        diff = max((single_forward(other, ids) - logits).abs().max().item() for ids, logits in zip(prompts, expected))
        same = label in case.expect_same
        log(f"    ablation {label!r}: max |logit diff| = {diff:.3g}" + (" (expected identical)" if same else ""))
        if same:
            assert diff < 1e-5, f"{case.name}: {label} should not change the logits"
        else:
            assert diff > ABLATION_MIN_DIFF, f"{case.name}: ignoring {label} is not visible ({diff})"


# --------------------------------------------------------------------------------------------
# Case-specific checks


def amplify_activation_effects(model):
    """Scale gate_proj by 3 (inputs reach |x| ~ 2.7, where the gelu approximations differ most), up_proj
    by 4, and lm_head by 8 (so that a small relative change shows in absolute logit differences)."""
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate_proj.weight.mul_(3.0)
            layer.mlp.up_proj.weight.mul_(4.0)
        model.lm_head.weight.mul_(8.0)


def default_inv_freq(model):
    head_dim = model.config.head_dim
    theta = model.config.rope_parameters["rope_theta"]
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)


def check_llama3_bands(model):
    """Print how the llama3 rope treats each frequency; all three bands must be non-empty."""
    rope = model.config.rope_parameters
    wavelengths = 2 * math.pi / default_inv_freq(model)
    high = rope["original_max_position_embeddings"] / rope["high_freq_factor"]
    low = rope["original_max_position_embeddings"] / rope["low_freq_factor"]
    bands = ["kept" if w < high else "scaled" if w > low else "smoothed" for w in wavelengths.tolist()]
    ratios = (model.model.rotary_emb.inv_freq / default_inv_freq(model)).tolist()
    log(f"    llama3 rope bands (wavelength < {high} kept, > {low} scaled): {bands}")
    log(f"    inv_freq / default: {[round(r, 4) for r in ratios]}")
    for band in ("kept", "smoothed", "scaled"):
        assert band in bands, f"no {band} frequency in llama3 rope"


def check_yarn_ramp(model):
    ratios = (model.model.rotary_emb.inv_freq / default_inv_freq(model)).tolist()
    factor = model.config.rope_parameters["factor"]
    log(f"    yarn inv_freq / default: {[round(r, 4) for r in ratios]}, attention scaling {model.model.rotary_emb.attention_scaling:.4f}")
    assert any(abs(r - 1) < 1e-6 for r in ratios), "no extrapolated frequency"
    assert any(abs(r - 1 / factor) < 1e-6 for r in ratios), "no interpolated frequency"
    assert any(1 / factor + 1e-6 < r < 1 - 1e-6 for r in ratios), "no ramped frequency"


def check_layer_types(expected):
    def check(model):
        log(f"    layer_types: {model.config.layer_types}, sliding_window: {model.config.sliding_window}")
        assert model.config.layer_types == expected, model.config.layer_types

    return check


# --------------------------------------------------------------------------------------------
# Accepted cases


@dataclass
class Case:
    name: str
    family: str
    what: str
    config: dict
    disk_dtype: str = "float32"
    sharded: bool = False
    # For "v4": rope key name inside rope_scaling, and extra config.json edits.
    v4_rope_type_key: str | None = None
    v4_overrides: dict = field(default_factory=dict)
    ablations: list = field(default_factory=list)
    expect_same: tuple = ()
    check: Callable | None = None
    # Applied to the float32 model before saving, to make a setting's effect larger.
    tweak: Callable | None = None

    @property
    def config_layout(self):
        return "v4" if self.v4_rope_type_key else "v5"


LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}

def is_bias(name):
    return name.endswith(".bias")


CASES = [
    Case(
        "llama2", "llama",
        "Llama 2 style: MHA, default rope theta 10000, untied lm_head, silu, float32",
        dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        ablations=[("lm_head tied to embeddings", lm_head_tied), ("rope_theta 500000", with_rope_theta(500000.0))],
    ),
    Case(
        "llama3", "llama",
        "Llama 3 style: rope_theta 500000, GQA 2 kv heads of 4, bfloat16 on disk",
        dict(num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
        disk_dtype="bfloat16",
        ablations=[("rope_theta (10000 instead of 500000)", with_rope_theta(10000.0))],
    ),
    Case(
        "llama31_instruct", "llama",
        "Llama 3.1 style: llama3 rope (factor 8, low 1, high 4, original 64: kept, smoothed and scaled bands), "
        "eos_token_id a list of 3, bfloat16",
        dict(
            num_key_value_heads=2, max_position_embeddings=256, rope_parameters=dict(LLAMA3_ROPE),
            bos_token_id=249, eos_token_id=[250, 251, 252],
        ),
        disk_dtype="bfloat16",
        ablations=[("llama3 rope scaling", with_default_rope)],
        check=check_llama3_bands,
    ),
    Case(
        "llama32_tied", "llama",
        "Llama 3.2 style: tied embeddings (no lm_head.weight on disk), llama3 rope factor 32, bfloat16, 3+ shards",
        dict(
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
            rope_parameters={**LLAMA3_ROPE, "factor": 32.0},
        ),
        disk_dtype="bfloat16", sharded=True,
        ablations=[("llama3 rope scaling", with_default_rope)],
        check=check_llama3_bands,
    ),
    Case(
        "llama_linear_v4", "llama",
        "linear rope factor 4, config.json in the transformers-4 layout (rope_theta + rope_scaling with \"type\")",
        dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}),
        v4_rope_type_key="type",
        ablations=[("linear rope scaling", with_default_rope)],
    ),
    Case(
        "llama_dynamic", "llama",
        "dynamic NTK rope factor 2; all positions stay below max_position_embeddings, where transformers "
        "uses the unscaled frequencies (so the logits equal default rope)",
        dict(rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}),
        ablations=[("dynamic rope scaling", with_default_rope)],
        expect_same=("dynamic rope scaling",),
    ),
    Case(
        "llama_yarn", "llama",
        "yarn rope factor 4, original_max_position_embeddings 32 (max 128), default beta_fast/beta_slow, "
        "implied attention factor 0.1*ln(4)+1",
        dict(rope_parameters={
            "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32,
        }),
        ablations=[("yarn rope scaling", with_default_rope), ("yarn attention factor", yarn_attention_factor_one)],
        check=check_yarn_ramp,
    ),
    Case(
        "llama_yarn_attention_factor", "llama",
        "yarn factor 4, original 64 (max 256), explicit attention_factor 0.8, beta_fast 16, beta_slow 2, "
        "transformers-4 layout (rope_scaling with \"rope_type\")",
        dict(
            max_position_embeddings=256,
            rope_parameters={
                "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
                "attention_factor": 0.8, "beta_fast": 16.0, "beta_slow": 2.0,
            },
        ),
        v4_rope_type_key="rope_type",
        ablations=[("yarn rope scaling", with_default_rope), ("attention_factor and betas", yarn_defaults)],
        check=check_yarn_ramp,
    ),
    Case(
        "llama_bias_gelu", "llama",
        "attention_bias (q, k, v and o biases), mlp_bias (gate, up, down biases), hidden_act gelu (erf)",
        dict(attention_bias=True, mlp_bias=True, hidden_act="gelu"),
        ablations=[
            ("attention biases", zero_params(lambda n: "self_attn" in n and n.endswith(".bias"))),
            ("o_proj bias", zero_params(lambda n: n.endswith("o_proj.bias"))),
            ("mlp biases", zero_params(lambda n: "mlp" in n and n.endswith(".bias"))),
            ("gelu (silu instead)", with_config(hidden_act="silu")),
        ],
    ),
    Case(
        "llama_head_dim_tanh", "llama",
        "explicit head_dim 24 (hidden 64 / 4 heads would be 16), hidden_act gelu_pytorch_tanh (gate, up "
        "and lm_head weights scaled up so the tanh approximation shows), float16 on disk",
        dict(head_dim=24, hidden_act="gelu_pytorch_tanh"),
        disk_dtype="float16",
        ablations=[("tanh approximation (erf gelu instead)", with_config(hidden_act="gelu"))],
        tweak=amplify_activation_effects,
    ),
    Case(
        "qwen2", "qwen2",
        "Qwen2: q/k/v biases (no o bias), rope_theta 1e6, tied embeddings, GQA, float32, transformers-5 layout",
        dict(
            num_key_value_heads=2, tie_word_embeddings=True, bos_token_id=None, eos_token_id=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        ablations=[("q/k/v biases", zero_params(is_bias)), ("rope_theta (10000 instead of 1e6)", with_rope_theta(10000.0))],
    ),
    Case(
        "qwen25_v4", "qwen2",
        "Qwen2.5 style transformers-4 layout: top-level rope_theta 1e6, rope_scaling null, use_sliding_window "
        "false with sliding_window 32768 and max_window_layers 1, untied, bfloat16",
        dict(
            num_key_value_heads=2, bos_token_id=3, eos_token_id=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        disk_dtype="bfloat16",
        v4_rope_type_key="type",
        v4_overrides={"use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 1},
        ablations=[("rope_theta (10000 instead of 1e6)", with_rope_theta(10000.0))],
        check=check_layer_types(["full_attention", "full_attention"]),
    ),
    Case(
        "qwen2_sliding", "qwen2",
        "Qwen2 use_sliding_window true, sliding_window 4, max_window_layers 1: layer 0 full, layer 1 sliding",
        dict(
            num_key_value_heads=2, bos_token_id=None, use_sliding_window=True, sliding_window=4, max_window_layers=1,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        ablations=[("sliding window", with_config(use_sliding_window=False, sliding_window=None, layer_types=None))],
        check=check_layer_types(["full_attention", "sliding_attention"]),
    ),
    Case(
        "qwen3", "qwen3",
        "Qwen3: head_dim 32 (not 64/4), q_norm/k_norm with non-unit weights, GQA, bfloat16, 3+ shards",
        dict(
            num_key_value_heads=2, head_dim=32, bos_token_id=None,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        disk_dtype="bfloat16", sharded=True,
        ablations=[("q_norm/k_norm", qk_norm_removed), ("q_norm/k_norm weights", qk_norm_weights_ones)],
    ),
    Case(
        "qwen3_attention_bias", "qwen3",
        "Qwen3 with attention_bias true (q, k, v and o biases), tied embeddings",
        dict(
            num_key_value_heads=2, head_dim=32, bos_token_id=None, attention_bias=True, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        ablations=[("attention biases", zero_params(is_bias)), ("o_proj bias", zero_params(lambda n: n.endswith("o_proj.bias")))],
    ),
    Case(
        "mistral", "mistral",
        "Mistral: sliding_window 5 on every layer (prompts are longer), explicit head_dim 32, GQA, float32",
        dict(num_key_value_heads=2, head_dim=32, sliding_window=5,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        ablations=[("sliding window", with_config(sliding_window=None))],
    ),
    Case(
        "rms_eps", "llama",
        "Llama with rms_norm_eps 1e-2 (large enough that using 1e-6 shows)",
        dict(rms_norm_eps=1e-2),
        ablations=[("rms_norm_eps (1e-6 instead)", with_config(rms_norm_eps=1e-6))],
    ),
]


def write_case(case, index, out_dir):
    directory = os.path.join(out_dir, case.name)
    expected_class = FAMILIES[case.family][1]
    for attempt in range(MAX_ATTEMPTS):
        seed = 1000 * (index + 1) + attempt
        model = build_model(case.family, case.config, seed)
        if case.tweak:
            case.tweak(model)
        save_model(model, directory, case.disk_dtype, case.sharded)
        reloaded = reload_model(directory, expected_class)
        if case.v4_rope_type_key:
            v5_logits = [single_forward(reloaded, ids) for ids in make_prompts(seed)[0]]
            config_path = os.path.join(directory, "config.json")
            write_json(config_path, to_v4_layout(read_json(config_path), case.v4_rope_type_key, case.v4_overrides), indent=2)
            reloaded = reload_model(directory, expected_class)
            v4_logits = [single_forward(reloaded, ids) for ids in make_prompts(seed)[0]]
            for a, b in zip(v5_logits, v4_logits):
                assert torch.equal(a, b), f"{case.name}: v4 layout reloads to different logits"
        reference = compute_reference(reloaded, seed)
        if reference["min_margin"] >= MIN_MARGIN:
            break
        log(f"  {case.name}: seed {seed} has min margin {reference['min_margin']:.2g}, retrying")
    else:
        raise RuntimeError(f"{case.name}: no seed with a greedy margin of at least {MIN_MARGIN}")

    log(f"  {case.name}: seed {seed}, min margin {reference['min_margin']:.4f}, rope {reloaded.config.rope_parameters}")
    if case.sharded:
        shards = [f for f in os.listdir(directory) if f.endswith(".safetensors")]
        assert len(shards) >= 3 and os.path.exists(os.path.join(directory, "model.safetensors.index.json")), shards
        log(f"    {len(shards)} shards")
    if case.check:
        case.check(reloaded)
    run_ablations(case, reloaded, reference)
    reference["batch"]["bf16_logits"] = bf16_batch_logits(reloaded, reference["batch"]["prompts"])
    write_json(os.path.join(directory, "reference.json"), reference)
    return {
        "name": case.name,
        "dir": case.name,
        "family": case.family,
        "disk_dtype": case.disk_dtype,
        "sharded": case.sharded,
        "config_layout": case.config_layout,
        "what": case.what,
    }


# --------------------------------------------------------------------------------------------
# Refusals: valid checkpoints with exactly one unsupported thing


def edit_config(**changes):
    def edit(directory):
        path = os.path.join(directory, "config.json")
        config = read_json(path)
        config.update(changes)
        write_json(path, config, indent=2)

    return edit


def add_tensors(make_tensors):
    def edit(directory):
        path = os.path.join(directory, "model.safetensors")
        tensors = load_file(path)
        tensors.update(make_tensors())
        save_file(tensors, path, metadata={"format": "pt"})

    return edit


def qwen3_norm_tensors():
    return {
        f"model.layers.{i}.self_attn.{norm}.weight": 1.0 + 0.1 * torch.randn(16)
        for i in range(BASE_CONFIG["num_hidden_layers"])
        for norm in ("q_norm", "k_norm")
    }


QWEN2_SLIDING = dict(use_sliding_window=True, sliding_window=4, max_window_layers=1, bos_token_id=None)

REFUSALS = [
    ("rope_longrope", "llama", {}, edit_config(rope_parameters={
        "rope_type": "longrope", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32,
        "short_factor": [1.0] * 8, "long_factor": [1.5] * 8}),
     ["rope_type", "longrope"], "rope_parameters of type longrope"),
    ("hidden_act_relu2", "llama", {}, edit_config(hidden_act="relu2"),
     ["hidden_act", "relu2"], "hidden_act relu2 (ACT2FN knows it; the decoder does not)"),
    ("unknown_field", "llama", {}, edit_config(my_new_field=3),
     ["my_new_field", "3"], "an unknown top-level config field"),
    ("quantized", "llama", {}, edit_config(quantization_config={"quant_method": "bitsandbytes"}),
     ["quantization_config"], "a quantization_config (bitsandbytes)"),
    ("model_type_gemma", "llama", {}, edit_config(model_type="gemma"),
     ["model_type", "gemma"], "model_type gemma with Llama weights and architectures"),
    ("extra_tensor", "llama", {}, add_tensors(lambda: {"model.layers.0.self_attn.extra_proj.weight": torch.randn(64, 64)}),
     ["model.layers.0.self_attn.extra_proj.weight"], "an extra tensor in model.safetensors"),
    ("partial_rotary", "llama", {}, edit_config(partial_rotary_factor=0.5),
     ["partial_rotary_factor", "0.5"], "top-level partial_rotary_factor 0.5"),
    ("attention_dropout", "llama", {}, edit_config(attention_dropout=0.1),
     ["attention_dropout", "0.1"], "attention_dropout 0.1"),
    ("yarn_unknown_key", "llama", {}, edit_config(rope_parameters={
        "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32, "mystery": 1}),
     ["mystery"], "yarn rope_parameters with an unknown key"),
    ("llama_with_q_norm", "llama", {}, add_tensors(qwen3_norm_tensors),
     ["q_norm"], "model_type llama with Qwen3 q_norm/k_norm tensors"),
    ("sliding_window_zero", "qwen2", QWEN2_SLIDING, edit_config(sliding_window=0),
     ["sliding_window", "0"], "Qwen2 use_sliding_window true with sliding_window 0"),
    ("chunked_layer_type", "qwen2", QWEN2_SLIDING, edit_config(layer_types=["full_attention", "chunked_attention"]),
     ["layer_types", "chunked_attention"], "Qwen2 layer_types with an unknown kind chunked_attention"),
]


def transformers_verdict(directory):
    """How transformers itself treats the refused checkpoint (for information only)."""
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
        )
    except Exception as error:  # noqa: BLE001 - any failure is the answer here
        return f"fails: {type(error).__name__}: {str(error).splitlines()[0][:150]}"
    problems = {k: v for k, v in info.items() if v}
    return f"loads as {type(model).__name__}" + (f" with {problems}" if problems else "")


def write_refusals(out_dir):
    entries = []
    for index, (name, family, config, edit, must_mention, what) in enumerate(REFUSALS):
        directory = os.path.join(out_dir, "refusals", name)
        model = build_model(family, {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, **config}, 9000 + index)
        save_model(model, directory)
        torch.manual_seed(9500 + index)
        edit(directory)
        log(f"  refusal {name}: transformers {transformers_verdict(directory)}")
        entries.append({"name": name, "dir": f"refusals/{name}", "must_mention": must_mention, "what": what})
    return entries
