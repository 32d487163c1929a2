"""What a training step costs around the model: data hand-off, callbacks,
the progress bar (nanoGPT's CPU "baby" config by default).

Builds one compiled keras_gpt model and times, interleaved and best of the
rounds, wall and CPU milliseconds per step of:

- arrays: `fit` on NumPy arrays, no callbacks, no progress bar (what
  `keras-gpt bench` times);
- windows: `fit` on `keras-gpt train`'s `tf.data` windows (random offsets
  read by `tf.numpy_function`), no callbacks, no progress bar;
- windows+callbacks: as `keras-gpt train` runs it: the windows, its
  `Throughput` and TensorBoard callbacks and the progress bar (to a
  buffer);
- hf_torch: Hugging Face's GPT2LMHeadModel in a plain PyTorch loop, the
  same shapes (when torch and transformers are importable).

CPU time counts every thread of the process: on a shared machine a
steadier measure of the work than wall time.

    KERAS_BACKEND=jax .venv/bin/python tools/step_overhead.py [--steps 20] \
        [--rounds 4] [--config baby]
"""

import argparse
import contextlib
import io
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from keras_gpt.bench import _available, implementations  # noqa: E402
from keras_gpt.bench.options import CONFIGS  # noqa: E402


def _model(spec):
    from keras_gpt.config import GPTConfig
    from keras_gpt.model import GPT
    from keras_gpt.training import compile_for_pretraining

    model = GPT(GPTConfig(**spec["model"], dropout=0.0))
    compile_for_pretraining(model, total_steps=10 ** 6)
    return model


def _windows(spec, steps, callbacks):
    """`fit` over keras-gpt train's windows, as its run does."""
    from keras_gpt.data import windows
    from keras_gpt.training.callbacks import EpochTensorBoard, Throughput

    m, batch = spec["model"], spec["batch_size"]
    tokens = np.random.default_rng(1).integers(
        0, m["vocab_size"], 400_000).astype(np.uint16)
    model = _model(spec)
    dataset = windows.make_windows_dataset(tokens, m["context_length"], batch)
    import tempfile

    logs = tempfile.mkdtemp()
    extra = ([Throughput(batch * m["context_length"]),
              EpochTensorBoard(logs)] if callbacks else [])

    def block():
        with contextlib.redirect_stdout(io.StringIO()):
            history = model.fit(dataset, epochs=1, steps_per_epoch=steps,
                                callbacks=extra, verbose=int(callbacks),
                                shuffle=False)
        return history.history["loss"][-1]

    return block


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=list(CONFIGS), default="baby")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    if min(args.steps, args.rounds) < 1:
        parser.error("--steps and --rounds must be >= 1.")
    import keras

    named = CONFIGS[args.config]
    spec = {"model": named["model"], "batch_size": named["batch_size"],
            "dtype": "float32"}
    x, y = implementations.random_batches(spec["model"], spec["batch_size"],
                                          args.steps)
    blocks = {
        "arrays": implementations._fit_block(_model(spec), x, y,
                                             spec["batch_size"]),
        "windows": _windows(spec, args.steps, callbacks=False),
        "windows+callbacks": _windows(spec, args.steps, callbacks=True)}
    if "hf_torch" in _available(["keras_hub"])[0]:
        blocks["hf_torch"] = implementations.train_hf_torch(spec, x, y)
    for block in blocks.values():
        block()  # compiled, warm
    wall = {name: float("inf") for name in blocks}
    cpu = dict(wall)
    for _ in range(args.rounds):
        for name, block in blocks.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            block()
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    print(f"backend {keras.backend.backend()}; config {args.config}; "
          f"{args.steps} steps per call, best of {args.rounds}")
    for name in blocks:
        print(f"{name:20s} {1000 * wall[name] / args.steps:8.1f} ms/step "
              f"wall {1000 * cpu[name] / args.steps:8.1f} ms/step cpu")


if __name__ == "__main__":
    main()
