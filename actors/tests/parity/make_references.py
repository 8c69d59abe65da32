"""Write tiny random-weight checkpoints and their reference outputs, made by transformers itself.

Usage:
    OMP_NUM_THREADS=2 python make_references.py OUT_DIR

Runs on CPU in well under two minutes and is deterministic. It writes into OUT_DIR:

* one directory per accepted case: a checkpoint saved with `save_pretrained` (config.json,
  model.safetensors or shards with model.safetensors.index.json, generation_config.json) and a
  reference.json holding logits and greedy continuations computed by transformers;
* refusals/<name>/: checkpoints that each hold exactly one thing the Rust decoder must refuse;
* tokenizers/<name>/: tokenizer.json, tokenizer_config.json and expected.json (encode, decode and
  chat-template results from transformers);
* manifest.json listing all of the above.

Every model is built in float32, optionally cast to bfloat16 or float16 for the file on disk, then
reloaded with `AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float32,
attn_implementation="eager")`; all references come from that reloaded float32 model, so they hold
for the weights exactly as stored. Each case also runs "ablations": the same weights with the
case's special setting ignored, which must change the logits (so a decoder that ignores the setting
fails the comparison).

reference.json:
    {"single": [{"ids": [int], "logits": [[float] * vocab] * len(ids), "greedy": [16 ints]}, x2],
     "batch": {"prompts": [[int], x3], "logits": [per prompt: [[float] * vocab] * len(prompt)],
               "greedy": [[16 ints] per prompt], "bf16_logits": as "logits", the model run in bf16},
     "min_margin": float, "seed": int}
Single prompts run unpadded with positions 0..len-1. The batch runs left-padded (pad id 0) with an
attention mask and position_ids = cumsum(mask) - 1, padded slots set to 1 (as generate() does);
its logits are those at the real positions. Greedy: 16 full forwards without a cache, argmax of
the last position each time, never stopping at EOS. min_margin is the smallest gap between the top
two logits over all greedy steps; a seed whose margin is below 1e-3 is replaced by the next one.

manifest.json:
    {"transformers_version", "torch_version",
     "cases": [{"name", "dir", "family", "disk_dtype", "sharded", "config_layout", "what"}],
     "refusals": [{"name", "dir", "must_mention", "what"}],
     "tokenizers": [{"name", "dir"}]}

tokenizers/<name>/expected.json:
    {"encode": [{"text", "add_special_tokens", "ids"}], "decode": [{"ids", "skip_special_tokens", "text"}],
     "chat": [{"messages", "add_generation_prompt", "tools", "text", "messages_json", "tools_json"}],
     "bos_token", "eos_token", "pad_token"}
"""

import os
import sys
import time

import torch
import transformers

# Run as a script from any directory: the sibling modules live next to this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from extra_cases import write_extra_cases  # noqa: E402
from model_cases import CASES, write_case, write_refusals  # noqa: E402
from more_cases import MORE_CASES  # noqa: E402
from references import log, write_json  # noqa: E402
from tokenizer_cases import TOKENIZER_SPECS, write_tokenizer  # noqa: E402


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    # The models are tiny: extra threads only spin and slow things down when the CPUs are busy.
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    started = time.time()

    log("cases:")
    # MORE_CASES go after CASES, so every case keeps its index (and so its seeds).
    all_cases = CASES + MORE_CASES
    assert len({case.name for case in all_cases}) == len(all_cases), "two cases share a name"
    cases = [write_case(case, index, out_dir) for index, case in enumerate(all_cases)]
    log("extra cases:")
    extra = write_extra_cases(out_dir)
    log("refusals:")
    refusals = write_refusals(out_dir)
    log("tokenizers:")
    tokenizers = [write_tokenizer(name, out_dir) for name in TOKENIZER_SPECS]

    manifest = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "cases": cases,
        "extra_cases": extra,
        "refusals": refusals,
        "tokenizers": tokenizers,
    }
    write_json(os.path.join(out_dir, "manifest.json"), manifest, indent=2)
    log(f"wrote {len(cases)} cases, {len(refusals)} refusals, {len(tokenizers)} tokenizers "
        f"to {out_dir} in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
