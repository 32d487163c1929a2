"""`keras-gpt dpo`: preference tuning (DPO) of a trained model on JSON Lines
of {"prompt", "chosen", "rejected"}; a new run directory."""

import time
from pathlib import Path

from keras_gpt.commands.flags import integer, real
from keras_gpt.finetune.dpo_run import DPO_DEFAULTS, DPO_LORA_LEARNING_RATE, dpo


def register(commands):
    p = commands.add_parser(
        "dpo", help="Preference tuning (DPO) of a trained model on chosen / "
                    "rejected pairs.", description=__doc__)
    d = DPO_DEFAULTS
    positive = integer(1)
    p.add_argument("--init-from", required=True, metavar="SOURCE",
                   help="The model to tune (and, frozen, the reference): a "
                        "run directory, a Hugging Face GPT-2 folder, a "
                        "KerasHub preset folder or .keras file.")
    p.add_argument("--data", required=True, metavar="PREFS.jsonl",
                   help="One {\"prompt\", \"chosen\", \"rejected\"} object "
                        "per line. Pairs with chosen == rejected are skipped "
                        "(counted); prompts too long for the context lose "
                        "their oldest tokens (counted).")
    p.add_argument("--beta", type=float,
                   help=f"DPO's temperature, > 0 (default {d['beta']}).")
    p.add_argument("--lora-rank", type=positive, metavar="R",
                   help="Train LoRA factors of rank R only; the reference is "
                        "then the model without them (no second copy). "
                        "Without it every weight trains and the reference's "
                        "log-probabilities are computed once and cached.")
    p.add_argument("--lora-alpha", type=real(0, low_open=True), metavar="A",
                   help="LoRA scale numerator (default A = R).")
    p.add_argument("--lora-targets", metavar="NAMES",
                   help="Projections to adapt: qkv (default), out, up, down, "
                        "unembedding (untied only).")
    p.add_argument("--steps", type=positive, help=f"Default {d['steps']}.")
    p.add_argument("--batch-size", type=positive,
                   help=f"Pairs per step (default {d['batch_size']}).")
    p.add_argument("--learning-rate", type=real(0, low_open=True),
                   help=f"Peak learning rate (default {d['learning_rate']}, "
                        f"{DPO_LORA_LEARNING_RATE} with LoRA).")
    p.add_argument("--warmup-steps", type=integer(0),
                   help="Default 10%% of --steps.")
    p.add_argument("--eval-every", type=positive,
                   help=f"Steps between evaluations and checkpoints "
                        f"(default {d['eval_every']}).")
    p.add_argument("--eval-steps", type=positive,
                   help=f"Held-out batches per evaluation at most "
                        f"(default {d['eval_steps']}).")
    p.add_argument("--val-fraction",
                   type=real(0, 1, low_open=True, high_open=True),
                   help=f"Pairs held out (default {d['val_fraction']}).")
    p.add_argument("--seed", type=integer(0), help=f"Default {d['seed']}.")
    p.add_argument("--samples", type=integer(0),
                   help=f"Held-out prompts answered at each evaluation "
                        f"(default {d['samples']}).")
    p.add_argument("--out", metavar="RUN_DIR",
                   help="New run directory (default runs/<date-time>).")
    p.add_argument("--cache-dir",
                   help="Token and reference cache (default "
                        "~/.cache/keras_gpt).")
    p.set_defaults(run=run)


def run(args):
    out = args.out or time.strftime("runs/%Y%m%d-%H%M%S")
    options = {k: getattr(args, k) for k in DPO_DEFAULTS if k != "beta"}
    try:
        final = dpo(args.init_from, out, data=args.data, beta=args.beta,
                    lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                    lora_targets=args.lora_targets, cache_dir=args.cache_dir,
                    **options)
    except KeyboardInterrupt:
        if (Path(out) / "model.keras").is_file():
            print(f"\nInterrupted: {out} holds the last checkpoint (a DPO "
                  f"run does not resume); start a new run from it with "
                  f"--init-from {out}.", flush=True)
        else:
            print("\nInterrupted before the first checkpoint: nothing was "
                  f"kept in {out}; run the same command to start again.",
                  flush=True)
        return 130
    summary = ", ".join(f"{k} {v:.4g}" for k, v in final.items()
                        if isinstance(v, float))
    print(f"Done: {out} (step {final['step']}, {summary})")
    return 0
