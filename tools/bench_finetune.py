"""LoRA against full fine-tuning, from the same trained run, printed.

1. A base run: `keras-gpt train --steps 1500 --dropout 0.1` on the default
   corpus (`--base-steps`, `--base-dropout`): a run trained for its
   validation loss, not the two-minute demo of `keras-gpt train`'s
   defaults (300 steps, no dropout; `--base-steps 300 --base-dropout 0`
   gives that one). Or `--base RUN_DIR`, a run already trained.
2. The new corpus: the source files of Python's own `asyncio` package
   (code, not English; it ships with every Python), or `--data`.
3. Two runs from the base with `keras_gpt.finetune.finetune` and the same
   steps, data and seed: full fine-tuning and LoRA (rank 8, default
   targets), each with `keras-gpt train --init-from`'s defaults unless
   `--learning-rate` / `--lora-learning-rate` say otherwise. Printed: the
   base's validation loss on the new corpus (step 0), each run's final
   one, the drops and their ratio, trainable parameters, adapter size.
4. Step time: one training step of each, timed interleaved (full, LoRA,
   full, ...) in this process, best of `--rounds`.

Run (each backend):
    KERAS_BACKEND=jax .venv/bin/python tools/bench_finetune.py \\
        [--base RUN_DIR] [--steps 400] [--json OUT] [--keep NEW_DIR]
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gpt.backend.timing import interleaved_best  # noqa: E402
from keras_gpt.finetune import finetune, load_source  # noqa: E402
from keras_gpt.training.options import DEFAULTS  # noqa: E402
from keras_gpt.training.run import RunOptions, train_run  # noqa: E402
from keras_gpt.training.source import build_model  # noqa: E402


def _asyncio_sources():
    import asyncio

    return str(Path(asyncio.__file__).parent)


def _metrics(run_dir):
    with open(Path(run_dir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def _step_times(base, batch_size, context, rounds, lora_rank,
                learning_rates):
    """Best seconds of one training step, full and LoRA, interleaved."""
    from keras_gpt.training import compile_for_pretraining

    source = load_source(base)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, source.model.config.vocab_size,
                       (batch_size * 4, context + 1)).astype("int32")
    x, y = ids[:, :-1], ids[:, 1:]
    models, steps = {}, {}
    for name, rank in (("full", None), ("lora", lora_rank)):
        o = {"lora_rank": rank, "quantized": None}
        model = build_model(o, source.model.config, source)
        compile_for_pretraining(model, total_steps=10 ** 6,
                                learning_rate=learning_rates[name])
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # warm
        models[name] = model
        steps[name] = (lambda m=model: m.fit(
            x, y, batch_size=batch_size, epochs=1, verbose=0))
    best = interleaved_best(steps, rounds)
    return {name: best[name] / 4 for name in best}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help="A trained run (default: train one).")
    p.add_argument("--base-steps", type=int, default=1500,
                   help="Steps of the base run it trains (without --base).")
    p.add_argument("--base-dropout", type=float, default=0.1,
                   help="Dropout of the base run it trains.")
    p.add_argument("--data", nargs="+", help="The new corpus (default: "
                   "the source files of Python's asyncio).")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--learning-rate", type=float,
                   help="Full fine-tuning's (default: --init-from's).")
    p.add_argument("--lora-learning-rate", type=float,
                   help="LoRA's (default: --init-from's with LoRA).")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--keep", metavar="DIR", help="Keep the runs here.")
    args = p.parse_args(argv)
    for flag in ("steps", "eval_every", "base_steps", "rounds", "lora_rank"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} must "
                    f"be >= 1.")
    if not 0 <= args.base_dropout < 1:
        p.error(f"--base-dropout {args.base_dropout} must be in [0, 1).")
    if args.steps % args.eval_every:
        p.error(f"--steps {args.steps} must be a multiple of --eval-every "
                f"{args.eval_every}.")
    keep = Path(args.keep) if args.keep else None
    if keep and keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        p.error(f"--keep {args.keep} already holds files: give a new or "
                f"empty folder.")
    if args.base:
        try:
            load_source(args.base)
        except (OSError, ValueError) as error:
            p.error(str(error).replace("--init-from", "--base", 1))
    from keras_gpt.finetune.run import FINETUNE_DEFAULTS, LORA_LEARNING_RATE

    lrs = {"full": args.learning_rate or FINETUNE_DEFAULTS["learning_rate"],
           "lora": args.lora_learning_rate or LORA_LEARNING_RATE}
    data = args.data or [_asyncio_sources()]
    root = keep or Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    cache = root / "cache"
    base = args.base
    if base is None:
        base = root / "base"
        every = DEFAULTS["eval_every"]  # or one evaluation, at the end
        every = every if args.base_steps % every == 0 else args.base_steps
        train_run(base, RunOptions(samples=0, steps=args.base_steps,
                                   dropout=args.base_dropout,
                                   eval_every=every),
                  cache_dir=cache, verbose=2)
    common = dict(data=data, steps=args.steps, eval_every=args.eval_every,
                  samples=0, cache_dir=cache, verbose=2)
    finetune(base, root / "full", learning_rate=lrs["full"], **common)
    finetune(base, root / "lora", lora_rank=args.lora_rank,
             learning_rate=lrs["lora"], **common)
    full, lora = _metrics(root / "full"), _metrics(root / "lora")
    start = full[0]["val_loss"]
    drops = {"full": start - full[-1]["val_loss"],
             "lora": start - lora[-1]["val_loss"]}
    model = keras.models.load_model(root / "lora" / "model.keras")
    trainable, total = model.lora_parameter_counts()
    config = model.config
    times = _step_times(base, 16, config.context_length, args.rounds,
                        args.lora_rank, lrs)
    result = {
        "backend": keras.backend.backend(), "base": str(base),
        "data": data, "steps": args.steps, "learning_rates": lrs,
        "val_loss_step_0": start, "val_loss_full": full[-1]["val_loss"],
        "val_loss_lora": lora[-1]["val_loss"], "drop_full": drops["full"],
        "drop_lora": drops["lora"],
        "drop_ratio": drops["lora"] / drops["full"],
        "lora_trainable": trainable, "total_params": total,
        "trainable_fraction": trainable / total,
        "adapter_bytes": (root / "lora" / "lora.safetensors").stat().st_size,
        "step_s_full": times["full"], "step_s_lora": times["lora"],
        "step_speed_lora_vs_full": times["full"] / times["lora"]}
    print(f"base {base}: validation loss on the new corpus {start:.4f}")
    print(f"after {args.steps} steps: full {result['val_loss_full']:.4f} "
          f"(drop {drops['full']:.4f}, lr {lrs['full']:g}), LoRA rank "
          f"{args.lora_rank} {result['val_loss_lora']:.4f} (drop "
          f"{drops['lora']:.4f}, lr {lrs['lora']:g}): LoRA / full = "
          f"{result['drop_ratio']:.2f}")
    print(f"LoRA trains {trainable:,} of {total:,} parameters "
          f"({100 * trainable / total:.2f}%); adapter file "
          f"{result['adapter_bytes'] / 1024:.1f} KiB")
    speed = result["step_speed_lora_vs_full"]
    print(f"training step (batch 16, interleaved, best of {args.rounds}): "
          f"full {1e3 * times['full']:.1f} ms, LoRA "
          f"{1e3 * times['lora']:.1f} ms ({speed:.2f}x full's speed)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
