"""`keras-gpt train`: train a GPT on text files, or on the embedded default
corpus (the Python documentation shipped with CPython) when --data is
omitted."""

import time

from keras_gpt.config import PRESETS
from keras_gpt.finetune import finetune
from keras_gpt.finetune.run import FINETUNE_DEFAULTS, LORA_LEARNING_RATE
from keras_gpt.training.run import DEFAULT_MODEL, DEFAULTS, RunOptions, train_run


def register(commands):
    p = commands.add_parser(
        "train", help=__doc__.splitlines()[0][len("`keras-gpt train`: "):],
        description=__doc__)
    d = DEFAULTS
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help="Text files, folders (recursive) or globs. Default: "
                        "the Python documentation topics shipped with Python.")
    p.add_argument("--tokenizer", choices=("bpe", "byte", "char"),
                   help=f"Default {d['tokenizer']}.")
    p.add_argument("--vocab-size", type=int,
                   help=f"BPE vocabulary size (default {d['vocab_size']}).")
    p.add_argument("--preset", choices=list(PRESETS), metavar="PRESET",
                   help="A GPTConfig preset; the flags below override it.")
    for flag in ("n_layers", "n_heads", "d_model", "context_length"):
        p.add_argument("--" + flag.replace("_", "-"), type=int,
                       help=f"Default {DEFAULT_MODEL[flag]}.")
    p.add_argument("--positions", choices=("learned", "sinusoidal", "rotary"))
    p.add_argument("--dropout", type=float, help=f"Default {d['dropout']}.")
    p.add_argument("--batch-size", type=int, help=f"Default {d['batch_size']}.")
    p.add_argument("--steps", type=int, help=f"Default {d['steps']}.")
    p.add_argument("--learning-rate", type=float,
                   help=f"Peak learning rate (default {d['learning_rate']}).")
    p.add_argument("--warmup-steps", type=int,
                   help="Default 10%% of --steps.")
    p.add_argument("--eval-every", type=int,
                   help=f"Steps between evaluations and checkpoints "
                        f"(default {d['eval_every']}).")
    p.add_argument("--eval-steps", type=int,
                   help=f"Validation batches per evaluation "
                        f"(default {d['eval_steps']}).")
    p.add_argument("--val-fraction", type=float,
                   help=f"Last part of the tokens kept for validation "
                        f"(default {d['val_fraction']}).")
    p.add_argument("--seed", type=int, help=f"Default {d['seed']}.")
    p.add_argument("--samples", type=int,
                   help=f"Continuations printed per evaluation "
                        f"(default {d['samples']}).")
    p.add_argument("--data-parallel", type=int, metavar="N",
                   help="Split each batch over N devices: JAX "
                        "keras.distribution.DataParallel, TensorFlow "
                        "tf.distribute.MirroredStrategy (without GPUs, the "
                        "CPU is split into N logical devices; JAX needs "
                        "JAX_NUM_CPU_DEVICES for that). The batch must be a "
                        "multiple of N. Not on torch. Default 1.")
    p.add_argument("--model-parallel", type=int, metavar="M",
                   help="Split attention (by heads), the MLP and W_E over M "
                        "devices, Megatron-style (JAX only: "
                        "keras.distribution.ModelParallel with "
                        "GPT.get_layout_map). M must divide --n-heads and "
                        "d_mlp. Uses N x M devices in all. Default 1.")
    p.add_argument("--init-from", metavar="SOURCE",
                   help="Start from a trained model: a run directory, a "
                        "Hugging Face GPT-2 folder, a KerasHub preset folder "
                        "or .keras file. Its shape and tokenizer are kept "
                        "(the shape and tokenizer flags are refused); the "
                        "optimizer and schedule are fresh. Defaults then: "
                        f"--steps {FINETUNE_DEFAULTS['steps']}, "
                        f"--learning-rate {FINETUNE_DEFAULTS['learning_rate']}"
                        f" ({LORA_LEARNING_RATE} with LoRA).")
    p.add_argument("--lora-rank", type=int, metavar="R",
                   help="With --init-from: train LoRA factors of rank R "
                        "only (the source's weights stay frozen); the run "
                        "keeps them in lora.safetensors too.")
    p.add_argument("--lora-alpha", type=float, metavar="A",
                   help="LoRA scale numerator: delta = (A / R) x A B "
                        "(default A = R).")
    p.add_argument("--lora-targets", metavar="NAMES",
                   help="Comma-separated projections to adapt: qkv (the "
                        "default), out, up, down, unembedding (untied only).")
    p.add_argument("--out", metavar="RUN_DIR",
                   help="Run directory (default runs/<date-time>).")
    p.add_argument("--resume", action="store_true",
                   help="Continue the run in --out from its last checkpoint.")
    p.add_argument("--cache-dir",
                   help="Token file cache (default ~/.cache/keras_gpt).")
    p.set_defaults(run=run)


def run(args):
    if args.resume and not args.out:
        raise ValueError("--resume needs --out RUN_DIR (the run to continue).")
    out = args.out or time.strftime("runs/%Y%m%d-%H%M%S")
    fields = {f: getattr(args, f) for f in RunOptions.__dataclass_fields__}
    try:
        if args.init_from is not None:
            if args.resume:
                raise ValueError("--init-from starts a new run; --resume "
                                 "continues the one in --out.")
            final = finetune(args.init_from, out, cache_dir=args.cache_dir,
                             **fields)
        else:
            final = train_run(out, RunOptions(**fields), resume=args.resume,
                              cache_dir=args.cache_dir)
    except KeyboardInterrupt:
        print(f"\nInterrupted. {out} holds the last checkpoint; continue with "
              f"keras-gpt train --out {out} --resume")
        return 130
    summary = ", ".join(f"{k} {v:.4g}" for k, v in final.items()
                        if isinstance(v, float))
    print(f"Done: {out} (step {final['step']}{', ' + summary if summary else ''})")
    return 0
