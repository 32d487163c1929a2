"""`keras-gpt`: the command line. It only wires library calls together.

The console script and `python -m keras_gpt.commands` call `main`.
"""

import argparse
import importlib
import sys

from keras_gpt.commands.console import VERBOSE_FLAG

COMMANDS = ("params", "plan", "train", "generate", "convert", "export",
            "quantize", "bench", "explain")


class CommandError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-gpt",
        description="Train, inspect and sample GPT models built on Keras 3.")
    parser.add_argument(
        VERBOSE_FLAG, action="store_true",
        help="Show TensorFlow's and XLA's own start-up and log lines "
             "(hidden by default, as is anything their C++ code writes to "
             "stderr, unless TF_CPP_MIN_LOG_LEVEL is set).")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"keras_gpt.commands.{name}").register(commands)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, ValueError, FileNotFoundError,
            NotADirectoryError) as error:
        print(f"keras-gpt {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"keras-gpt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
