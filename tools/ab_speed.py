"""A/B checks behind the README's speed-change figures (issue 7).

Each check builds keras_gpt twice, with one speed change on and off, side
by side in one process, and times them interleaved (on, off, on, ...),
best of the rounds, on the benchmark's model (`--config default`: 6
layers, 6 heads, d_model 384, vocab 8192, 256 positions, batch 8, float32;
`--config baby`: nanoGPT's CPU char config, 4 layers, 4 heads, d_model
128, vocab 65, 64 positions, batch 12):

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
  (oneDNN or the wheel's own GEMM; training step; PyTorch only);
- torch-decode: PyTorch's decoder choosing, by timing, torch's `addmm` or
  its default products (oneDNN, weight-only int8) for steps of few rows,
  against the default always (batch-1 greedy, 16-token prompt, 200 new
  tokens or as many as the context leaves; PyTorch only);
- torch-adam: Keras' AdamW step on torch's fused CPU kernel
  (`keras_gpt.backend.torch_adam`, what `GPT.compile` installs) against
  Keras' own `torch._foreach` step (training step; PyTorch only);
- torch-products: the projections on torch's ops called directly
  (`keras_gpt.backend.pytorch.linear`: one `torch.addmm`, or oneDNN's op)
  against Keras' `ops.matmul` and bias add (training step; PyTorch only);
- torch-direct: the model's sublayers calling each other's `call`
  directly where Keras' `Layer.__call__` would only do bookkeeping
  (`keras_gpt.layers.direct`) against `Layer.__call__` every time
  (training step; PyTorch only).

    KERAS_BACKEND=jax .venv/bin/python tools/ab_speed.py attention loss decode-vectors
    KERAS_BACKEND=torch .venv/bin/python tools/ab_speed.py torch-decode --config baby
    KERAS_BACKEND=torch .venv/bin/python tools/ab_speed.py torch-adam --steps 20 --config baby

Prints, per check, tokens/s on and off and their ratio, then each side's
best CPU milliseconds per step (all threads: on a shared machine a steadier
measure of the work than wall time) and its first call's seconds (tracing
and compiling). `--smoke`: a tiny model and one round
(tests/bench/test_bench.py runs it).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gpt import backend as backend_lib  # noqa: E402
from keras_gpt.backend import layer_calls, pytorch, torch_adam  # noqa: E402
from keras_gpt import compiling  # noqa: E402
from keras_gpt.bench import implementations  # noqa: E402
from keras_gpt.bench.options import CONFIGS  # noqa: E402
from keras_gpt.generation import torch_decoder  # noqa: E402
from keras_gpt.layers import attention  # noqa: E402
from keras_gpt.training import recipe as training  # noqa: E402

SMOKE = dict(n_layers=1, n_heads=2, d_model=16, vocab_size=64,
             context_length=64)
CHECKS = ("attention", "loss", "decode-vectors", "tf-xla", "torch-gemm",
          "torch-decode", "torch-adam", "torch-direct", "torch-products")
ONLY = {"decode-vectors": "jax", "tf-xla": "tensorflow", "torch-gemm": "torch",
        "torch-decode": "torch", "torch-adam": "torch", "torch-direct": "torch",
        "torch-products": "torch"}
DECODING = ("decode-vectors", "torch-decode")


def _switch(check, on):
    """[(module, attribute, value)] that turn `check`'s change on or off."""
    if check == "attention":
        return [(attention, "_QUERY_BLOCKS",
                 attention._QUERY_BLOCKS if on else 1)]
    if check == "loss":
        off = lambda: keras.losses.SparseCategoricalCrossentropy(  # noqa: E731
            from_logits=True)
        return [(training, "next_token_loss",
                 training.next_token_loss if on else off),
                # GPT.compile would turn Keras' loss into ours again.
                (compiling, "same_computation", compiling.same_computation
                 if on else (lambda loss: None))]
    if check == "torch-gemm":
        picked = pytorch.cpu_gemm()
        other = "torch" if picked == "onednn" else "onednn"
        return [(pytorch, "_CPU_GEMM", picked if on else other)]
    if check == "torch-decode":  # a margin of 0: oneDNN always
        return [(torch_decoder, "_PLAIN_MARGIN",
                 torch_decoder._PLAIN_MARGIN if on else 0.0)]
    if check == "torch-adam":
        return [(torch_adam, "install",
                 torch_adam.install if on else (lambda optimizer: False))]
    if check == "torch-direct":
        return [(layer_calls, "_TORCH", on)]
    if check == "torch-products":
        return [(pytorch, "DIRECT_PRODUCTS", on)]
    if check == "tf-xla":
        off = lambda requested: requested  # noqa: E731  (Keras decides)
        return [(module, "training_jit_compile",
                 backend_lib.training_jit_compile if on else off)
                for module in (training, compiling)]
    return [(backend_lib, "_JAX_CPU_DECODING",
             backend_lib._JAX_CPU_DECODING if on else None)]


