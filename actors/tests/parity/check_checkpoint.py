"""Load a checkpoint written by the Rust side with transformers and report what transformers computes.

Usage:
    OMP_NUM_THREADS=2 python check_checkpoint.py CHECKPOINT_DIR INPUT_JSON OUTPUT_JSON

CHECKPOINT_DIR holds config.json, model.safetensors (or shards with an index), tokenizer.json and
tokenizer_config.json. INPUT_JSON is {"texts": [str, ...]}. The model is loaded with
AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float32, attn_implementation="eager") and the
tokenizer with AutoTokenizer.from_pretrained(dir). OUTPUT_JSON receives

    {"model_class": str, "tokenizer_class": str,
     "ids": [[int, ...] per text],          # encode(text, add_special_tokens=False)
     "logits": [[[float] * vocab] * len(ids) per text],  # one unpadded forward per text
     "decoded": [str per text]}             # decode(ids, skip_special_tokens=True)

It exits non-zero with a message if loading reports missing, unexpected or mismatched tensors, or if
a text encodes to an id the model's vocabulary does not have.
"""

import json
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def fail(message):
    sys.exit(f"check_checkpoint: {message}")


def load_model(directory):
    model, info = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    problems = {
        kind: sorted(info.get(kind) or [])
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
        if info.get(kind)
    }
    if problems:
        fail(f"loading {directory} reported {problems}")
    return model.eval()


@torch.no_grad()
def logits_for(model, ids):
    if not ids:
        return []
    input_ids = torch.tensor([ids])
    positions = torch.arange(len(ids)).unsqueeze(0)
    return model(input_ids=input_ids, position_ids=positions, use_cache=False).logits[0].float().tolist()


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    directory, input_path, output_path = sys.argv[1:]
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    with open(input_path, encoding="utf-8") as f:
        texts = json.load(f)["texts"]
    model = load_model(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    vocab_size = model.config.get_text_config().vocab_size

    result = {
        "model_class": type(model).__name__,
        "tokenizer_class": type(tokenizer).__name__,
        "ids": [],
        "logits": [],
        "decoded": [],
    }
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        too_large = [i for i in ids if i >= vocab_size]
        if too_large:
            fail(f"{text!r} encodes to ids {too_large} outside the model's vocabulary of {vocab_size}")
        result["ids"].append(ids)
        result["logits"].append(logits_for(model, ids))
        result["decoded"].append(tokenizer.decode(ids, skip_special_tokens=True))

    with open(output_path, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
