"""`python -m keras_gpt.serving JOB_JSON`: the TensorFlow export subprocess
of `keras_gpt.serving.export` (for models trained on JAX or PyTorch)."""

import sys

from keras_gpt.serving.export import _main

sys.exit(_main(sys.argv[1:]))
