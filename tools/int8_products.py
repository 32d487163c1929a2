"""Batch-1 products of the issue-7 bench model's matrices, float32 vs int8.

The 25 matrices one decoding step reads (6 layers x [qkv, out, up, down]
+ the 8192 x 384 unembedding), multiplied by one row, timed interleaved
(best of --rounds) in one process:

- XLA on CPU (jax.jit): float32 GEMV; int8 x int8 -> int32 of one row
  (XLA's own loops); the same with the row padded to two (XLA's library
  product, what `keras_gpt.backend.int8` runs), kernel (in, out) as stored
  and (out, in) as the JAX decoding loop reads it; float32 x int8 cast in
  the product; the (out, in) kernel on the left of one column.
- PyTorch on CPU: float32 on oneDNN packed weights (what the torch decoder
  runs), `torch._int_mm` int8 x int8 -> int32 (column-major kernel, what
  it runs for int8 on CPUs with VNNI or AMX), weight-only
  `torch._weight_int8pack_mm` with the row in bfloat16 (what it runs
  elsewhere, up to 4 rows) and in float32, and two it does not: fbgemm's
  dynamic int8 linear (its activations quantized otherwise than Keras'),
  and the integers as float16 (half of float32's bytes; its float16
  output rounds: timing only).

    .venv/bin/python tools/int8_products.py [--rounds 7]
"""

import argparse
import time
import warnings

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
    transposed = [jnp.asarray(np.ascontiguousarray(np.asarray(w).T))
                  for w in ints]
    x = {k: jnp.asarray(rng.standard_normal((1, k)), jnp.float32)
         for k in (384, 1536)}
    xq = {k: v.astype(jnp.int8) for k, v in x.items()}

    def chain(product, weights, rows, axis=0):
        @jax.jit
        def run(weights, rows):
            return sum(product(rows[w.shape[axis]], w).sum() for w in weights)
        return lambda: run(weights, rows).block_until_ready()

    def padded(r, w, contract):
        two = jnp.pad(r, ((0, 1), (0, 0)))
        return jax.lax.dot_general(two, w, (((1,), (contract,)), ((), ())),
                                   preferred_element_type=jnp.int32)[:1]

    runs = {
        "float32 GEMV": chain(lambda r, w: r @ w, floats, x),
        "int8 x int8 -> int32, 1 row": chain(lambda r, w: jax.lax.dot(
            r, w, preferred_element_type=jnp.int32), ints, xq),
        "int8, row padded to 2, (in, out)": chain(
            lambda r, w: padded(r, w, 0), ints, xq),
        "int8, row padded to 2, (out, in)": chain(
            lambda r, w: padded(r, w, 1), transposed, xq, axis=1),
        "float32 x int8 (cast in the product)": chain(
            lambda r, w: r @ w.astype(jnp.float32), ints, x),
        # The kernel on the left, times one column: XLA's own loops again.
        "int8, (out, in) kernel x 1 column": chain(
            lambda r, w: jax.lax.dot_general(
                w, r, (((1,), (1,)), ((), ())),
                preferred_element_type=jnp.int32), transposed, xq, axis=1),
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

    # Weight-only int8 (float row x int8 (out, in) kernel, scale per
    # output channel): exact but for float rounding in float32, the row
    # and result rounded in bfloat16.
    scales = [torch.rand(n, generator=generator) + 0.5 for _, n in SHAPES]
    xb = {k: v.bfloat16() for k, v in x.items()}
    scales_b = [c.bfloat16() for c in scales]

    def weight_only():
        for (k, _), w, c in zip(SHAPES, ints, scales):
            torch._weight_int8pack_mm(x[k], w.T, c)

    def weight_only_bfloat16():
        for (k, _), w, c in zip(SHAPES, ints, scales_b):
            torch._weight_int8pack_mm(xb[k], w.T, c)

    # fbgemm's dynamic int8 linear: the row quantized asymmetrically per
    # tensor (uint8), not as Keras' symmetric per-row int8, so not exact;
    # and its quantized tensors are deprecated in torch 2.13.
    torch.backends.quantized.engine = "fbgemm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        prepacked = [torch.ops.quantized.linear_prepack(
            torch.quantize_per_channel(
                w.T.float(), c, torch.zeros(len(c), dtype=torch.long), 0,
                torch.qint8), None) for w, c in zip(ints, scales)]

    def fbgemm():
        for (k, _), p in zip(SHAPES, prepacked):
            torch.ops.quantized.linear_dynamic(x[k], p, False)

    # The integers as float16 products: the inputs are exact (|q| <= 127),
    # but the float16 output rounds (11-bit mantissa) and, unscaled,
    # overflows above 65504: a speed reference, not a usable product.
    halves = [w.T.contiguous().half() for w in ints]
    xh = {k: v.half() for k, v in xq.items()}

    def float16():
        for (k, _), w in zip(SHAPES, halves):
            torch.nn.functional.linear(xh[k], w)

    with torch.inference_mode():
        return _best({"float32 oneDNN": onednn, "int8 torch._int_mm": int_mm,
                      "_weight_int8pack_mm, bfloat16 row":
                          weight_only_bfloat16,
                      "_weight_int8pack_mm, float32 row": weight_only,
                      "fbgemm linear_dynamic (not exact)": fbgemm,
                      "integers as float16, F.linear": float16}, rounds)


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
