"""JAX training steps with and without `keras_gpt.backend.jax_memory`.

What `GPT.compile` sets on JAX on a CPU (glibc keeping freed memory, JAX
dispatching in the calling thread) is process-wide, and memory a process
once kept serves it afterwards whatever the settings: the two sides cannot
share a process. So each round starts two fresh processes, one with the
settings (the default) and one with KERAS_GPT_KEEP_MEMORY=0, alternating
which goes first. The first calls `keep_step_memory` before JAX starts,
as the `keras-gpt` training commands do (`GPT.compile` alone applies
glibc's part only). Each builds the benchmark's plain-compile model
(`keras_gpt.bench.implementations.train_keras_gpt_plain`), trains once to
compile, then times `--steps` steps. Prints, per side, the best ms per step
over the rounds, with the page faults and system CPU milliseconds per step
(`getrusage`) of that run, and the ratio.

    KERAS_BACKEND=jax .venv/bin/python tools/jax_memory.py --config baby --steps 20 --rounds 3
    KERAS_BACKEND=jax .venv/bin/python tools/jax_memory.py --steps 3 --rounds 2

`--smoke`: the bench's smoke model, one step, one round.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SIDES = {"kept": "1", "default": "0"}


def _child(args):
    """Times `args.steps` steps in this process; prints one JSON line."""
    from keras_gpt.backend import jax_memory

    jax_memory.keep_step_memory()  # first, as the training commands do
    from keras_gpt.bench import implementations
    from keras_gpt.bench.options import CONFIGS, SMOKE_MODEL

    named = CONFIGS[args.config]
    spec = {"model": SMOKE_MODEL if args.smoke else named["model"],
            "batch_size": 2 if args.smoke else named["batch_size"],
            "dtype": "float32"}
    x, y = implementations.random_batches(spec["model"], spec["batch_size"],
                                          args.steps)
    block = implementations.train_keras_gpt_plain(spec, x, y)
    block()  # compiled, warm
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    block()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "kept": jax_memory.keep_step_memory(),
        "ms": 1000 * seconds / args.steps,
        "faults": (after.ru_minflt - before.ru_minflt) / args.steps,
        "sys_ms": 1000 * (after.ru_stime - before.ru_stime) / args.steps}))


def _measure(args, side):
    env = {**os.environ, "KERAS_GPT_KEEP_MEMORY": SIDES[side]}
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child",
         "--config", args.config, "--steps", str(args.steps),
         *(["--smoke"] if args.smoke else [])],
        capture_output=True, text=True, env=env, timeout=3600)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    row = json.loads(result.stdout.strip().splitlines()[-1])
    if row.pop("kept") != (side == "kept"):
        raise SystemExit(f"{side}: keep_step_memory did not "
                         f"{'apply' if side == 'kept' else 'stay off'}; "
                         "this needs JAX on a CPU with glibc (Linux).")
    return row


def main(argv=None):
    from keras_gpt.bench.options import CONFIGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=list(CONFIGS), default="baby")
    parser.add_argument("--steps", type=int, default=10,
                        help="Timed training steps per process.")
    parser.add_argument("--rounds", type=int, default=3,
                        help="Pairs of processes (best of them).")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--child", action="store_true",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.rounds = 1, 1
    for flag in ("steps", "rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} {getattr(args, flag)} must be >= 1.")
    import keras

    if keras.backend.backend() != "jax":
        parser.error(f"needs KERAS_BACKEND=jax (got "
                     f"{keras.backend.backend()}).")
    if args.child:
        return _child(args)
    print(f"config {args.config}; {args.steps} steps per process; "
          f"{os.cpu_count()} CPUs", flush=True)
    best = {}
    for round_ in range(args.rounds):
        order = list(SIDES) if round_ % 2 == 0 else list(SIDES)[::-1]
        for side in order:
            row = _measure(args, side)
            if side not in best or row["ms"] < best[side]["ms"]:
                best[side] = row
    for side, row in best.items():
        print(f"{side:8s} {row['ms']:8.1f} ms/step  {row['faults']:9.0f} "
              f"page faults/step  {row['sys_ms']:6.1f} ms system CPU/step")
    print(f"kept / default: {best['default']['ms'] / best['kept']['ms']:.2f}x"
          " faster")


if __name__ == "__main__":
    main()
