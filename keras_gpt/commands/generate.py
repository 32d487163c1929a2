"""`keras-gpt generate RUN_DIR`: sample text from a trained run, streaming
each token to the terminal as it is decided.

The prompt comes from --prompt, else from standard input when it is not a
terminal, else from an interactive prompt (one generation per line; an empty
line starts from end-of-text, Ctrl-D quits).
"""

import sys

from keras_gpt.checkpoints import load_model, saved_gpt_config
from keras_gpt.commands.flags import as_flags, integer, print_error, real
from keras_gpt.files import run_model_file, run_tokenizer_dir
from keras_gpt.generation import generate


DEFAULT_MAX_NEW_TOKENS = 200


def register(commands):
    p = commands.add_parser(
        "generate", help="Sample text from a trained run (streams as it goes).",
        description=__doc__)
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="A run directory: model.keras and the tokenizer "
                        "(in RUN_DIR/tokenizer or RUN_DIR).")
    p.add_argument("--prompt", help="The prompt text (default: standard "
                                    "input, or one prompt per line typed).")
    p.add_argument("--max-new-tokens", type=integer(1),
                   help=f"Most tokens per sample (default "
                        f"{DEFAULT_MAX_NEW_TOKENS}, or the room the context "
                        "leaves after the prompt if less).")
    p.add_argument("--temperature", type=real(0), default=1.0,
                   help="0 is greedy; higher is more random (default 1).")
    p.add_argument("--top-k", type=integer(0),
                   help="Sample among the k most likely tokens (default 0: "
                        "off).")
    p.add_argument("--top-p", type=real(0, 1, low_open=True),
                   help="Nucleus: sample among the most likely tokens "
                        "holding probability p (default 1: off).")
    p.add_argument("--min-p", type=real(0, 1),
                   help="Drop tokens less likely than min-p times the top "
                        "(default 0: off).")
    p.add_argument("--repetition-penalty", type=real(0, low_open=True),
                   help="> 1 makes repeating tokens less likely (default 1: "
                        "off).")
    p.add_argument("--seed", type=integer(0),
                   help="Same seed, same output (sample i uses seed + i; "
                        "default: a random seed).")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="Stop at this text (repeatable; default: none); "
                        "end-of-text always stops.")
    p.add_argument("--num-samples", type=integer(1), default=1,
                   help="Samples per prompt (default 1).")
    p.add_argument("--truncate-prompt", action="store_true",
                   help="Keep the end of a prompt that does not fit "
                        "(default: off, an error).")
    p.add_argument("--sliding-window", action="store_true",
                   help="Let generation run past the context length "
                        "(approximate; default: off).")
    p.set_defaults(run=run)


def run(args, stdin=None, stdout=None):
    """Runs the command; returns the exit status.

    Every flag is checked before the model loads (ranges by argparse, the
    vocabulary and context from the checkpoint's saved config).

    Raises:
        FileNotFoundError: RUN_DIR, its model.keras or its tokenizer is
            missing.
        ValueError: a bad setting (the message names value and limit), or
            a damaged checkpoint (`keras_gpt.checkpoints.CheckpointError`).
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    saved = saved_gpt_config(run_model_file(args.run_dir))
    tokenizer = load_tokenizer(args.run_dir)
    vocab, context = saved["vocab_size"], saved["context_length"]
    if tokenizer.vocab_size > vocab:
        raise ValueError(
            f"The tokenizer in {args.run_dir} has vocab_size="
            f"{tokenizer.vocab_size}, more than the model's {vocab}: they "
            "are not from the same run.")
    if args.max_new_tokens is not None and args.max_new_tokens >= context \
            and not args.sliding_window:
        raise ValueError(
            f"--max-new-tokens {args.max_new_tokens} leaves no room for a "
            f"prompt in the model's context of {context} tokens: lower it "
            "(below the context), or pass --sliding-window (approximate).")
    if args.top_k is not None and args.top_k > vocab:
        raise ValueError(f"--top-k {args.top_k} is out of range: the model "
                         f"has {vocab} tokens, so k must be in [0, {vocab}] "
                         "(0 is off).")
    top_k = args.top_k or None
    model = load_model(run_model_file(args.run_dir))

    def write(row, token, text):
        if text:
            stdout.write(text)
            stdout.flush()

    def sample(prompt):
        max_new = new_tokens(args, prompt, tokenizer, context)
        for i in range(args.num_samples):
            if args.num_samples > 1:
                stdout.write(f"--- sample {i + 1} ---\n")
            generate(
                model, prompt, tokenizer=tokenizer, max_new_tokens=max_new,
                temperature=args.temperature, top_k=top_k,
                top_p=args.top_p, min_p=args.min_p,
                repetition_penalty=args.repetition_penalty,
                stop=args.stop or None,
                seed=None if args.seed is None else args.seed + i,
                stream=write, truncate_prompt=args.truncate_prompt,
                sliding_window=args.sliding_window)
            stdout.write("\n")
            stdout.flush()

    if args.prompt is not None:
        sample(args.prompt)
    elif not stdin.isatty():
        text = stdin.read()
        sample(text[:-1] if text.endswith("\n") else text)
    else:
        while True:
            try:
                line = input("prompt> ")
            except EOFError:
                stdout.write("\n")
                break
            try:
                sample(line)
            except ValueError as error:  # e.g. a prompt too long: next one
                print_error("generate", as_flags(str(error),
                                                 getattr(args, "parser", None)))
    return 0


def new_tokens(args, prompt, tokenizer, context):
    """--max-new-tokens, or by default as many as fit after the prompt (at
    most DEFAULT_MAX_NEW_TOKENS).

    A prompt that fills the context leaves no room: an error naming the
    flags that make room, unless one of them is given.
    """
    if args.max_new_tokens is not None:
        return args.max_new_tokens
    if args.sliding_window:
        return DEFAULT_MAX_NEW_TOKENS
    used = max(1, len(tokenizer.encode(prompt)))  # "" starts from end-of-text
    room = context - used
    if room >= 1:
        return min(DEFAULT_MAX_NEW_TOKENS, room)
    if args.truncate_prompt:
        return min(DEFAULT_MAX_NEW_TOKENS, max(1, context // 2))
    raise ValueError(
        f"The prompt has {used} tokens, which fill the model's context of "
        f"{context}: shorten it, or pass --truncate-prompt (keep its end) or "
        "--sliding-window (approximate).")


def load_run(run_dir):
    """`(model, tokenizer)` of a run directory, with clear errors."""
    model_path = run_model_file(run_dir)
    saved_gpt_config(model_path)
    tokenizer = load_tokenizer(run_dir)
    model = load_model(model_path)
    vocab = model.config.vocab_size
    if tokenizer.vocab_size > vocab:
        raise ValueError(
            f"The tokenizer in {run_dir} has vocab_size="
            f"{tokenizer.vocab_size}, more than the model's {vocab}: they "
            "are not from the same run.")
    return model, tokenizer


def load_tokenizer(run_dir):
    """The run's tokenizer, from RUN_DIR/tokenizer or else RUN_DIR."""
    from keras_gpt.tokenizers import load_tokenizer as load

    return load(run_tokenizer_dir(run_dir))
