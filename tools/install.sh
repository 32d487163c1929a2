#!/usr/bin/env bash
# Create .venv (if missing) and install keras_gpt with all three backends and
# the test tools. torch is pinned to the CPU wheel this project tests with.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r tools/requirements-test.txt -e ".[test]"
