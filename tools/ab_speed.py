"""A/B checks behind the README's speed-change figures (issue 7).

Each check builds keras_gpt twice, with one speed change on and off, side
by side in one process, and times them interleaved (on, off, on, ...),
best of the rounds, on the benchmark's model (6 layers, 6 heads, d_model
384, vocab 8192, 256 positions, float32):

- attention: uncached attention in query runs that skip the masked
  triangle, against one full score matrix (training step; the path JAX
  and TensorFlow take on CPU);
- loss: `NextTokenLoss` against `keras.losses.SparseCategoricalCrossentropy
  (from_logits=True)` (training step, batch 8);
- decode-vectors: JAX decoding compiled with 512-bit vectors against XLA's
  default (batch-1 greedy, 16-token prompt, 200 new tokens; JAX only);
- tf-xla: TensorFlow training compiled with XLA (what
  `compile_for_pretraining` chooses) against Keras' "auto", op by op on a
  CPU (TensorFlow only);
- torch-gemm: the float32 projections on the product
  `pytorch.cpu_gemm` picks for this CPU against the other one
  (oneDNN or the wheel's own GEMM; training step; PyTorch only).

    KERAS_BACKEND=jax .venv/bin/python tools/ab_speed.py attention loss decode-vectors

Prints, per check, tokens/s on and off and their ratio. `--smoke`: a tiny
model and one round (tests/bench/test_bench.py runs it).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gpt import backend as backend_lib  # noqa: E402
from keras_gpt.backend import pytorch  # noqa: E402
from keras_gpt.bench import ISSUE_MODEL as MODEL  # noqa: E402
from keras_gpt.bench import implementations, measure  # noqa: E402
from keras_gpt.layers import attention  # noqa: E402
from keras_gpt.training import recipe as training  # noqa: E402

SMOKE = dict(n_layers=1, n_heads=2, d_model=16, vocab_size=64,
             context_length=64)
CHECKS = ("attention", "loss", "decode-vectors", "tf-xla", "torch-gemm")
ONLY = {"decode-vectors": "jax", "tf-xla": "tensorflow", "torch-gemm": "torch"}


def _switch(check, on):
    """(module, attribute, value) that turns `check`'s change on or off."""
    if check == "attention":
        return attention, "_QUERY_BLOCKS", attention._QUERY_BLOCKS if on else 1
    if check == "loss":
        off = lambda: keras.losses.SparseCategoricalCrossentropy(  # noqa: E731
            from_logits=True)
        return training, "next_token_loss", (training.next_token_loss if on
                                             else off)
    if check == "torch-gemm":
        picked = pytorch.cpu_gemm()
        other = "torch" if picked == "onednn" else "onednn"
        return pytorch, "_CPU_GEMM", picked if on else other
    if check == "tf-xla":
        off = lambda requested: requested  # noqa: E731  (Keras decides)
        return training, "training_jit_compile", (
            training.training_jit_compile if on else off)
    return (backend_lib, "_JAX_CPU_DECODING",
            backend_lib._JAX_CPU_DECODING if on else None)


def _built(check, on, make):
    """`make()`'s runner with the switch set, called once (traced,
    compiled). The switch is set again around every call: eager PyTorch
    reads it at each step, not once when tracing."""
    module, name, value = _switch(check, on)

    def switched(fn):
        def call():
            saved = getattr(module, name)
            setattr(module, name, value)
            try:
                return fn()
            finally:
                setattr(module, name, saved)
        return call

    run = switched(switched(make)())  # built with it, and called with it
    run()
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="+", choices=CHECKS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds} must be >= 1.")
    for check in args.checks:
        if ONLY.get(check, keras.backend.backend()) != keras.backend.backend():
            parser.error(f"{check} needs KERAS_BACKEND={ONLY[check]} (got "
                         f"{keras.backend.backend()}).")
    spec = {"model": SMOKE if args.smoke else MODEL, "dtype": "float32",
            "batch_size": 2 if args.smoke else 8}
    rounds = 1 if args.smoke else args.rounds
    m = spec["model"]
    rng = np.random.default_rng(0)
    steps = 2
    ids = rng.integers(0, m["vocab_size"], (spec["batch_size"] * steps,
                                            m["context_length"]))
    ids = ids.astype("int32")
    prompt = rng.integers(0, m["vocab_size"], (1, 16)).astype("int32")
    new_tokens = 8 if args.smoke else 200
    print(f"backend {keras.backend.backend()}; {m}")
    for check in args.checks:
        if check == "decode-vectors":
            tokens = new_tokens
            make = lambda: implementations.decode_keras_gpt(  # noqa: E731
                spec, prompt, new_tokens, "greedy")
        else:
            tokens = ids.size
            make = lambda: implementations.train_keras_gpt(  # noqa: E731
                spec, ids, ids)
        if (check == "torch-gemm"
                and not pytorch.onednn_linear_available()):
            print(f"{check:15s} skipped: this PyTorch has no oneDNN linear op")
            continue
        runs = {"on": _built(check, True, make),
                "off": _built(check, False, make)}
        best = measure.interleaved_best(runs, rounds)
        on, off = (tokens / best[k] for k in ("on", "off"))
        label = (f" (on: {pytorch.cpu_gemm()})"
                 if check == "torch-gemm" else "")
        print(f"{check:15s} on {on:9.1f} tok/s  off {off:9.1f} tok/s  "
              f"on/off {on / off:.3f}x{label}")


if __name__ == "__main__":
    main()
