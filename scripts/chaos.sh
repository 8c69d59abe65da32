#!/usr/bin/env bash
# Chaos run of the GRPO recipe on a real multi-process cluster: a head and three node agents
# (`troupe head`, `troupe node`), the recipe as a driver (`grpo_arithmetic --cluster`), and while
# it runs, SIGKILL of (a) a rollout worker, (b) a trainer worker, (c) a node agent with its
# workers, (d) the head (started again on the same port and data directory), each at its own
# step. Checks that the run finishes every step, still learns (full mode: at least +20 points of
# held-out success), leaves no orphaned process, and prints what each fault cost.
#
# Usage: scripts/chaos.sh [--short] [--keep]
#   --short  a few steps with the debug build (the test command runs this): checks recovery and
#            cleanup, not learning
#   --keep   keep the run's directory (logs, metrics, report) instead of deleting it
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
keep=0
for arg in "$@"; do
  case "$arg" in
    --short) mode=short ;;
    --keep) keep=1 ;;
    *) echo "chaos.sh: unknown argument $arg (expected --short, --keep)" >&2; exit 2 ;;
  esac
done

if [ "$mode" = short ]; then
  profile=debug
  build_flags=()
  recipe_flags=(--steps 14 --batch 4 --group-size 4 --eval-every 7 --warm-start-max-steps 3
                --warm-start-target 1.0 --checkpoint-every 2)
  fault_steps=(3 6 9 12)      # rollout, trainer, node agent, head
  min_gain=""
  limit_s=900
else
  profile=release
  build_flags=(--release)
  recipe_flags=(--checkpoint-every 10)
  fault_steps=(30 70 110 150)
  min_gain=20
  limit_s=2400
fi

echo "== chaos ($mode): building troupe and grpo_arithmetic ($profile)"
cargo build "${build_flags[@]}" -p troupe-cli --bin troupe
cargo build "${build_flags[@]}" -p troupe-actors --example grpo_arithmetic
bin="$PWD/target/$profile"

