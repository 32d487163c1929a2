#!/usr/bin/env bash
# Install from scratch (tools/install.sh), then run the whole suite under
# each Keras backend, on two pytest-xdist workers. Tests marked
# backend_independent (tokenizers, token files, config, parameter table,
# planner, argument checks, the import rules) cannot differ by backend: they
# run in the torch pass only. Tests in one xdist_group share a worker (and
# their module fixtures). Extra arguments go to pytest (e.g.
# -k causality, or -n 0 for one process).
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh || exit 1
export TF_CPP_MIN_LOG_LEVEL=2
# The tests' programs are tiny: XLA compiles them (JAX, TensorFlow) without
# LLVM's code optimisations, which took longer than running them, and JAX
# keeps each program for this run in one folder, so both workers and the
# processes tests start compile a shape once (tools/test.sh on 2 cores:
# see the README's Tests section for the times).
export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_backend_optimization_level=0"
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$cache/jax}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
status=0
for backend in tensorflow jax torch; do
  if [ "$backend" = torch ]; then
    echo "=== KERAS_BACKEND=$backend (with the backend-independent tests) ==="
    select=()
  else
    echo "=== KERAS_BACKEND=$backend (backend-independent tests run in the torch pass) ==="
    select=(-m "not backend_independent")
  fi
  KERAS_BACKEND=$backend .venv/bin/python -m pytest -q -p no:cacheprovider \
    -n 2 --dist loadgroup "${select[@]}" "$@" tests || status=1
done
exit $status
