"""Forward and backward pass of the next-token loss alone: ours against the
formula's autodiff gradient and the other candidates of this backend.

On the current backend (`KERAS_BACKEND`), for random logits (batch, seq,
vocab) and targets, each implementation computes the summed per-token loss
and its gradient with respect to the logits:

- ours: `keras_gpt.backend.token_cross_entropy`, as `NextTokenLoss` runs
  it (TensorFlow: gradient written out; PyTorch: gradient written over the
  forward's buffer);
- formula: logsumexp(logits) - logits[target] with the backend's autodiff
  (what ours is on JAX);
- written gradient: JAX only, the formula with TensorFlow's written-out
  gradient, which JAX does not take;
- F.cross_entropy: PyTorch only, what keras_gpt used before.

JAX and TensorFlow run compiled (`jax.jit`, `tf.function(jit_compile=True)`)
as in a training step, PyTorch eagerly. It first checks that every gradient
equals ours, then times them interleaved (best of `--rounds`) and prints
ms per call and each one's time over ours.

    KERAS_BACKEND=tensorflow .venv/bin/python tools/loss_speed.py

`--smoke`: tiny shapes and one round (tests/bench/test_bench.py runs it).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gpt import backend as backend_lib  # noqa: E402
from keras_gpt.bench import measure  # noqa: E402


def _implementations():
    """name -> per-token loss function (logits, int32 targets)."""
    implementations = {"ours": backend_lib.token_cross_entropy,
                       "formula": backend_lib._cross_entropy}
    if keras.backend.backend() == "jax":
        implementations["written gradient"] = (
            backend_lib._written_gradient_cross_entropy)
    if keras.backend.backend() == "torch":
        import torch.nn.functional as F

        def torch_cross_entropy(logits, targets):
            vocab = logits.shape[-1]
            return F.cross_entropy(logits.reshape(-1, vocab),
                                   targets.reshape(-1).long(),
                                   reduction="none")

        implementations["F.cross_entropy"] = torch_cross_entropy
    return implementations


def _value_and_gradient(loss):
    """fn(logits, targets) -> (summed loss, gradient) on this backend,
    compiled as a training step would be."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(jax.value_and_grad(
            lambda logits, targets: loss(logits, targets).sum()))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(logits, targets):
            with tf.GradientTape() as tape:
                tape.watch(logits)
                value = tf.reduce_sum(loss(logits, targets))
            return value, tape.gradient(value, logits)

        return step

    def step(logits, targets):
        logits = logits.detach().requires_grad_()
        value = loss(logits, targets).sum()
        value.backward()
        return value.detach(), logits.grad

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.length, args.vocab, args.rounds = 2, 8, 64, 1
    for name in ("batch", "length", "vocab", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)} must be >= 1.")

    rng = np.random.default_rng(0)
    logits = keras.ops.convert_to_tensor(rng.normal(
        size=(args.batch, args.length, args.vocab)).astype("float32"))
    targets = keras.ops.convert_to_tensor(rng.integers(
        0, args.vocab, (args.batch, args.length)).astype("int32"))
    steps = {name: _value_and_gradient(loss)
             for name, loss in _implementations().items()}
    results = {name: [keras.ops.convert_to_numpy(x)
                      for x in step(logits, targets)]
               for name, step in steps.items()}
    for name, (value, gradient) in results.items():
        np.testing.assert_allclose(value, results["ours"][0], rtol=1e-5,
                                   err_msg=name)
        np.testing.assert_allclose(gradient, results["ours"][1], atol=1e-6,
                                   err_msg=name)

    def run(step):
        return lambda: keras.ops.convert_to_numpy(step(logits, targets)[1])

    best = measure.interleaved_best(
        {name: run(step) for name, step in steps.items()}, args.rounds)
    print(f"{keras.backend.backend()}: loss forward + backward, logits "
          f"({args.batch}, {args.length}, {args.vocab}), best of "
          f"{args.rounds}; gradients equal")
    for name, seconds in best.items():
        print(f"{name:16s} {seconds * 1e3:9.3f} ms  "
              f"{seconds / best['ours']:.2f}x ours")


if __name__ == "__main__":
    main()
