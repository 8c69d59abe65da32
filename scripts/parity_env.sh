#!/usr/bin/env bash
# Prints the path of a Python with the pinned transformers + torch of the parity suite
# (actors/tests/parity/requirements.txt; a few GB of torch on CPU), creating its cached venv on
# first use (scripts/python_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/python_env.sh parity actors/tests/parity/requirements.txt
