#!/usr/bin/env bash
# The GRPO recipe against TRL's GRPOTrainer, same task, same model, same warm start, same
# settings, on this machine, one run at a time.
#
# 1. Installs TRL 1.16 with torch 2.15 (CPU use) into a cached venv outside the checkout
#    (scripts/python_env.sh, keyed by benches/trl/requirements.txt).
# 2. Builds the recipe and the report (release).
# 3. For each seed: runs `grpo_arithmetic` (it makes and saves its warm start), then TRL from that
#    very warm start (benches/trl/grpo_trl.py: the same Qwen2-shaped checkpoint, tokenizer and 500
#    held-out problems), then each `--variant` of the recipe from the same warm start.
# 4. Prints one table per seed (held-out success at every evaluation against steps and against
#    seconds, warm start included; seconds per step; completion tokens per second; how soon each
#    troupe run reaches TRL's final success), writes it as JSON and draws the curves as a PNG.
#
# Settings both sides share: 32 prompts x 8 samples per step, 200 steps, temperature 1, no top-k
# or top-p, at most 6 new tokens, PPO clip 0.2 with one update per batch, k3 KL to the warm
# start at 0.01, token-mean loss over the whole batch, group advantages (r - mean) / std,
# AdamW (0.9, 0.999, no weight decay) at 2e-4 with a cosine decay to 5%, gradient norm clipped
# at 1, fp32, two CPU threads in all, held-out success measured greedily every 10 steps.
# Settings that cannot match exactly, and why:
# - the warm start is troupe's (saved by the first run), not one TRL trains: only a shared start
#   makes seeds comparable one by one; its seconds are counted on both clocks;
# - the training problems come from the same distribution minus the same held-out set, drawn
#   by each side's own generator (Python's `random` cannot reproduce troupe's draws cheaply);
#   sampling randomness differs for the same reason;
# - TRL adds 1e-4 to the group std; troupe gives a flat group exactly zero advantage;
# - troupe runs its roles as 7 actor processes (2 rollouts, 2 data-parallel trainers, a
#   reference, a reward actor, a prompt source) sharing the two cores; TRL runs one process with
#   two torch threads;
# - each clock starts at the run's step-0 evaluation (plus the warm start's seconds): start-up
#   (cluster spawn; Python imports and model load) is left out on both sides.
#
# Usage: benches/compare_trl.sh [--seeds "0 1 2"] [--steps 200] [--json PATH] [--png PATH]
#        [--work DIR] [--variant LABEL='RECIPE FLAGS']...
# (a variant's flags are split at spaces: no flag value may contain one)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
seeds="0 1 2"
steps=200
work="$repo/target/compare_trl"
json=""
png=""
variants=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds|--steps|--json|--png|--work|--variant)
      if [ $# -lt 2 ]; then echo "compare_trl.sh: $1 needs a value" >&2; exit 2; fi ;;
  esac
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --json) json="$(realpath -m "$2")"; shift 2 ;;
    --png) png="$(realpath -m "$2")"; shift 2 ;;
    --work) work="$(realpath -m "$2")"; shift 2 ;;
    --variant)
      label="${2%%=*}"
      if [[ "$2" != *=* ]] || ! [[ "$label" =~ ^[A-Za-z0-9_-]+$ ]] \
        || [ "$label" = troupe ] || [[ "$label" == trl* ]]; then
        echo "compare_trl.sh: --variant wants LABEL='FLAGS' with LABEL of letters, digits, _ or -," \
          "neither 'troupe' nor starting with 'trl'; got $2" >&2
        exit 2
      fi
      variants+=("$2")
      shift 2 ;;
    *) echo "compare_trl.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
json="${json:-$work/compare_trl.json}"
png="${png:-$work/compare_trl.png}"
mkdir -p "$work"

python="$(bash "$repo/scripts/python_env.sh" trl "$repo/benches/trl/requirements.txt")"
echo "== building the recipe and the report"
(cd "$repo" && cargo build --release -q -p troupe-actors --example grpo_arithmetic --example compare_trl)
recipe="$repo/target/release/examples/grpo_arithmetic"

runs=()
for seed in $seeds; do
  dir="$work/seed$seed"
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "== seed $seed: troupe grpo_arithmetic (makes the warm start)"
  "$recipe" --seed "$seed" --steps "$steps" --out "$dir/troupe" --json "$dir/troupe.json" \
    > "$dir/troupe.log" 2>&1 || { tail -20 "$dir/troupe.log"; exit 1; }
  grep -E "held-out success|warm start / GRPO" "$dir/troupe.log" || true
  runs+=(--run "troupe:$seed:$dir/troupe.json")
  echo "== seed $seed: TRL GRPOTrainer from the same warm start"
  OMP_NUM_THREADS=2 timeout 3600 "$python" "$repo/benches/trl/grpo_trl.py" \
    --warm-start "$dir/troupe/warm_start" --seed "$seed" --steps "$steps" --threads 2 \
    --out "$dir/trl.json" > "$dir/trl.log" 2>&1 || { tail -20 "$dir/trl.log"; exit 1; }
  tail -1 "$dir/trl.log"
  runs+=(--run "trl:$seed:$dir/trl.json")
  for variant in ${variants[@]+"${variants[@]}"}; do
    label="${variant%%=*}"
    read -r -a flags <<< "${variant#*=}"
    echo "== seed $seed: troupe $label (${flags[*]}) from the same warm start"
    "$recipe" --seed "$seed" --steps "$steps" --warm-start-from "$dir/troupe/warm_start" \
      --out "$dir/$label" --json "$dir/$label.json" "${flags[@]}" > "$dir/$label.log" 2>&1 \
      || { tail -20 "$dir/$label.log"; exit 1; }
    runs+=(--run "$label:$seed:$dir/$label.json")
  done
done

"$repo/target/release/examples/compare_trl" "${runs[@]}" --json "$json" --png "$png"
