"""Where a PyTorch training step's time goes: products, attention, the rest.

Trains the benchmark's model (6 layers, 6 heads, d_model 384, vocab 8192,
256 positions, batch 8, float32) on the plain path (`model.compile(AdamW,
SparseCategoricalCrossentropy(from_logits=True))`, `fit`) and traces a few
steps with `torch.profiler`. Prints ms per step by aten op (self time): the
matrix products of the projections and W_U, attention (torch's fused
scaled-dot-product kernels), and the largest other ops; then the products'
GFLOP/s against the float32 matmul peak measured in the same process, and
what is left of the step besides them.

    KERAS_BACKEND=torch .venv/bin/python tools/torch_step_profile.py \\
        [--steps 4] [--top 12] [--smoke]

`--smoke`: a tiny model, 2 steps (tests/bench/test_bench.py runs it).
"""

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# torch's GEMMs, and oneDNN's linear op where `pytorch.cpu_gemm` picked it.
PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise")
ATTENTION = "aten::_scaled_dot_product"
SMOKE = dict(n_layers=1, n_heads=2, d_model=16, vocab_size=64,
             context_length=16)


def projection_flops(m, tokens):
    """Training FLOPs of the projections and W_U (2 forward, 4 backward)."""
    d = m["d_model"]
    per_token = m["n_layers"] * (3 * d * d + d * d + 8 * d * d) \
        + d * m["vocab_size"]
    return 6 * per_token * tokens


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.top < 1:
        parser.error(f"--steps {args.steps} and --top {args.top} must be "
                     ">= 1.")
    import keras

    if keras.backend.backend() != "torch":
        parser.error(f"KERAS_BACKEND={keras.backend.backend()}: this tool "
                     "profiles PyTorch (KERAS_BACKEND=torch).")
    import numpy as np
    from torch.profiler import ProfilerActivity, profile

    from keras_gpt.bench import ISSUE_MODEL
    from keras_gpt.bench.measure import matmul_peak
    from keras_gpt.config import GPTConfig
    from keras_gpt.model import GPT
    from keras_gpt.training import make_optimizer

    m, steps = (SMOKE, 2) if args.smoke else (ISSUE_MODEL, args.steps)
    batch = 8
    ids = np.random.default_rng(0).integers(
        0, m["vocab_size"], (batch * steps, m["context_length"] + 1))
    x, y = ids[:, :-1].astype("int32"), ids[:, 1:].astype("int32")
    model = GPT(GPTConfig(**m, dropout=0.0))
    model.compile(optimizer=make_optimizer(total_steps=10 ** 6),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    fit = lambda: model.fit(x, y, batch_size=batch, shuffle=False,  # noqa
                            verbose=0)
    fit()  # the first steps build the optimizer
    start = time.perf_counter()
    fit()
    step_ms = 1e3 * (time.perf_counter() - start) / steps
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        fit()
    ms = collections.Counter()
    for event in trace.key_averages():
        ms[event.key] += event.self_cpu_time_total / 1e3 / steps
    products = sum(ms.pop(name, 0.0) for name in PRODUCTS)
    attention = sum(ms.pop(name) for name in list(ms)
                    if name.startswith(ATTENTION))
    peak = matmul_peak("torch", "cpu")["best"]
    gflops = projection_flops(m, batch * m["context_length"]) / 1e9
    traced = products + attention + sum(ms.values())
    print(f"PyTorch, plain compile + fit; {m}, batch {batch}; ms per step "
          f"over {steps} traced steps (self time), untraced step "
          f"{step_ms:.1f} ms")
    rate = gflops / products * 1e3 if products else 0.0
    print(f"  {products:8.2f} ms  matrix products ({100 * products / traced:.1f}%"
          f"; {rate:.0f} GFLOP/s, {100 * rate / peak:.0f}% of the {peak:.0f} "
          f"GFLOP/s peak)")
    print(f"  {attention:8.2f} ms  attention, fused kernels "
          f"({100 * attention / traced:.1f}%)")
    print(f"  {sum(ms.values()):8.2f} ms  other ops "
          f"({100 * sum(ms.values()) / traced:.1f}%), the largest:")
    for name, value in ms.most_common(args.top):
        print(f"  {value:8.2f} ms    {name}")


if __name__ == "__main__":
    main()
