"""Where a TensorFlow training step's time goes (the MFU gap, issue 7).

Times, interleaved and best of rounds, for the benchmark's model (6 layers,
6 heads, d_model 384, vocab 8192, batch 8 x 256, float32, XLA):
`fit` per step, the forward + backward pass alone, and forward + backward
+ the AdamW update, next to the time the model's matmul FLOPs would take at
the float32 2048^3 matmul rate measured in the same run.

    .venv/bin/python tools/tf_step_breakdown.py [--rounds 4] [--smoke]

`--smoke`: a tiny model and one round (tests/bench/test_bench.py runs it).
"""

import argparse
import os
import sys
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_gpt.bench import ISSUE_MODEL, measure  # noqa: E402
from keras_gpt.bench.implementations import train_keras_gpt  # noqa: E402
from keras_gpt.config import GPTConfig  # noqa: E402
from keras_gpt.model import GPT  # noqa: E402
from keras_gpt.training import make_optimizer, next_token_loss  # noqa: E402

SPEC = {"model": ISSUE_MODEL, "dtype": "float32", "batch_size": 8}
SMOKE = {"model": dict(n_layers=1, n_heads=2, d_model=16, vocab_size=64,
                       context_length=16),
         "dtype": "float32", "batch_size": 2}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    spec = SMOKE if args.smoke else SPEC
    rounds = 1 if args.smoke else args.rounds
    m, batch = spec["model"], spec["batch_size"]
    steps = 4
    ids = np.random.default_rng(0).integers(
        0, m["vocab_size"], (batch * steps, m["context_length"])).astype("int32")
    fit_block = train_keras_gpt(spec, ids, ids)
    fit_block = fit_block[0] if isinstance(fit_block, tuple) else fit_block

    model = GPT(GPTConfig(**m, dropout=0.0))
    x = tf.constant(ids[:batch])
    model(x)
    loss_fn, optimizer = next_token_loss(), make_optimizer(10 ** 6)
    optimizer.build(model.trainable_variables)

    def gradients():
        with tf.GradientTape() as tape:
            loss = loss_fn(x, model(x))
        return loss, tape.gradient(loss, model.trainable_variables)

    @tf.function(jit_compile=True)
    def forward_backward():
        return gradients()  # the gradients too, or XLA drops their work

    @tf.function(jit_compile=True)
    def with_update():
        loss, grads = gradients()
        optimizer.apply(grads, model.trainable_variables)
        return loss

    blocks = {"fit (per step)": lambda: fit_block(),
              "forward + backward": lambda: [float(forward_backward()[0])
                                             for _ in range(steps)],
              "forward + backward + AdamW": lambda: [float(with_update())
                                                     for _ in range(steps)]}
    for block in blocks.values():
        block()
    best = {name: 1e9 for name in blocks}
    for _ in range(rounds):
        for name, block in blocks.items():
            start = time.perf_counter()
            block()
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    peak = measure.matmul_peak("tensorflow", accelerator=False,
                               size=256 if args.smoke else 2048)["best"]
    n = model.count_params() - m["context_length"] * m["d_model"]
    flops = batch * m["context_length"] * (
        6 * n + 12 * m["n_layers"] * m["d_model"] * m["context_length"])
    for name, seconds in best.items():
        print(f"{name:28s} {seconds * 1e3:9.3f} ms")
    print(f"{'matmul FLOPs at the peak':28s} {flops / peak / 1e6:9.3f} ms"
          f"  ({peak:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
