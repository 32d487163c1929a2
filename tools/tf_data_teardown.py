"""How long `fit` takes to return after its last step, tf.data autotuner on
and off: why `keras_gpt.data` turns the autotuner off.

Fits a small GPT for `n` steps on `windows.make_windows_dataset` (as `keras-gpt
train` feeds it) and times what follows Keras' `on_train_end` until `fit`
returns, which is mostly the deletion of the dataset's iterator. Each `n`
runs with that pipeline as keras_gpt builds it (autotuner off) and with
tf.data's autotuner turned back on (TensorFlow's default), alternately,
`--rounds` times; the worst round counts, as a long wait is what a user
meets.

    KERAS_BACKEND=tensorflow .venv/bin/python tools/tf_data_teardown.py

`--smoke`: a tiny model, n = 2, one round (tests/bench/test_bench.py runs it).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
from absl import logging  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_gpt.data import windows  # noqa: E402
from keras_gpt.config import GPTConfig  # noqa: E402
from keras_gpt.model import GPT  # noqa: E402
from keras_gpt.training import compile_for_pretraining  # noqa: E402

MODEL = dict(n_layers=4, n_heads=4, d_model=256, vocab_size=2048,
             context_length=256)
SMOKE = dict(n_layers=1, n_heads=2, d_model=16, vocab_size=64,
             context_length=16)


class _EndTime(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        self.at = time.perf_counter()


def _teardown(model, dataset, steps):
    """Seconds from `on_train_end` to `fit`'s return, and the steps' time."""
    end = _EndTime()
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0,
              callbacks=[end])
    returned = time.perf_counter()
    return returned - end.at, end.at - start


def _autotuned(dataset):
    logging.set_verbosity(logging.ERROR)  # "Changing the value of option"
    options = tf.data.Options()
    options.autotune.enabled = True
    return dataset.with_options(options)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 16, 32, 64])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if min(args.steps) < 1 or args.rounds < 1:
        parser.error(f"--steps {args.steps} and --rounds {args.rounds} must "
                     "be >= 1.")
    m = SMOKE if args.smoke else MODEL
    steps_list, rounds = ([2], 1) if args.smoke else (args.steps, args.rounds)
    tokens = np.random.default_rng(0).integers(
        0, m["vocab_size"], 100_000).astype("uint16")
    model = GPT(GPTConfig(**m, dropout=0.0))
    compile_for_pretraining(model, total_steps=10 ** 6)
    pipelines = {"off": lambda: windows.make_windows_dataset(
                     tokens, m["context_length"], 8),
                 "on": lambda: _autotuned(windows.make_windows_dataset(
                     tokens, m["context_length"], 8))}
    _teardown(model, pipelines["off"](), 2)  # compile
    print(f"backend {keras.backend.backend()}; {m}, batch 8")
    for steps in steps_list:
        worst = {name: (0.0, 0.0) for name in pipelines}
        for _ in range(rounds):
            for name in ("on", "off"):
                worst[name] = max(worst[name],
                                  _teardown(model, pipelines[name](), steps))
        print(f"{steps:4d} steps ({worst['off'][1]:5.1f} s): fit returns "
              f"{worst['on'][0]:6.3f} s after its last step with the "
              f"autotuner on, {worst['off'][0]:6.3f} s with it off")


if __name__ == "__main__":
    main()