def _built(check, on, make):
    """`make()`'s runner with the switch set, and its first call's seconds
    (traced, compiled). The switch is set again around every call: eager
    PyTorch reads it at each step, not once when tracing."""
    switches = _switch(check, on)

    def switched(fn):
        def call():
            saved = [getattr(module, name) for module, name, _ in switches]
            for module, name, value in switches:
                setattr(module, name, value)
            try:
                return fn()
            finally:
                for (module, name, _), value in zip(switches, saved):
                    setattr(module, name, value)
        return call

    run = switched(switched(make)())  # built with it, and called with it
    first = time.perf_counter()
    run()
    return run, time.perf_counter() - first


def _interleaved(runs, rounds):
    """Best wall and CPU seconds per name, rounds of one call each."""
    wall = {name: float("inf") for name in runs}
    cpu = dict(wall)
    for _ in range(rounds):
        for name, fn in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    return wall, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="+", choices=CHECKS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--config", choices=list(CONFIGS), default="default")
    parser.add_argument("--seq-len", type=int,
                        help="Context length (default: the config's).")
    parser.add_argument("--steps", type=int, default=2,
                        help="Training steps per timed call (default 2).")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    for flag in ("rounds", "steps", "seq_len"):
        if flag == "seq_len" and args.seq_len is None:
            continue
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} "
                         "must be >= 1.")
    for check in args.checks:
        if ONLY.get(check, keras.backend.backend()) != keras.backend.backend():
            parser.error(f"{check} needs KERAS_BACKEND={ONLY[check]} (got "
                         f"{keras.backend.backend()}).")
    named = CONFIGS[args.config]
    model = dict(SMOKE if args.smoke else named["model"])
    if args.seq_len and not args.smoke:
        model["context_length"] = args.seq_len
    spec = {"model": model,
            "dtype": "float32",
            "batch_size": 2 if args.smoke else named["batch_size"]}
    rounds = 1 if args.smoke else args.rounds
    m = spec["model"]
    rng = np.random.default_rng(0)
    steps = args.steps
    ids = rng.integers(0, m["vocab_size"], (spec["batch_size"] * steps,
                                            m["context_length"]))
    ids = ids.astype("int32")
    prompt = rng.integers(0, m["vocab_size"], (1, 16)).astype("int32")
    new_tokens = 8 if args.smoke else min(200, m["context_length"] - 16)
    print(f"backend {keras.backend.backend()}; {m}; batch "
          f"{spec['batch_size']}, {steps} steps per call")
    for check in args.checks:
        if check in DECODING:
            tokens, calls = new_tokens, 1
            make = lambda: implementations.decode_keras_gpt(  # noqa: E731
                spec, prompt, new_tokens, "greedy")
        else:
            tokens, calls = ids.size, steps
            make = lambda: implementations.train_keras_gpt(  # noqa: E731
                spec, ids, ids)
        if (check == "torch-gemm"
                and not pytorch.onednn_linear_available()):
            print(f"{check:15s} skipped: this PyTorch has no oneDNN linear op")
            continue
        (on_run, on_first), (off_run, off_first) = (
            _built(check, True, make), _built(check, False, make))
        wall, cpu = _interleaved({"on": on_run, "off": off_run}, rounds)
        on, off = (tokens / wall[k] for k in ("on", "off"))
        label = (f" (on: {pytorch.cpu_gemm()})"
                 if check == "torch-gemm" else "")
        print(f"{check:15s} on {on:9.1f} tok/s  off {off:9.1f} tok/s  "
              f"on/off {on / off:.3f}x{label}")
        print(f"{'':15s} cpu ms per step: on {1000 * cpu['on'] / calls:.1f}"
              f", off {1000 * cpu['off'] / calls:.1f}; first call s: on "
              f"{on_first:.1f}, off {off_first:.1f}")


if __name__ == "__main__":
    main()
