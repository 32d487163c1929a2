"""`keras-gpt plan PRESET --device-memory 141GB`: memory per device for
training, and the smallest data x model parallel layout that fits."""

from keras_gpt.commands.flags import integer, real
from keras_gpt.config import PRESETS, GPTConfig
from keras_gpt.parallel.plan import (DEFAULT_BATCH, DEFAULT_HEADROOM, PRECISIONS,
                            parse_bytes, report, table)


def register(commands):
    parser = commands.add_parser(
        "plan", help="Training memory per device and the smallest data x "
                     "model parallel layout that fits.",
        description=__doc__ + " Formulas: keras_gpt/parallel/plan.py.")
    parser.add_argument("preset", choices=[*PRESETS, "all"], metavar="PRESET",
                        help=f"One of: {', '.join(PRESETS)}; or 'all' for a "
                             "table of every preset (required).")
    parser.add_argument("--device-memory", required=True, metavar="SIZE",
                        help="Memory of one device, e.g. 141GB (H200), "
                             "80GB, 16GiB (required, no default).")
    parser.add_argument("--batch-size", type=integer(1), default=DEFAULT_BATCH,
                        help="Sequences per global batch (default "
                             f"{DEFAULT_BATCH}).")
    parser.add_argument("--context-length", type=integer(1),
                        help="Tokens per sequence (default: the preset's).")
    parser.add_argument("--vocab-size", type=integer(1),
                        help="Vocabulary size (default: the preset's).")
    parser.add_argument("--dtype", choices=list(PRECISIONS),
                        default="mixed_bfloat16",
                        help="Keras dtype policy (default mixed_bfloat16).")
    parser.add_argument("--headroom", type=real(0, 1, high_open=True),
                        default=DEFAULT_HEADROOM,
                        help="Fraction of the device kept free (default "
                             f"{DEFAULT_HEADROOM}).")
    parser.set_defaults(run=run)


def run(args):
    memory = parse_bytes(args.device_memory)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} must be >= 1.")
    if not 0 <= args.headroom < 1:
        raise ValueError(f"--headroom {args.headroom} must be in [0, 1).")
    overrides = {k: v for k, v in (("vocab_size", args.vocab_size),
                                    ("context_length", args.context_length))
                 if v is not None}
    common = dict(batch_size=args.batch_size, dtype=args.dtype,
                  headroom=args.headroom)
    if args.preset == "all":
        if overrides:
            raise ValueError("--vocab-size and --context-length apply to one "
                             "preset, not to 'all'.")
        print(table(list(PRESETS), memory, **common))
        return 0
    config = GPTConfig.from_preset(args.preset, **overrides)
    print(report(config, memory, name=args.preset, **common))
    return 0
