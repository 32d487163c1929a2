#!/usr/bin/env bash
# One prepared GPU run (under 8 minutes on an H200): GPT-2 small (124M)
# bfloat16 training tokens/s and MFU, decoding tokens/s at batch 1 and 32,
# per backend, with KerasHub (JAX) and Hugging Face (PyTorch) beside us.
# Writes <backend>.json and <backend>.txt into OUT_DIR. The JSON is
# rewritten after each part, so a backend stopped by its time limit keeps
# what it measured ("complete": false).
#
#   here:   bash tools/gpu_wheels.sh          # Keras + KerasHub wheels -> .whl/
#   device: bash tools/gpu_check.sh "$OUT"     # with .whl carried
#
# A backend whose framework is not importable is skipped with the reason
# (TensorFlow is not on the H200 image and too large to carry).
set -uo pipefail
out=${1:?usage: tools/gpu_check.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  # Only the distributions the image does not have (never shadow its own).
  missing=$($py - .whl/*.whl <<'PY'
import importlib.metadata as m, os, sys
for wheel in sys.argv[1:]:
    name = os.path.basename(wheel).split("-")[0]
    try:
        m.version(name)
    except m.PackageNotFoundError:
        print(wheel)
PY
)
  if [ -n "$missing" ]; then
    echo "installing: $(echo $missing | xargs -n1 basename | tr '\n' ' ')"
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target /tmp/site $missing || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  fi
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_FORCE_GPU_ALLOW_GROWTH=true
export TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee "$out/gpu.txt"
common=(--preset gpt2-small --dtype mixed_bfloat16 --batch-size 8 --steps 10
        --rounds 2 --decode-batch-sizes 1,32 --new-tokens 200)
status=0
# Time limits (s), 7.7 min in all: JAX compiles three programs (training,
# decoding at batch 1 and at 32) for ours and three for KerasHub; TF is not
# on the H200 image.
for spec in "jax:hf_torch:220" "torch:keras_hub:150" "tensorflow:hf_torch:90"; do
  IFS=: read -r backend skip limit <<<"$spec"
  module=$backend
  if ! $py -c "import $module, keras" 2>/dev/null; then
    echo "skipping $backend: $module or keras not importable" | tee "$out/$backend.txt"
    continue
  fi
  echo "=== $backend ==="
  KERAS_BACKEND=$backend timeout "$limit" $py tools/benchmark.py "${common[@]}" \
    --skip "$skip" --json "$out/$backend.json" 2>&1 | tee "$out/$backend.txt" \
    | grep -v "^WARNING\|^I0000\|^W0000"
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "$backend: failed or timed out"; status=1; }
done
exit $status
