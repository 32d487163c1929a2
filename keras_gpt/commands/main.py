"""`keras-gpt`: the command line. It only wires library calls together.

The console script and `python -m keras_gpt.commands` call `main`. Every
error a user can cause (a bad flag, a missing or damaged file, a value out
of range, a run that diverged) is one line on stderr, `keras-gpt COMMAND:
error: ...`, exit status 2, no traceback; library messages are shown with
the command's flags in place of Python argument names
(`keras_gpt.commands.flags.as_flags`).
"""

import importlib
import sys

from keras_gpt.commands.console import VERBOSE_FLAG
from keras_gpt.commands.flags import OneLineParser, as_flags, print_error

COMMANDS = ("params", "plan", "train", "generate", "convert", "export",
            "quantize", "dpo", "bench", "explain")
# Commands that train: on JAX on a CPU they keep each step's memory
# (`keras_gpt.backend.keep_step_memory`), set before JAX starts.
TRAINING = ("train", "dpo", "bench")

# What a user's mistake raises; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError,
               IsADirectoryError, FileExistsError, PermissionError,
               FloatingPointError)


class CommandError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


def build_parser():
    parser = OneLineParser(
        prog="keras-gpt",
        description="Train, inspect and sample GPT models built on Keras 3.")
    parser.add_argument(
        VERBOSE_FLAG, action="store_true",
        help="Show TensorFlow's and XLA's own start-up and log lines "
             "(default: hidden, as is anything their C++ code writes to "
             "stderr, unless TF_CPP_MIN_LOG_LEVEL is set).")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"keras_gpt.commands.{name}").register(commands)
    return parser


def subcommand_parser(parser, command):
    """The parser of one subcommand of `build_parser()`."""
    for action in parser._actions:
        if getattr(action, "choices", None) and command in action.choices:
            return action.choices[command]
    return None


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a bad flag (one line printed)
        return done.code
    args.parser = subcommand_parser(parser, args.command)
    if args.command in TRAINING:
        from keras_gpt.backend import keep_step_memory

        keep_step_memory()
    try:
        return args.run(args)
    except (CommandError, *USER_ERRORS) as error:
        print_error(args.command, as_flags(str(error), args.parser))
        return 2
    except KeyboardInterrupt:
        print(f"keras-gpt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
