"""TRL's GRPOTrainer on the GRPO recipe's task, from the recipe's own warm start, on CPU.

Usage:
    python grpo_trl.py --warm-start DIR --seed S --out JSON [--steps 200] [--batch 32]
        [--group-size 8] [--lr 2e-4] [--lr-floor 0.05] [--kl-coef 0.01] [--eval-every 10]
        [--threads 2]

DIR is the `warm_start/` directory a `grpo_arithmetic` run leaves (its `--out`): the policy as a
Hugging Face checkpoint with its tokenizer, `warm_start.json` (the task and seed it was made for)
and `heldout.jsonl` (the 500 held-out problems, prompt and reference). The task is three-digit
addition with both operands and the sum written least-significant digit first (`321+954=`
answered `285`); training problems are drawn here with the run's seed, never from the held-out
set. Rewards are the recipe's: 1.0 for the exact answer, 0.1 for an answer made of digits only.

Held-out success is measured greedily on all held-out problems (an answer is right when it
equals the reference exactly, as the recipe judges it) before the first step and every
`--eval-every` steps; each point records the step and the seconds since training started
(evaluations included, as in the recipe). Every step's TRL figures (reward, KL, entropy, clip
ratios, share of groups without signal, step seconds) are kept. OUT receives all of it as JSON.
"""

import argparse
import json
import random
import time
from pathlib import Path

import torch
import transformers
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

LOW, HIGH = 100, 999


def reversed_digits(number):
    return str(number)[::-1]


def addition(a, b):
    return f"{reversed_digits(a)}+{reversed_digits(b)}=", reversed_digits(a + b)


def read_warm_start(directory):
    record = json.loads((directory / "warm_start.json").read_text())
    task = record["task"]
    if task["name"] != "arithmetic":
        raise SystemExit(f"grpo_trl: the warm start in {directory} is for task {task['name']!r}; "
                         "only `arithmetic` is written here")
    if json.loads(task["params"]) not in (None, {}):
        raise SystemExit(f"grpo_trl: task parameters {task['params']} are not understood here")
    held_out = [json.loads(line) for line in (directory / "heldout.jsonl").read_text().splitlines()]
    if len(held_out) != task["held_out"]:
        raise SystemExit(f"grpo_trl: heldout.jsonl has {len(held_out)} problems, "
                         f"warm_start.json says {task['held_out']}")
    return record, held_out


def training_problems(count, seed, held_out):
    """`count` problems drawn with `seed`, none of them held out."""
    excluded = {problem["prompt"] for problem in held_out}
    rng = random.Random(seed)
    rows = []
    while len(rows) < count:
        prompt, reference = addition(rng.randint(LOW, HIGH), rng.randint(LOW, HIGH))
        if prompt not in excluded:
            rows.append({"prompt": prompt, "reference": reference})
    return rows


def exact_match(completions, reference, **_):
    return [float(c.strip() == r.strip()) for c, r in zip(completions, reference)]


def digits_only(completions, **_):
    return [float(bool(c.strip()) and c.strip().isdigit() and c.strip().isascii()) for c in completions]