dir="$(mktemp -d /tmp/troupe-chaos-XXXXXX)"
pids=()
cleanup() {
  # Any failure keeps the logs for a look.
  [ "$?" -ne 0 ] && keep=1
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  pkill -9 -f "$dir" 2>/dev/null || true
  if [ "$keep" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

start_head() {
  local port="$1"
  rm -f "$dir/head.address"
  "$bin/troupe" head --port "$port" --data-dir "$dir/head" --address-file "$dir/head.address" \
    >>"$dir/head.log" 2>&1 &
  head_pid=$!
  disown "$head_pid"
  pids+=("$head_pid")
  for _ in $(seq 1 300); do
    [ -s "$dir/head.address" ] && break
    sleep 0.05
  done
  [ -s "$dir/head.address" ] || { echo "the head did not start; see $dir/head.log" >&2; exit 1; }
}

start_head 0
address="$(head -1 "$dir/head.address")"
port="${address##*:}"
export TROUPE_TOKEN_FILE="$dir/head/token"
node_pids=()
for index in 0 1 2; do
  "$bin/troupe" node --head "$address" --cpus 4 --label "index=$index" \
    --work-dir "$dir/node-$index" >>"$dir/node-$index.log" 2>&1 &
  node_pids+=("$!")
  pids+=("$!")
  disown "$!"
done

status_json() { "$bin/troupe" status --head "$address" --json 2>/dev/null || echo '{}'; }

# Reads the pid (or node) of the live actor whose name ends with $1, waiting (30 s at most) for
# one that is restarting.
actor_field() {
  local value=""
  for _ in $(seq 1 150); do
    value="$(status_json | python3 -c '
import json, sys
suffix, field = sys.argv[1], sys.argv[2]
status = json.load(sys.stdin)
for actor in status.get("actors", []):
    if actor["name"].endswith(suffix) and actor["state"] == "alive" and actor[field]:
        print(actor[field]); break
' "$1" "$2")"
    [ -n "$value" ] && { echo "$value"; return 0; }
    sleep 0.2
  done
  echo "FAILED: no live actor named *$1 (with its $2) within 30 s" >&2
  return 1
}

# The `index` label of node $1.
node_index() {
  status_json | python3 -c '
import json, sys
for node in json.load(sys.stdin).get("nodes", []):
    if node["id"] == sys.argv[1]:
        print(node["resources"]["labels"].get("index", "")); break
' "$1"
}

# The step of the last row of metrics.jsonl (after a recovery that went back, the run's rows
# start again from there; a line still being written is skipped).
steps_done() {
  python3 -c '
import json, sys
step = 0
try:
    for line in open(sys.argv[1]):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "step" in row:
            step = row["step"]
except OSError:
    pass
print(step)
' "$dir/run/metrics.jsonl"
}

wait_for_step() {
  local want="$1"
  while [ "$(steps_done)" -lt "$want" ]; do
    kill -0 "$recipe_pid" 2>/dev/null || {
      echo "FAILED: the recipe ended before step $want; last lines of $dir/recipe.log:" >&2
      tail -20 "$dir/recipe.log" >&2
      return 1
    }
    if [ "$(date +%s)" -gt "$deadline" ]; then
      echo "FAILED: step $want not reached within $limit_s s; see $dir/recipe.log" >&2
      return 1
    fi
    sleep 0.2
  done
}

echo "== chaos: GRPO on a head and 3 node agents ($address); faults at steps ${fault_steps[*]}"
started=$(date +%s.%N)
"$bin/examples/grpo_arithmetic" --cluster "$address" --out "$dir/run" \
  --json "$dir/run/report.json" "${recipe_flags[@]}" >"$dir/recipe.log" 2>&1 &
recipe_pid=$!
pids+=("$recipe_pid")
deadline=$(( $(date +%s) + limit_s ))
faults="$dir/faults.txt"
: >"$faults"

wait_for_step "${fault_steps[0]}"
pid="$(actor_field /rollout-0 pid)"
at="$(steps_done)"
echo "(a) step $at: kill -9 rollout-0's worker (pid $pid)"
kill -9 "$pid"
echo "rollout-worker $at rollout-0" >>"$faults"

wait_for_step "${fault_steps[1]}"
pid="$(actor_field /trainer-1 pid)"
at="$(steps_done)"
echo "(b) step $at: kill -9 trainer-1's worker (pid $pid)"
kill -9 "$pid"
echo "trainer-worker $at trainer-1" >>"$faults"

wait_for_step "${fault_steps[2]}"
node="$(actor_field /reference node)"
index="$(node_index "$node")"
[ -n "$index" ] || { echo "FAILED: node $node has no index label" >&2; exit 1; }
at="$(steps_done)"
echo "(c) step $at: kill -9 node agent $index ($node, the reference's) with its workers"
kill -9 "${node_pids[$index]}"
echo "node-agent $at $node" >>"$faults"
# A replacement node joins, as an autoscaler or a restarted machine would.
"$bin/troupe" node --head "$address" --cpus 4 --label "index=3" \
  --work-dir "$dir/node-3" >>"$dir/node-3.log" 2>&1 &
node_pids+=("$!")
pids+=("$!")
disown "$!"

wait_for_step "${fault_steps[3]}"
at="$(steps_done)"
echo "(d) step $at: kill -9 the head; started again on port $port 2 s later"
kill -9 "$head_pid"
echo "head $at -" >>"$faults"
sleep 2
start_head "$port"

echo "== chaos: waiting for the run to finish"
while kill -0 "$recipe_pid" 2>/dev/null; do
  if [ "$(date +%s)" -gt "$deadline" ]; then
    echo "FAILED: the run did not finish within $limit_s s; see $dir/recipe.log" >&2
    keep=1
    exit 1
  fi
  sleep 1
done
if ! wait "$recipe_pid"; then
  echo "FAILED: the run failed; last lines of $dir/recipe.log:" >&2
  tail -30 "$dir/recipe.log" >&2
  keep=1
  exit 1
fi
ended=$(date +%s.%N)

# Nothing of the run may be left: its actors gone from the head, no worker process alive once
# the node agents stop (workers run from the agents' caches, under $dir).
sleep 1
left="$(status_json | python3 -c '
import json, sys
print(sum(1 for a in json.load(sys.stdin).get("actors", []) if a["state"] != "dead"))')"
for pid in "${node_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
# The agents stop their workers as they exit; give them 10 s, then look for anything left.
for _ in $(seq 1 100); do
  alive=0
  for pid in "${node_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.1
done
sleep 0.5
orphans="$(pgrep -f "$dir/node-" | grep -v "^$$\$" || true)"

python3 - "$dir/run/report.json" "$faults" "$started" "$ended" "$left" "$orphans" "${min_gain:-0}" "$mode" <<'EOF'
import json, sys
report_path, faults_path, started, ended, left, orphans, min_gain, mode = sys.argv[1:9]
report = json.load(open(report_path))
# (kind, the step metrics.jsonl had reached when it was injected, what it killed: a role, or
# the node whose agent died)
faults = [(kind, int(step), what) for kind, step, what in (l.split() for l in open(faults_path) if l.strip())]
events = report["recoveries"]
failed = []
print(f"run: {report['steps']} GRPO steps, held-out {100*report['heldout_accuracy_sft']:.1f}% -> "
      f"{100*report['heldout_accuracy_final']:.1f}% ({report['improvement_points']:+.1f} points), "
      f"{float(ended) - float(started):.0f} s; {len(events)} recoveries")
print(f"{'fault':<15} {'at step':>7} {'recoveries':>10} {'steps redone':>12} {'seconds lost':>12}  restarted")
def caused_by(event, kind, what):
    """Whether a recovery brought back what the fault killed."""
    if kind == "node-agent":
        return any(f"on node {what}," in actor for actor in event["restarted"])
    return any(actor.startswith(what + " ") for actor in event["restarted"])

claimed = set()
found = {}
# A node agent's death restarts every actor on its node (maybe the rollout or the trainer the
# other faults name): its recoveries are attributed first.
for kind, at, what in sorted(faults, key=lambda fault: fault[0] != "node-agent"):
    # The first recovery after this fault that brought back what it killed (the head's restart
    # needs none: calls between actors go on without it).
    mine = [(i, e) for i, e in enumerate(events)
            if i not in claimed and e["step"] + 1 >= at and kind != "head" and caused_by(e, kind, what)][:1]
    claimed.update(i for i, _ in mine)
    found[kind] = [e for _, e in mine]
for kind, at, what in faults:
    mine = found[kind]
    restarted = "; ".join(r for e in mine for r in e["restarted"]) or "-"
    print(f"{kind:<15} {at:>7} {len(mine):>10} {sum(e['steps_redone'] for e in mine):>12} "
          f"{sum(e['seconds_lost'] for e in mine):>12.1f}  {restarted}")
    if kind != "head" and not mine:
        failed.append(f"{kind}: no recovery seen")
unexplained = [e for i, e in enumerate(events) if i not in claimed]
for e in unexplained:
    print(f"{'(other)':<15} {e['step'] + 1:>7} {1:>10} {e['steps_redone']:>12} {e['seconds_lost']:>12.1f}  "
          f"{'; '.join(e['restarted'])}")
if float(min_gain) > 0 and report["improvement_points"] < float(min_gain):
    failed.append(f"learned {report['improvement_points']:+.1f} points, below +{min_gain}")
if int(left) != 0:
    failed.append(f"{left} actors still alive on the head after the run")
if orphans.strip():
    failed.append(f"orphaned processes: {orphans.split()}")
if failed:
    print("FAILED: " + "; ".join(failed))
    sys.exit(1)
print(f"chaos ({mode}): ok: {report['steps_redone']} steps redone, "
      f"{report['seconds_lost']:.1f} s lost in all, no orphaned process")
EOF
