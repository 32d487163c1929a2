"""Batch-1 products of the issue-7 bench model's matrices, float32 vs int8.

The 25 matrices one decoding step reads (6 layers x [qkv, out, up, down]
+ the 8192 x 384 unembedding), multiplied by one row, timed interleaved
(best of --rounds) in one process:

- XLA on CPU (jax.jit): float32 GEMV; int8 x int8 -> int32 (what Keras'
  int8 Dense runs); dequantize-in-product (float row x int8 kernel cast to
  float32); bfloat16 x bfloat16 -> float32.
- PyTorch on CPU: float32 on oneDNN packed weights (what the torch decoder
  runs) and `torch._int_mm` int8 x int8 -> int32 (column-major kernel).

Why int8 decoding is faster on PyTorch and not under XLA here: XLA:CPU
emits its own loops for integer and bfloat16 products (no library GEMV),
and those ran ~25x slower than its float32 GEMV (jax 0.10, AVX-512 EPYC),
so keras_gpt's XLA path multiplies the integers as float32 (the cast is
hoisted out of the decoding loop).

    .venv/bin/python tools/int8_products.py [--rounds 7]
"""

import argparse
import time

import numpy as np

SHAPES = [(384, 1152), (384, 384), (384, 1536), (1536, 384)] * 6 + [
    (384, 8192)]


def _best(runs, rounds, repeat=20):
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            fn()
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / repeat)
    return best


def xla(rounds):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    floats = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in SHAPES]
    ints = [jnp.asarray(rng.integers(-127, 128, s), jnp.int8) for s in SHAPES]
    bf16 = [w.astype(jnp.bfloat16) for w in floats]
    x = {k: jnp.asarray(rng.standard_normal((1, k)), jnp.float32)
         for k in (384, 1536)}
    xq = {k: v.astype(jnp.int8) for k, v in x.items()}

    def chain(product, weights, rows):
        @jax.jit
        def run(weights, rows):
            return sum(product(rows[w.shape[0]], w).sum() for w in weights)
        return lambda: run(weights, rows).block_until_ready()

    runs = {
        "float32 GEMV": chain(lambda r, w: r @ w, floats, x),
        "int8 x int8 -> int32": chain(lambda r, w: jax.lax.dot(
            r, w, preferred_element_type=jnp.int32), ints, xq),
        "float32 x int8 (cast in the product)": chain(
            lambda r, w: r @ w.astype(jnp.float32), ints, x),
        "bfloat16 x bfloat16 -> float32": chain(lambda r, w: jax.lax.dot(
            r.astype(jnp.bfloat16), w, preferred_element_type=jnp.float32),
            bf16, x),
    }
    return _best(runs, rounds)


def torch_cpu(rounds):
    import torch

    generator = torch.Generator().manual_seed(0)
    floats = [torch.randn(*s, generator=generator) for s in SHAPES]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w.T.contiguous())
              for w in floats]
    ints = [torch.randint(-127, 128, s, generator=generator,
                          dtype=torch.int8).T.contiguous().T for s in SHAPES]
    x = {k: torch.randn(1, k, generator=generator) for k in (384, 1536)}
    xq = {k: v.to(torch.int8) for k, v in x.items()}

    def onednn():
        for (k, _), w in zip(SHAPES, packed):
            torch.ops.mkldnn._linear_pointwise(x[k], w, None, "none", [], "")

    def int_mm():
        for (k, _), w in zip(SHAPES, ints):
            torch._int_mm(xq[k], w)

    with torch.inference_mode():
        return _best({"float32 oneDNN": onednn, "int8 torch._int_mm": int_mm},
                     rounds)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    for name, bench in (("XLA (jax.jit) on CPU", xla),
                        ("PyTorch on CPU", torch_cpu)):
        best = bench(args.rounds)
        reference = next(iter(best.values()))
        print(name)
        for label, seconds in best.items():
            print(f"  {label:40} {seconds * 1e3:8.3f} ms  "
                  f"{reference / seconds:6.2f}x float32's speed")


if __name__ == "__main__":
    main()
