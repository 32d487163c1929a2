"""The benchmark's options: named sizes, flags, and their checks.

Shared by `keras-gpt bench` and `tools/benchmark.py`.
"""

from keras_gpt.bench import quantized

# The issue-4 benchmark model (the default) and nanoGPT's CPU "baby" config
# (train_shakespeare_char on a laptop: 4 layers, 4 heads, d_model 128,
# context 64, batch 12, a character vocabulary of 65).
ISSUE_MODEL = dict(n_layers=6, n_heads=6, d_model=384, vocab_size=8192,
                   context_length=256)
BABY_MODEL = dict(n_layers=4, n_heads=4, d_model=128, vocab_size=65,
                  context_length=64)
CONFIGS = {"default": dict(model=ISSUE_MODEL, batch_size=8),
           "baby": dict(model=BABY_MODEL, batch_size=12)}
# --smoke: the smallest shapes that still run every path (seconds).
SMOKE_MODEL = dict(n_layers=1, n_heads=2, d_model=16, vocab_size=32,
                   context_length=16)
SMOKE = dict(batch_size=2, steps=1, rounds=1, decode_batch_sizes=[1],
             prompt_length=4, new_tokens=4, peak=False)
# Our two training paths first, then the references.
OURS = ("keras_gpt", "keras_gpt_plain")
REFERENCES = ("keras_hub", "hf_torch")
NAMES = OURS + REFERENCES
PARTS = ("train", "decode")


def add_arguments(p):
    """The benchmark's options (shared by `keras-gpt bench` and tools/)."""
    p.add_argument("--config", choices=list(CONFIGS), default="default",
                   help="A named size: default (6 layers, 6 heads, d_model "
                        "384, vocab 8192, context 256, batch 8) or baby "
                        "(nanoGPT's CPU char config: 4 layers, 4 heads, "
                        "d_model 128, vocab 65, context 64, batch 12).")
    p.add_argument("--preset", help="A GPTConfig preset (e.g. gpt2-small) "
                   "instead of --config's model.")
    for flag in ("n_layers", "n_heads", "d_model", "vocab_size"):
        p.add_argument("--" + flag.replace("_", "-"), type=int)
    p.add_argument("--seq-len", type=int,
                   help="Training sequence length = context length "
                        "(default: the config's or preset's).")
    p.add_argument("--batch-size", type=int,
                   help="Default: the config's (8; baby 12).")
    p.add_argument("--steps", type=int, default=4,
                   help="Training steps per timed round (default 4).")
    p.add_argument("--rounds", type=int, default=3,
                   help="Timed rounds per implementation; the best counts.")
    p.add_argument("--dtype", default="float32",
                   choices=("float32", "mixed_bfloat16", "bfloat16"))
    p.add_argument("--decode-batch-sizes", default="1,8",
                   help="Comma-separated (default 1,8).")
    p.add_argument("--prompt-length", type=int, default=16)
    p.add_argument("--new-tokens", type=int,
                   help="Decoded tokens per row (default 200, or what the "
                        "context leaves after the prompt).")
    p.add_argument("--samplers", default="greedy",
                   help="Comma-separated: greedy, top_k (default greedy).")
    p.add_argument("--only", default=",".join(PARTS),
                   help="Comma-separated parts: " + ", ".join(PARTS) + ".")
    p.add_argument("--skip", default="",
                   help="Comma-separated rows to leave out: "
                        + ", ".join(NAMES[1:]) + ".")
    p.add_argument("--no-peak", action="store_true",
                   help="Do not time the matmul peak (no MFU line).")
    p.add_argument("--json", metavar="OUT", help="Write the results here.")
    p.add_argument("--smoke", action="store_true",
                   help="Smallest shapes (1 layer, d_model 16, vocab 32, "
                        "context 16), 1 step, 1 round, 4 new tokens, no "
                        "matmul peak: checks that every row runs.")
    quantized.add_arguments(p)


def options_from_args(args):
    """Validated benchmark options (a dict) from parsed arguments."""
    from keras_gpt.config import GPTConfig

    named = CONFIGS[args.config]
    model = dict(SMOKE_MODEL if args.smoke else named["model"])
    if args.preset:
        preset = GPTConfig.from_preset(args.preset)
        model = {k: getattr(preset, k) for k in model}
    for flag in ("n_layers", "n_heads", "d_model", "vocab_size"):
        if getattr(args, flag) is not None:
            model[flag] = getattr(args, flag)
    if args.seq_len is not None:
        model["context_length"] = args.seq_len
    new_tokens = args.new_tokens
    if new_tokens is None:
        new_tokens = max(1, min(200, model["context_length"]
                                - args.prompt_length))
    o = dict(config="smoke" if args.smoke else args.config, model=model,
             batch_size=args.batch_size or named["batch_size"],
             steps=args.steps, rounds=args.rounds, dtype=args.dtype,
             decode_batch_sizes=_ints(args.decode_batch_sizes,
                                      "--decode-batch-sizes"),
             prompt_length=args.prompt_length, new_tokens=new_tokens,
             samplers=_names(args.samplers, ("greedy", "top_k"), "--samplers"),
             only=_names(args.only, PARTS, "--only"),
             skip=_names(args.skip, NAMES[1:], "--skip"),
             peak=not args.no_peak, json=args.json,
             **quantized.options(args))
    if args.smoke:
        o.update(SMOKE)
    GPTConfig(**model)  # validates the shape (heads divide d_model, ...)
    for key in ("batch_size", "steps", "rounds", "prompt_length",
                "new_tokens"):
        if o[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')}={o[key]} must be "
                             ">= 1.")
    if o["prompt_length"] + o["new_tokens"] > model["context_length"]:
        raise ValueError(
            f"--prompt-length {o['prompt_length']} + --new-tokens "
            f"{o['new_tokens']} exceeds the context length "
            f"{model['context_length']}.")
    return o


def _ints(text, flag):
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected integers like 1,8.")
    if not values or min(values) < 1:
        raise ValueError(f"{flag} {text!r}: expected integers >= 1.")
    return values


def _names(text, allowed, flag):
    names = [v for v in text.split(",") if v]
    for name in names:
        if name not in allowed:
            raise ValueError(f"{flag}: unknown {name!r}; expected one of "
                             f"{', '.join(allowed)}.")
    return names
