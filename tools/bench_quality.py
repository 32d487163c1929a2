"""Quality bars of the training job, printed (not asserted).

1. `default`: `keras-gpt train` with default flags on the embedded default
   corpus; its validation loss beside that of a bigram model fit on the same
   training tokens (the GPT must be clearly below).
2. `char`: nanoGPT's CPU reference configuration (character level, 4 layers,
   4 heads, d_model 128, context 64, batch 12, 2000 steps, learning rate
   1e-3, no dropout, 10% validation) on the default corpus: validation loss
   and wall time.

Run once per backend:
    KERAS_BACKEND=jax .venv/bin/python tools/bench_quality.py [default|char]
    [--steps N] [--json OUT]
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_gpt.training.run import (RunOptions, bigram_loss, model_config,  # noqa: E402
                           prepare_data, resolve_options, train_run)

CHAR = dict(tokenizer="char", n_layers=4, n_heads=4, d_model=128,
            context_length=64, batch_size=12, steps=2000, learning_rate=1e-3,
            dropout=0.0, val_fraction=0.1, eval_every=100, eval_steps=20,
            samples=0)
# nanoGPT's CPU reference reaches this validation loss in about a minute.
TARGET = 1.88


def bench(name, steps=None):
    options = RunOptions(**(CHAR if name == "char" else {"samples": 0}))
    if steps:
        options.steps = options.eval_every = steps
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        final = train_run(os.path.join(tmp, "run"), options,
                          cache_dir=os.path.join(tmp, "cache"), verbose=2)
        wall = time.time() - start
        with open(os.path.join(tmp, "run", "metrics.jsonl")) as f:
            evaluations = [json.loads(line) for line in f]
        o = resolve_options(options)
        tokenizer, train, val = prepare_data(o, cache_dir=os.path.join(
            tmp, "cache"))
    config = model_config(o, tokenizer.vocab_size)
    reached = [e for e in evaluations if e["val_loss"] <= TARGET]
    return {"first_eval_at_or_below_target": reached[0] if reached else None,
            "bench": name, "backend": keras.backend.backend(),
            "steps": final["step"], "val_loss": final.get("val_loss"),
            "train_loss": final.get("loss"),
            "bigram_val_loss": bigram_loss(train, val, tokenizer.vocab_size),
            "wall_s": round(wall, 1), "tokens_per_s": final.get("tok/s"),
            "vocab_size": config.vocab_size, "n_layers": config.n_layers,
            "d_model": config.d_model, "context_length": config.context_length}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="*", default=["default", "char"],
                        choices=["default", "char"])
    parser.add_argument("--steps", type=int, help="Override (smoke runs).")
    parser.add_argument("--json", help="Append results here as JSON lines.")
    args = parser.parse_args()
    for name in args.which:
        result = bench(name, args.steps)
        print(f"\n[{result['backend']}] {name}: val loss "
              f"{result['val_loss']:.4f} vs bigram {result['bigram_val_loss']:.4f}"
              f" after {result['steps']} steps in {result['wall_s']} s "
              f"({result['tokens_per_s']:.0f} tokens/s)")
        first = result["first_eval_at_or_below_target"]
        if first:
            print(f"  val loss <= {TARGET} first at step {first['step']}, "
                  f"{first['wall_s']:.1f} s into the run")
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
