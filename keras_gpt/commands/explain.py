"""`keras-gpt explain RUN_DIR --prompt TEXT --out DIR`: one HTML report on
what the model does with a prompt.

DIR/report.html shows the attention patterns (an interactive view and a
PNG grid), the logit lens (the prediction forming layer by layer), the
heads and MLPs that write the predicted next token most directly, and
previous-token / duplicate-token / induction head scores; the PNGs lie
beside it (attention.png, logit_lens.png, attribution.png, heads.png) with
attention.html, the interactive view alone. The page needs no network.
Files of an earlier report in DIR are replaced, each only once the new one
is whole.
"""

import sys
from pathlib import Path

from keras_gpt.checkpoints import saved_gpt_config
from keras_gpt.commands.flags import integer
from keras_gpt.files import run_model_file, run_tokenizer_dir


def register(commands):
    p = commands.add_parser(
        "explain", help="Write an HTML report on how a trained run handles a "
                        "prompt.", description=__doc__)
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="A run directory: model.keras and the tokenizer "
                        "(from `keras-gpt train` or `keras-gpt convert`).")
    p.add_argument("--prompt",
                   help="The text to explain (default: standard input, when "
                        "it is not a terminal).")
    p.add_argument("--out", metavar="DIR",
                   help="Folder of the report (default RUN_DIR/explain).")
    p.add_argument("--top-k", type=integer(1), default=5,
                   help="Guesses per depth in the logit lens table "
                        "(default 5).")
    p.add_argument("--heads", type=integer(1), default=10,
                   help="Heads listed by attribution (default 10).")
    p.set_defaults(run=run)


def run(args, stdin=None, stdout=None):
    """Runs the command; returns the exit status.

    Raises:
        ValueError, FileNotFoundError: bad flags, a missing run, or a
            prompt that is empty or longer than the context (one line each).
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    prompt = args.prompt
    if prompt is None:
        if stdin.isatty():
            raise ValueError("no prompt: pass --prompt TEXT (or pipe the "
                               "text in).")
        prompt = stdin.read()
        prompt = prompt[:-1] if prompt.endswith("\n") else prompt
    if not prompt:
        raise ValueError("the prompt is empty: give some text to explain.")
    out = Path(args.out) if args.out else Path(args.run_dir) / "explain"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder.")
    # Cheap checks before loading the model (the checkpoint whole too).
    saved_gpt_config(run_model_file(args.run_dir))
    run_tokenizer_dir(args.run_dir)

    from keras_gpt.commands.generate import load_run
    from keras_gpt.interpret.report import explain

    model, tokenizer = load_run(args.run_dir)
    path = explain(model, tokenizer, prompt, out, top_k=args.top_k,
                   top_heads=args.heads)
    stdout.write(f"{path}\n")
    return 0
