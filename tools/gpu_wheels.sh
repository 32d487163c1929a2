#!/usr/bin/env bash
# Fetch, here, the wheels tools/gpu_check.sh needs on a GPU machine whose
# image has PyTorch, JAX and transformers (Python 3.12) but not Keras or
# KerasHub, and that cannot reach a package index. They land in .whl/
# (git-ignored), which the device run carries. TensorFlow is not fetched:
# its wheel alone is larger than what one device call may carry (64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
rm -rf .whl && mkdir .whl
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
platforms=""
for n in 2_28 2_27 2_17; do platforms="$platforms --platform manylinux_${n}_x86_64"; done
# Keras, KerasHub and everything they import at run time (TensorFlow Text
# aside: the benchmark runs KerasHub without a preprocessor). The device
# installs only those its image lacks (tools/gpu_check.sh), so the image's
# own jax/torch/numpy builds are never shadowed.
dists="keras keras-hub namex optree absl-py h5py ml-dtypes rich markdown-it-py
  mdurl pygments kagglehub kagglesdk regex sentencepiece tokenizers
  huggingface-hub pyyaml tqdm requests packaging"
specs=()
for d in $dists; do specs+=("$d==$(version "$d")"); done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp $platforms --platform manylinux2014_x86_64 -d .whl "${specs[@]}"
du -sh .whl && ls .whl
