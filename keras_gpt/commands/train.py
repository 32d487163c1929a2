"""`keras-gpt train`: train a GPT on text files, or on the embedded default
corpus (the Python documentation shipped with CPython) when --data is
omitted."""

import time

from keras_gpt.commands.flags import integer, real
from keras_gpt.config import PRESETS
from keras_gpt.finetune import finetune, load_source
from keras_gpt.finetune.run import FINETUNE_DEFAULTS, LORA_LEARNING_RATE
from keras_gpt.training.callbacks import NonFiniteLossError
from keras_gpt.training.options import DEFAULT_MODEL, DEFAULTS, RunOptions
from keras_gpt.training.run import train_run
from keras_gpt.training.run_dir import RunDir

EPILOG = """A run directory can always be continued: --resume goes on from
its last checkpoint (step, optimizer state, position in the data), or from
step 0 with the stored options when it was stopped before its first
checkpoint. --resume --steps N with another N re-plans the learning rate
from the checkpoint's step: a half cosine from its rate there to 10%% of
the peak at step N (a finished run goes on at that final rate)."""


def register(commands):
    p = commands.add_parser(
        "train", help=__doc__.splitlines()[0][len("`keras-gpt train`: "):],
        description=__doc__, epilog=EPILOG)
    d = DEFAULTS
    positive = integer(1)
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help="Text files, folders (recursive) or globs, stored as "
                        "absolute paths. Default: the Python documentation "
                        "topics shipped with Python (466 KB).")
    p.add_argument("--sft", metavar="DATA.jsonl",
                   help="With --init-from: supervised fine-tuning on JSON "
                        "Lines of {\"prompt\", \"completion\"} or "
                        "{\"messages\": [{\"role\", \"content\"}, ...]}; "
                        "the loss counts the completion (assistant) tokens "
                        "only. --val-fraction of the lines is held out "
                        "(default: none, pretraining on --data).")
    p.add_argument("--tokenizer", choices=("bpe", "byte", "char"),
                   help=f"Default {d['tokenizer']}.")
    p.add_argument("--vocab-size", type=integer(2),
                   help=f"BPE vocabulary size (default {d['vocab_size']}).")
    p.add_argument("--preset", choices=list(PRESETS), metavar="PRESET",
                   help="A GPTConfig preset, one of: "
                        f"{', '.join(PRESETS)}; the model flags below "
                        "override it (default: none, the model flags' "
                        "defaults).")
    for flag in ("n_layers", "n_heads", "d_model", "context_length"):
        p.add_argument("--" + flag.replace("_", "-"), type=positive,
                       help=f"Default {DEFAULT_MODEL[flag]} (or the "
                            "preset's).")
    p.add_argument("--positions", choices=("learned", "sinusoidal", "rotary"),
                   help="Position encoding (default learned, or the "
                        "preset's).")
    p.add_argument("--dropout", type=real(0, 1, high_open=True),
                   help=f"Default {d['dropout']}.")
    p.add_argument("--batch-size", type=positive,
                   help=f"Default {d['batch_size']}.")
    p.add_argument("--steps", type=positive,
                   help=f"Default {d['steps']}. With --resume, a new total "
                        "(see below).")
    p.add_argument("--learning-rate", type=real(0, low_open=True),
                   help=f"Peak learning rate (default {d['learning_rate']}).")
    p.add_argument("--warmup-steps", type=integer(0),
                   help="Linear warmup from 0 (default 10%% of --steps).")
    p.add_argument("--eval-every", type=positive,
                   help=f"Steps between evaluations and checkpoints "
                        f"(default {d['eval_every']}).")
    p.add_argument("--eval-steps", type=positive,
                   help=f"Validation batches per evaluation "
                        f"(default {d['eval_steps']}).")
    p.add_argument("--val-fraction", type=real(0, 1, low_open=True,
                                               high_open=True),
                   help=f"Last part of the tokens kept for validation "
                        f"(default {d['val_fraction']}).")
    p.add_argument("--seed", type=integer(0), help=f"Default {d['seed']}.")
    p.add_argument("--samples", type=integer(0),
                   help=f"Continuations printed per evaluation "
                        f"(default {d['samples']}).")
    p.add_argument("--data-parallel", type=positive, metavar="N",
                   help="Split each batch over N devices: JAX "
                        "keras.distribution.DataParallel, TensorFlow "
                        "tf.distribute.MirroredStrategy (without GPUs, the "
                        "CPU is split into N logical devices; JAX needs "
                        "JAX_NUM_CPU_DEVICES for that). The batch must be a "
                        "multiple of N. Not on torch. Default 1.")
    p.add_argument("--model-parallel", type=positive, metavar="M",
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
    p.add_argument("--lora-rank", type=positive, metavar="R",
                   help="With --init-from: train LoRA factors of rank R "
                        "only (the source's weights stay frozen); the run "
                        "keeps them in lora.safetensors too (default: none, "
                        "every weight trains).")
    p.add_argument("--lora-alpha", type=real(0, low_open=True), metavar="A",
                   help="LoRA scale numerator: delta = (A / R) x A B "
                        "(default A = R).")
    p.add_argument("--lora-targets", metavar="NAMES",
                   help="Comma-separated projections to adapt: qkv (the "
                        "default), out, up, down, unembedding (untied only).")
    p.add_argument("--out", metavar="RUN_DIR",
                   help="Run directory (default runs/<date-time>).")
    p.add_argument("--resume", action="store_true",
                   help="Continue the run in --out (default: off, a new "
                        "run).")
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
                              cache_dir=args.cache_dir,
                              source=_source_to_restart(out, args.resume))
    except KeyboardInterrupt:
        print(f"\n{RunDir(out).after_interrupt()}", flush=True)
        return 130
    except NonFiniteLossError:
        print(flush=True)  # end the progress bar's line
        raise
    summary = ", ".join(f"{k} {v:.4g}" for k, v in final.items()
                        if isinstance(v, float))
    print(f"Done: {out} (step {final['step']}{', ' + summary if summary else ''})")
    return 0


def _source_to_restart(out, resume):
    """The source of a `--init-from` run stopped before its first
    checkpoint: `--resume` starts it again from the source's weights."""
    run = RunDir(out)
    if not resume or run.kind != "no_checkpoint":
        return None
    init_from = run.stored_options().get("init_from")
    return load_source(init_from["path"]) if init_from else None
