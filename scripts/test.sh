#!/usr/bin/env bash
# Runs every check and test of the project: formatting, clippy, the runtime's `cuda` feature
# (must compile without CUDA), unit tests, the multi-process integration tests, the check that
# the committed Python stubs match proto/, the short chaos run (scripts/chaos.sh --short), the
# Kubernetes manifests and rendered pods against the API schemas, the multi-host test in network
# namespaces (skipped where the kernel refuses them), the recommendation stack's online run on
# MovieLens-100K (installed at run time by recsys/src/movielens.rs), and the
# Python client's tests against a real head and
# node agent, the parity of the decoder with Hugging Face transformers, and a real vLLM engine
# driven through the rollout role, and the web dashboard in headless chromium. Installs what it
# needs (Debian's chromium and chromium-driver with apt-get when missing; a Python venv with numpy and the client's pinned test dependencies in .venv; torch and
# transformers, and vLLM's CPU build, in cached venvs outside the checkout) on first run.
set -euo pipefail
cd "$(dirname "$0")/.."

# The dashboard's browser test (cli/tests/dashboard.rs) drives Debian's headless chromium through
# chromedriver; here it must run, not skip. Checked first, before the long Python setups, so a
# machine that cannot install them says so at once.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "== installing chromium and chromium-driver (the dashboard's browser test)"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: chromium and chromedriver are not on PATH, and there is no apt-get to install them;" >&2
    echo "       install them (Debian: chromium chromium-driver) and run this again" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
      echo "error: installing chromium needs root, and sudo cannot run without a password here;" >&2
      echo "       run: sudo apt-get install chromium chromium-driver, then run this again" >&2
      exit 1
    fi
    sudo=(sudo -n)
  fi
  ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
export TROUPE_REQUIRE_BROWSER=1

# The model tests compare against an independent NumPy forward pass; the Python client's tests
# need grpcio, protobuf and pytest. The venv is refreshed when the pinned versions change.
# kubernetes-validate (deploy/kubernetes/requirements.txt) checks the manifests.
wanted="$(cat python/requirements-dev.txt deploy/kubernetes/requirements.txt; echo numpy)"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.troupe-requirements 2>/dev/null)" != "$wanted" ]; then
  echo "== setting up .venv (numpy, python/requirements-dev.txt, kubernetes-validate, the troupe client)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check numpy -r python/requirements-dev.txt \
    -r deploy/kubernetes/requirements.txt
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e python/
  printf '%s' "$wanted" > .venv/.troupe-requirements
fi

# The parity suite compares the decoder with Hugging Face transformers (torch on CPU): a venv
# outside the checkout, keyed by actors/tests/parity/requirements.txt, made once per machine.
TROUPE_PARITY_PYTHON="$(bash scripts/parity_env.sh)"
export TROUPE_PARITY_PYTHON

# vLLM's CPU build for the vLLM rollout engine's tests: a venv outside the checkout keyed by the
# pinned set in actors/src/engines/vllm/requirements.txt (about 6 GB, made once per machine).
TROUPE_VLLM_PYTHON="$(bash scripts/python_env.sh --no-deps vllm actors/src/engines/vllm/requirements.txt)"
export TROUPE_VLLM_PYTHON

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo check -p troupe --features cuda (with clippy, and the gpu_check example)"
cargo clippy -p troupe --features cuda --lib --example gpu_check -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== chaos (short): GRPO on a head and 3 node agents while a rollout, a trainer, a node agent and the head are killed"
bash scripts/chaos.sh --short
echo "== Kubernetes manifests and the pods the kubernetes provider renders, against the API schemas"
PYTHON=.venv/bin/python TROUPE=target/debug/troupe bash deploy/kubernetes/validate.sh
echo "== Python stubs up to date"
PYTHON=.venv/bin/python bash python/scripts/check_stubs.sh
echo "== pytest python/tests (real head and node agent from target/debug/troupe)"
TROUPE_BIN="$PWD/target/debug/troupe" .venv/bin/python -m pytest python/tests -q
