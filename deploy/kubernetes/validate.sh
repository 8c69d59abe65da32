#!/usr/bin/env bash
# Validates every manifest here, and the node-agent pods the kubernetes provider renders from
# the ConfigMap's autoscaler config, against the Kubernetes API schemas (kubernetes-validate,
# strict: unknown fields are errors). Then checks that the validator refuses a broken pod, so
# a pass means something. Run from the repository root after a build:
#   bash deploy/kubernetes/validate.sh   (PYTHON and TROUPE override the tools' paths)
set -euo pipefail
PYTHON="${PYTHON:-.venv/bin/python}"
TROUPE="${TROUPE:-target/debug/troupe}"
VALIDATE="$(dirname "$PYTHON")/kubernetes-validate"
out=target/kubernetes
mkdir -p "$out"
"$PYTHON" - "$out/autoscaler.toml" <<'PY'
import sys, yaml
with open("deploy/kubernetes/autoscaler-config.yaml") as f:
    config_map = yaml.safe_load(f)
with open(sys.argv[1], "w") as f:
    f.write(config_map["data"]["autoscaler.toml"])
PY
"$TROUPE" autoscaler check --config "$out/autoscaler.toml"
for node_type in a100-8x l4-1x; do
  "$TROUPE" autoscaler render-pod --config "$out/autoscaler.toml" --node-type "$node_type" \
    > "$out/pod-$node_type.yaml"
done
"$VALIDATE" --strict --quiet deploy/kubernetes/*.yaml "$out"/pod-*.yaml
echo "kubernetes: $(ls deploy/kubernetes/*.yaml | wc -l) manifests and $(ls "$out"/pod-*.yaml | wc -l) rendered pods valid against the Kubernetes $("$VALIDATE" --version | awk '{print $NF}') schemas"
# A pass must mean something: a misspelt field and a wrong type are refused.
sed 's/^  restartPolicy: Never/  restartPolcy: Never/' "$out/pod-l4-1x.yaml" > "$out/broken-field.yaml"
sed "s/^      defaultMode: 256/      defaultMode: four/" "$out/pod-l4-1x.yaml" > "$out/broken-type.yaml"
for broken in "$out/broken-field.yaml" "$out/broken-type.yaml"; do
  if "$VALIDATE" --strict --quiet "$broken" > "$out/broken.log" 2>&1; then
    echo "kubernetes-validate accepted $broken; the check is not working" >&2
    exit 1
  fi
done
echo "kubernetes: broken pods refused, as they must be"
