"""More accepted cases for the parity references: configurations users bring that CASES lacks.

Declared exactly like model_cases.CASES (a `Case` each, with its ablations) and appended after it
by make_references.py, so the seeds and directories of the earlier cases do not change and the
manifest keeps one "cases" list.
"""

import math

from model_cases import (
    Case,
    amplify_activation_effects,
    check_layer_types,
    default_inv_freq,
    is_bias,
    qk_norm_weights_ones,
    rebuild,
    with_config,
    with_default_rope,
    with_rope_theta,
    zero_params,
)
from references import log

# --------------------------------------------------------------------------------------------
# Ablations and checks these cases need beyond those of model_cases


def yarn_without(*keys):
    """The same yarn rope with `keys` dropped from rope_parameters (so their defaults apply)."""

    def ablate(model):
        rope = {k: v for k, v in model.config.rope_parameters.items() if k not in keys}
        return rebuild(model, rope_parameters=rope)

    return ablate


def yarn_factor(factor):
    return lambda model: rebuild(model, rope_parameters={**model.config.rope_parameters, "factor": factor})


def check_yarn(expected_attention_scaling):
    """The yarn ramp (factor null means max_position_embeddings / original) and its attention scaling."""

    def check(model):
        rope = model.config.rope_parameters
        factor = rope["factor"] or model.config.max_position_embeddings / rope["original_max_position_embeddings"]
        ratios = (model.model.rotary_emb.inv_freq / default_inv_freq(model)).tolist()
        scaling = model.model.rotary_emb.attention_scaling
        log(f"    yarn factor {rope['factor']} (used {factor}), inv_freq / default: {[round(r, 4) for r in ratios]}, "
            f"attention scaling {scaling:.6f}")
        assert any(abs(r - 1) < 1e-6 for r in ratios), "no extrapolated frequency"
        assert any(abs(r - 1 / factor) < 1e-6 for r in ratios), "no interpolated frequency"
        assert any(1 / factor + 1e-6 < r < 1 - 1e-6 for r in ratios), "no ramped frequency"
        assert math.isclose(scaling, expected_attention_scaling, rel_tol=1e-9), scaling

    return check


def mscale(factor, m):
    return 0.1 * m * math.log(factor) + 1.0


# --------------------------------------------------------------------------------------------
# The cases

