"""Speed of keras_gpt against KerasHub and Hugging Face (`keras-gpt bench`).

Run once per backend, e.g.

    KERAS_BACKEND=jax .venv/bin/python tools/benchmark.py --json jax.json
    KERAS_BACKEND=torch .venv/bin/python tools/benchmark.py --only decode

Options: `--help`; what is measured: `keras_gpt/bench/__init__.py`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_gpt.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
