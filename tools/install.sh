#!/usr/bin/env bash
# Create .venv (if missing) and install keras_gpt with all three backends and
# the test tools. torch is pinned to the CPU wheel this project tests with.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --no-compile \
  -r tools/requirements-test.txt -e ".[test]"
# Bytecode, compiled on every core: pip compiles one file at a time (about
# 70 s of a 105 s install on 2 cores; this takes about 50 s). Some packages
# ship files that are not Python 3 (pip skips them too): failures are not
# errors here.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
.venv/bin/python -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