MORE_CASES = [
    Case(
        "qwen2_head_dim", "qwen2",
        "Qwen2 with an explicit head_dim 48 in config.json (hidden 64 / 4 heads would be 16; Qwen2Config has "
        "no head_dim field, Qwen2Attention reads it with getattr), GQA 2 of 4, q/k/v biases",
        dict(
            num_key_value_heads=2, head_dim=48, bos_token_id=None,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        ablations=[("q/k/v biases", zero_params(is_bias)), ("rope_theta (10000 instead of 1e6)", with_rope_theta(10000.0))],
    ),
    Case(
        "qwen3_sliding", "qwen3",
        "Qwen3 use_sliding_window true, sliding_window 3, max_window_layers 1: layer 0 full, layer 1 sliding",
        dict(
            num_key_value_heads=2, head_dim=32, bos_token_id=None,
            use_sliding_window=True, sliding_window=3, max_window_layers=1,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        ablations=[("sliding window", with_config(use_sliding_window=False, sliding_window=None, layer_types=None))],
        check=check_layer_types(["full_attention", "sliding_attention"]),
    ),
    Case(
        "mistral_full_attention", "mistral",
        "Mistral with sliding_window null (full attention on every layer), GQA 4:1 (8 heads, 2 kv heads, "
        "hidden 128), bfloat16 on disk",
        dict(
            hidden_size=128, intermediate_size=224, num_attention_heads=8, num_key_value_heads=2,
            sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        disk_dtype="bfloat16",
        ablations=[("full attention (a window of 4 instead)", with_config(sliding_window=4))],
    ),
    Case(
        "llama_dynamic_v4", "llama",
        "dynamic NTK rope factor 2 in the transformers-4 layout (rope_scaling {\"type\": \"dynamic\"}, "
        "top-level rope_theta 500000); positions stay below max_position_embeddings, so the frequencies "
        "are the unscaled ones",
        dict(rope_parameters={"rope_type": "dynamic", "rope_theta": 500000.0, "factor": 2.0}),
        v4_rope_type_key="type",
        ablations=[
            ("dynamic rope scaling", with_default_rope),
            ("rope_theta (10000 instead of 500000)", with_rope_theta(10000.0)),
        ],
        expect_same=("dynamic rope scaling",),
    ),
    Case(
        "llama_yarn_mscale", "llama",
        "yarn with factor null (so max_position_embeddings 128 / original 32 = 4), mscale 1.0 and "
        "mscale_all_dim 0.8 (attention factor (0.1*ln4+1)/(0.08*ln4+1))",
        dict(rope_parameters={
            "rope_type": "yarn", "rope_theta": 10000.0, "factor": None, "original_max_position_embeddings": 32,
            "mscale": 1.0, "mscale_all_dim": 0.8,
        }),
        ablations=[
            ("yarn rope scaling", with_default_rope),
            ("mscale/mscale_all_dim", yarn_without("mscale", "mscale_all_dim")),
            ("factor null (2 instead of max/original)", yarn_factor(2.0)),
        ],
        check=check_yarn(mscale(4.0, 1.0) / mscale(4.0, 0.8)),
    ),
    Case(
        "llama_yarn_deepseek", "llama",
        "DeepSeek-style yarn: factor 4, original 64 (max 256), mscale = mscale_all_dim = 0.707 (attention "
        "factor exactly 1), truncate false (unrounded correction range), transformers-4 layout, bfloat16",
        dict(
            max_position_embeddings=256,
            rope_parameters={
                "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
                "mscale": 0.707, "mscale_all_dim": 0.707, "truncate": False,
            },
        ),
        disk_dtype="bfloat16",
        v4_rope_type_key="type",
        ablations=[
            ("yarn rope scaling", with_default_rope),
            ("mscale/mscale_all_dim", yarn_without("mscale", "mscale_all_dim")),
            ("truncate false", yarn_without("truncate")),
        ],
        check=check_yarn(1.0),
    ),
    Case(
        "llama_quick_gelu", "llama",
        "hidden_act quick_gelu (x * sigmoid(1.702 x))",
        dict(hidden_act="quick_gelu"),
        ablations=[("quick_gelu (erf gelu instead)", with_config(hidden_act="gelu"))],
    ),
    Case(
        "llama_relu", "llama",
        "hidden_act relu, untied, float16 on disk",
        dict(hidden_act="relu"),
        disk_dtype="float16",
        ablations=[("relu (silu instead)", with_config(hidden_act="silu"))],
    ),
    Case(
        "llama_gelu_new", "llama",
        "hidden_act gelu_new (the tanh approximation under its GPT-2 name; gate, up and lm_head weights "
        "scaled up so it shows against erf gelu)",
        dict(hidden_act="gelu_new"),
        ablations=[("tanh approximation (erf gelu instead)", with_config(hidden_act="gelu"))],
        tweak=amplify_activation_effects,
    ),
    Case(
        "llama_head_dim_128", "llama",
        "Llama 3 8B-like head shape: head_dim 128 (hidden 256, 2 heads), rope_theta 1e6, 3 layers",
        dict(
            hidden_size=256, intermediate_size=384, num_hidden_layers=3, num_attention_heads=2,
            num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        ablations=[("rope_theta (10000 instead of 1e6)", with_rope_theta(10000.0))],
    ),
    Case(
        "qwen3_v4_tied", "qwen3",
        "Qwen3 as on the Hub: transformers-4 layout (rope_theta 1e6, rope_scaling null, use_sliding_window "
        "false, sliding_window null, max_window_layers 28), tied embeddings, eos_token_id a list [2, 250], "
        "bfloat16",
        dict(
            num_key_value_heads=2, head_dim=32, bos_token_id=None, eos_token_id=[2, 250], tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        disk_dtype="bfloat16",
        v4_rope_type_key="type",
        v4_overrides={"use_sliding_window": False, "sliding_window": None, "max_window_layers": 28},
        ablations=[
            ("q_norm/k_norm weights", qk_norm_weights_ones),
            ("rope_theta (10000 instead of 1e6)", with_rope_theta(10000.0)),
        ],
        check=check_layer_types(["full_attention", "full_attention"]),
    ),
    Case(
        "llama_mqa_bias", "llama",
        "multi-query attention (num_key_value_heads 1 of 4) with attention_bias (q, k, v and o biases)",
        dict(num_key_value_heads=1, attention_bias=True),
        ablations=[
            ("attention biases", zero_params(is_bias)),
            ("k/v biases", zero_params(lambda n: n.endswith(("k_proj.bias", "v_proj.bias")))),
            ("o_proj bias", zero_params(lambda n: n.endswith("o_proj.bias"))),
        ],
    ),
]
