"""Training speed while other processes compete for the cores.

For each OpenMP wait policy and each number of competing processes (busy
Python loops, one core each, started here and stopped after), a fresh
process times the benchmark's training rows (keras_gpt, keras_gpt_plain,
keras_hub, hf_torch: `keras_gpt.bench.implementations`) interleaved, best
of the rounds, and prints tokens/s and each row over KerasHub's. The
policy is an environment variable, read when PyTorch's OpenMP starts, so
each setting gets its own process:

- default: OMP_WAIT_POLICY unset (libgomp spins about 300,000 times
  before it sleeps), what the `keras-gpt` command leaves (see
  `keras_gpt.commands.console.size_threads`);
- passive: OMP_WAIT_POLICY=PASSIVE (no spinning at all);
- spin10k: GOMP_SPINCOUNT=10000 (a short spin, then sleep).

    KERAS_BACKEND=torch .venv/bin/python tools/contention.py \
        --config baby --compete 0,1 --policies default,passive

`--smoke`: the bench's smoke model, one step, one round, 0 and 1
competitors, the passive policy (a check that it runs: about 90 s).
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

POLICIES = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
            "spin10k": {"GOMP_SPINCOUNT": "10000"}}


def _child(args):
    """Times the rows in this process; prints one JSON line."""
    from keras_gpt.bench import _available, implementations, measure
    from keras_gpt.bench.options import CONFIGS, SMOKE_MODEL

    named = CONFIGS[args.config]
    spec = {"model": SMOKE_MODEL if args.smoke else named["model"],
            "batch_size": 2 if args.smoke else named["batch_size"],
            "dtype": "float32"}
    x, y = implementations.random_batches(spec["model"], spec["batch_size"],
                                          args.steps)
    names, _ = _available(args.skip.split(",") if args.skip else [])
    blocks = {}
    for name in names:
        blocks[name] = implementations.TRAINERS[name](spec, x, y)
        blocks[name]()  # compiled, warm
    best = measure.interleaved_best(blocks, args.rounds)
    tokens = x.size
    print(json.dumps({name: tokens / best[name] for name in names}))


def _compete(count):
    """`count` busy processes (each spins one core until stopped)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(count)]


def _measure(args, policy, competitors):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(POLICIES[policy])
    busy = _compete(competitors)
    try:
        time.sleep(0.5 if busy else 0)
        result = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child",
             "--config", args.config, "--steps", str(args.steps),
             "--rounds", str(args.rounds), "--skip", args.skip,
             *(["--smoke"] if args.smoke else [])],
            capture_output=True, text=True, env=env, timeout=3600)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    from keras_gpt.bench.options import CONFIGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=list(CONFIGS), default="baby")
    parser.add_argument("--compete", default="0,1",
                        help="Comma-separated numbers of busy processes.")
    parser.add_argument("--policies", default="default,passive",
                        help="Comma-separated: " + ", ".join(POLICIES))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", default="",
                        help="Rows to leave out (as keras-gpt bench --skip).")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--child", action="store_true",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.rounds = 1, 1
        args.compete, args.policies = "0,1", "passive"
    if args.child:
        return _child(args)
    try:
        counts = [int(c) for c in args.compete.split(",") if c]
    except ValueError:
        parser.error(f"--compete {args.compete!r}: expected integers.")
    policies = [p for p in args.policies.split(",") if p]
    for policy in policies:
        if policy not in POLICIES:
            parser.error(f"--policies: unknown {policy!r}; expected one of "
                         f"{', '.join(POLICIES)}.")
    if any(c < 0 for c in counts) or min(args.steps, args.rounds) < 1:
        parser.error("--compete must be >= 0, --steps and --rounds >= 1.")
    import keras

    print(f"backend {keras.backend.backend()}; config {args.config}; "
          f"{os.cpu_count()} CPUs; tokens/s (x: over keras_hub)")
    for policy in policies:
        for count in counts:
            speeds = _measure(args, policy, count)
            hub = speeds.get("keras_hub")
            cells = "  ".join(
                f"{name} {tps:.0f}" + (f" ({tps / hub:.2f}x)" if hub else "")
                for name, tps in speeds.items())
            print(f"policy {policy:8s} competing {count}: {cells}",
                  flush=True)


if __name__ == "__main__":
    main()
