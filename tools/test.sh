#!/usr/bin/env bash
# Install from scratch (tools/install.sh), then run the whole suite once per
# Keras backend, on two pytest-xdist workers (the TF pass took 12 min on one,
# 8 on two, on a 2-core AVX2 EPYC). Extra arguments go to pytest (e.g.
# -k causality, or -n 0 for one process).
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh || exit 1
export TF_CPP_MIN_LOG_LEVEL=2
status=0
for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 "$@" tests || status=1
done
exit $status
