"""`keras-gpt export RUN_DIR OUT_DIR`: a SavedModel for TF Serving with the
tokenizer and the decoding loop inside: strings in, strings out.

Writes OUT_DIR/<version>/ (saved_model.pb, variables/), the layout
`tensorflow_model_server --model_base_path=OUT_DIR` serves (on CPU add
--xla_cpu_compilation_enabled=true: decoding is XLA-compiled). Signatures:
serving_default (prompts), generate (prompts, max_new_tokens, temperature,
top_k, top_p, seed), logits, tokenize, detokenize. The export runs under
TensorFlow whatever backend trained the run.
"""

import sys

from keras_gpt.commands.flags import integer, real


def register(commands):
    p = commands.add_parser(
        "export", help="Export a run as a SavedModel for TF Serving "
                       "(prompts in, text out).", description=__doc__)
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="A run directory: model.keras and the tokenizer.")
    p.add_argument("out_dir", metavar="OUT_DIR",
                   help="The model's base directory; the export goes to "
                        "OUT_DIR/<version>.")
    p.add_argument("--version", type=integer(0),
                   help="Version number (default: one more than the highest "
                        "in OUT_DIR, or 1).")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace an existing version (default: off, an "
                        "existing version is refused).")
    p.add_argument("--max-new-tokens", type=integer(1),
                   help="serving_default's most new tokens per prompt "
                        "(default min(64, context_length // 2)).")
    p.add_argument("--temperature", type=real(0), default=0.0,
                   help="serving_default's temperature (default 0: greedy).")
    p.add_argument("--top-k", type=integer(0), default=0,
                   help="serving_default's top-k (default 0: off).")
    p.add_argument("--top-p", type=real(0, 1, low_open=True), default=1.0,
                   help="serving_default's top-p (default 1: off).")
    p.set_defaults(run=run)


def run(args, stdout=None):
    """Runs the command; returns the exit status.

    Raises:
        FileNotFoundError: RUN_DIR, its model.keras or its tokenizer is
            missing.
        ValueError: A bad setting (the message names value and limit).
        CommandError: The version exists (without --overwrite).
    """
    from keras_gpt.commands.main import CommandError
    from keras_gpt.serving.export import export_run

    stdout = sys.stdout if stdout is None else stdout

    try:
        target = export_run(
            args.run_dir, args.out_dir, version=args.version,
            overwrite=args.overwrite, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    except FileExistsError as error:
        raise CommandError(str(error)) from None
    stdout.write(f"Exported {args.run_dir} -> {target} (signatures: "
                 "serving_default, generate, logits, tokenize, detokenize)\n")
    return 0
