#!/usr/bin/env bash
# Ray's actor-call microbenchmark and ours, side by side, on this machine.
#
# 1. Installs Ray 2.60.0 into a throwaway venv (target/ray-venv; RAY_VENV to choose another).
# 2. Runs Ray's own microbenchmark (ray._private.ray_perf, what `ray microbenchmark` runs) for
#    the matching workloads (TESTS_TO_RUN="actor calls", then "placement group"), and
#    benches/ray_extra.py for those it lacks (actor creation, n = 4, put/get of 800 MiB).
# 3. Runs `cargo bench -p troupe --bench actor_calls`.
# 4. Prints one table (workload, Ray per second, troupe per second, ratio) and writes it as JSON
#    (default target/compare_ray.json).
#
# Usage: benches/compare_ray.sh [--json PATH] [--quick]   (--quick: shorter rounds for ours and
# for ray_extra.py; Ray's own microbenchmark always runs its standard timing)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$repo/target/compare_ray.json"
quick=""
while [ $# -gt 0 ]; do
  case "$1" in
    --json) out="$(realpath -m "$2")"; shift 2 ;;
    --quick) quick="--quick"; shift ;;
    *) echo "compare_ray.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
work="$repo/target/compare_ray"
mkdir -p "$work"
venv="${RAY_VENV:-$repo/target/ray-venv}"
export RAY_USAGE_STATS_ENABLED=0

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import numpy, ray, sys; sys.exit(ray.__version__ != "2.60.0")' 2>/dev/null; then
  echo "== installing ray[default]==2.60.0 into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "ray[default]==2.60.0" numpy
fi

ray_perf() {
  # Ray client-mode benchmarks (a separate client server) are not compared: skipped.
  TESTS_TO_RUN="$1" TESTS_TO_SKIP="async-actor" timeout "$2" "$venv/bin/python" -c 'from ray._private import ray_perf
ray_perf.client_microbenchmark_main = lambda results=None: results
ray_perf.main()'
}
echo "== Ray's microbenchmark (ray._private.ray_perf), actor calls"
ray_perf "actor calls" 1800 2>&1 | tee "$work/ray_perf_actor_calls.txt"
echo "== Ray's microbenchmark, placement groups"
"$venv/bin/ray" stop --force >/dev/null 2>&1 || true
ray_perf "placement group" 900 2>&1 | tee "$work/ray_perf_placement_groups.txt"
echo "== the same on Ray for what its microbenchmark lacks (benches/ray_extra.py)"
timeout 1800 "$venv/bin/python" "$repo/benches/ray_extra.py" $quick > "$work/ray_extra.json"
"$venv/bin/ray" stop --force >/dev/null 2>&1 || true

echo "== troupe (cargo bench -p troupe --bench actor_calls)"
(cd "$repo" && cargo bench -p troupe --bench actor_calls -- $quick --json "$work/troupe.json")

python3 - "$work" "$out" "$(nproc)" <<'PY'
import json, re, sys, pathlib
work, out, cpus = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])

def metric(name):
    # "1:1 actor calls sync" -> "1_1_actor_calls_sync"
    return re.sub(r"[: ]", "_", name.strip())

ray = {}
for text in ("ray_perf_actor_calls.txt", "ray_perf_placement_groups.txt"):
    for line in (work / text).read_text().splitlines():
        found = re.match(r"^(.*?) per second ([0-9.]+) \+- ([0-9.]+)", line)
        if found and "async-actor" not in found.group(1) and "client:" not in found.group(1):
            ray[metric(found.group(1))] = float(found.group(2))
# Ray's workers may print to the same stdout: the report is the last line that is JSON.
extra = [l for l in (work / "ray_extra.json").read_text().splitlines() if l.startswith('{"workloads"')]
for entry in json.loads(extra[-1])["workloads"]:
    ray[entry["name"]] = entry["per_s"]
ours = {w["name"]: w for w in json.loads((work / "troupe.json").read_text())["workloads"]}

rows = []
for name, entry in ours.items():
    ray_per_s = ray.get(name)
    ratio = entry["per_s"] / ray_per_s if ray_per_s else None
    rows.append({"name": name, "unit": entry["unit"], "ray_per_s": ray_per_s,
                 "troupe_per_s": entry["per_s"], "ratio": ratio})
print(f"\n{'workload':<40} {'Ray /s':>12} {'troupe /s':>12} {'ratio':>8}")
for row in rows:
    ray_text = f"{row['ray_per_s']:.1f}" if row["ray_per_s"] else "-"
    ratio_text = f"{row['ratio']:.2f}x" if row["ratio"] else "-"
    print(f"{row['name']:<40} {ray_text:>12} {row['troupe_per_s']:>12.1f} {ratio_text:>8}")
report = {"machine": {"cpus": cpus}, "ray_version": "2.60.0", "workloads": rows}
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(report, indent=2))
print(f"wrote {out}")
PY
