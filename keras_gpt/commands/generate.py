"""`keras-gpt generate RUN_DIR`: sample text from a trained run, streaming
each token to the terminal as it is decided.

The prompt comes from --prompt, else from standard input when it is not a
terminal, else from an interactive prompt (one generation per line; an empty
line starts from end-of-text, Ctrl-D quits).
"""

import sys

from keras_gpt.files import run_model_file, run_tokenizer_dir
from keras_gpt.generation import generate


def register(commands):
    p = commands.add_parser(
        "generate", help="Sample text from a trained run (streams as it goes).",
        description=__doc__)
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="A run directory: model.keras and the tokenizer "
                        "(in RUN_DIR/tokenizer or RUN_DIR).")
    p.add_argument("--prompt", help="The prompt text.")
    p.add_argument("--max-new-tokens", type=int, default=200,
                   help="Most tokens per sample (default 200).")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="0 is greedy; higher is more random (default 1).")
    p.add_argument("--top-k", type=int,
                   help="Sample among the k most likely tokens.")
    p.add_argument("--top-p", type=float,
                   help="Nucleus: sample among the most likely tokens "
                        "holding probability p.")
    p.add_argument("--min-p", type=float,
                   help="Drop tokens less likely than min-p times the top.")
    p.add_argument("--repetition-penalty", type=float,
                   help="> 1 makes repeating tokens less likely.")
    p.add_argument("--seed", type=int,
                   help="Same seed, same output (sample i uses seed + i).")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="Stop at this text (repeatable); end-of-text always "
                        "stops.")
    p.add_argument("--num-samples", type=int, default=1,
                   help="Samples per prompt (default 1).")
    p.add_argument("--truncate-prompt", action="store_true",
                   help="Keep the end of a prompt that does not fit.")
    p.add_argument("--sliding-window", action="store_true",
                   help="Let generation run past the context length "
                        "(approximate).")
    p.set_defaults(run=run)


def run(args, stdin=None, stdout=None):
    """Runs the command; returns the exit status.

    Raises:
        FileNotFoundError: RUN_DIR, its model.keras or its tokenizer is
            missing.
        ValueError: a bad setting (the message names value and limit).
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    if args.num_samples < 1:
        raise ValueError(f"--num-samples {args.num_samples} is out of range: "
                         "it must be >= 1.")
    model, tokenizer = load_run(args.run_dir)

    def write(row, token, text):
        if text:
            stdout.write(text)
            stdout.flush()

    def sample(prompt):
        for i in range(args.num_samples):
            if args.num_samples > 1:
                stdout.write(f"--- sample {i + 1} ---\n")
            generate(
                model, prompt, tokenizer=tokenizer,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature, top_k=args.top_k,
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
            sample(line)
    return 0


def load_run(run_dir):
    """`(model, tokenizer)` of a run directory, with clear errors."""
    model_path = run_model_file(run_dir)
    tokenizer = load_tokenizer(run_dir)
    import keras

    model = keras.models.load_model(model_path)
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