@torch.no_grad()
def heldout_accuracy(model, tokenizer, held_out, max_new_tokens, batch=250):
    """Greedy answers to every held-out problem, judged as the recipe judges them."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(held_out), batch):
        chunk = held_out[start:start + batch]
        encoded = tokenizer([tokenizer.bos_token + p["prompt"] for p in chunk], return_tensors="pt",
                            padding=True, padding_side="left", add_special_tokens=False)
        out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        answers = tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
        correct += sum(a == p["reference"] for a, p in zip(answers, chunk))
    if was_training:
        model.train()
    return correct / len(held_out)


class Record(TrainerCallback):
    """Held-out success every `every` steps and each step's logged figures, timed from the start."""

    def __init__(self, tokenizer, held_out, every, max_new_tokens):
        self.tokenizer, self.held_out, self.every = tokenizer, held_out, every
        self.max_new_tokens = max_new_tokens
        self.curve, self.steps = [], []
        self.started = self.last_step = None

    def _measure(self, model, step):
        accuracy = heldout_accuracy(model, self.tokenizer, self.held_out, self.max_new_tokens)
        self.curve.append({"step": step, "seconds": time.perf_counter() - self.started, "accuracy": accuracy})
        print(f"trl step {step}: held-out {accuracy:.1%} at {self.curve[-1]['seconds']:.1f} s", flush=True)

    def on_train_begin(self, args, state, control, model=None, **_):
        self.started = time.perf_counter()
        self._measure(model, 0)
        self.last_step = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **_):
        now = time.perf_counter()
        self.steps.append({"step": state.global_step, "step_s": now - self.last_step})
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._measure(model, state.global_step)
        self.last_step = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **_):
        if logs and self.steps and "reward" in logs:
            self.steps[-1].update({k: v for k, v in logs.items() if isinstance(v, (int, float))})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm-start", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lr-floor", type=float, default=0.05)
    parser.add_argument("--kl-coef", type=float, default=0.01)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=6)
    args = parser.parse_args()

    launched = time.perf_counter()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    record, held_out = read_warm_start(args.warm_start)
    if record["task"]["seed"] != args.seed:
        raise SystemExit(f"grpo_trl: the warm start was made with seed {record['task']['seed']}, not {args.seed}")
    tokenizer = AutoTokenizer.from_pretrained(args.warm_start)
    model = AutoModelForCausalLM.from_pretrained(args.warm_start, dtype=torch.float32)
    rows = training_problems(args.steps * args.batch, args.seed, held_out)
    dataset = Dataset.from_list([{"prompt": tokenizer.bos_token + r["prompt"], "reference": r["reference"]}
                                 for r in rows])
    config = GRPOConfig(
        output_dir=str(args.out.parent / f"trl-seed{args.seed}"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch * args.group_size,
        gradient_accumulation_steps=1,
        num_generations=args.group_size,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=args.kl_coef,
        epsilon=0.2,
        num_iterations=1,
        loss_type="dapo",
        scale_rewards="group",
        reward_weights=[1.0, 0.1],
        learning_rate=args.lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": args.lr_floor},
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=args.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        shuffle_dataset=False,
    )
    recorder = Record(tokenizer, held_out, args.eval_every, args.max_new_tokens)
    trainer = GRPOTrainer(model=model, reward_funcs=[exact_match, digits_only], args=config,
                          train_dataset=dataset, processing_class=tokenizer, callbacks=[recorder])
    setup_s = time.perf_counter() - launched
    trainer.train()
    train_s = time.perf_counter() - recorder.started
    step_s = [s["step_s"] for s in recorder.steps]
    rows_per_step = args.batch * args.group_size
    completion_tokens = sum(s.get("completions/mean_length", 0.0) * rows_per_step for s in recorder.steps)
    result = {
        "framework": "trl",
        "trl_version": __import__("trl").__version__,
        "torch_version": torch.__version__,
        "seed": args.seed,
        "warm_start": str(args.warm_start),
        "heldout_accuracy_start": recorder.curve[0]["accuracy"],
        "heldout_accuracy_final": recorder.curve[-1]["accuracy"],
        "heldout_curve": recorder.curve,
        "steps": len(recorder.steps),
        "setup_s": setup_s,
        "train_s": train_s,
        # As the recipe's `step_s_mean`: the training seconds (evaluations included) per step.
        "step_s_mean": train_s / max(len(recorder.steps), 1),
        "step_s_mean_without_evaluations": sum(step_s) / max(len(step_s), 1),
        "completion_tokens": completion_tokens,
        "completion_tokens_per_s": completion_tokens / train_s,
        "per_step": recorder.steps,
        "settings": {k: v for k, v in vars(args).items() if k not in ("warm_start", "out")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"trl seed {args.seed}: {result['heldout_accuracy_start']:.1%} -> {result['heldout_accuracy_final']:.1%} "
          f"in {train_s:.0f} s ({result['step_s_mean']:.2f} s per step)", flush=True)


if __name__ == "__main__":
    main()
