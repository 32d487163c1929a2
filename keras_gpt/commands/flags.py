"""What every `keras-gpt` command shares about its flags.

- Types for `argparse` that check a number where it is parsed, before
  anything is loaded: `integer(low, high)` and `real(low, high)` reject
  what is out of range, and `real` also rejects NaN and infinities (which
  pass a plain `float` flag and every `<=` test).
- `OneLineParser`: a bad flag is one line on stderr and exit status 2, as
  every other error of the command line (argparse prints its usage first).
- `as_flags(message, parser)`: a library error names Python arguments
  (`max_new_tokens=200`, `truncate_prompt=True`); the command line shows
  the same message with the command's own flags (`--max-new-tokens 200`,
  `--truncate-prompt`). Names that are not flags of the command are left
  as they are.
"""

import argparse
import math
import re
import sys


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line: `PROG: error: ...`."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} "
                     "--help)\n")


def _bounds(low, high, low_open=False):
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"<= {high:g}"


def integer(low=None, high=None):
    """An argparse type: an integer in [low, high] (None: no bound)."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an integer") from None
        if (low is not None and value < low) or (high is not None
                                                 and value > high):
            raise argparse.ArgumentTypeError(
                f"{value} is out of range: it must be {_bounds(low, high)}")
        return value

    parse.__name__ = "integer"
    return parse


def real(low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a finite number in [low, high] (an open end with
    `low_open` / `high_open`; None: no bound). NaN and infinities are
    refused whatever the bounds."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                f"{text} is not a finite number")
        below = low is not None and (value <= low if low_open
                                     else value < low)
        above = high is not None and (value >= high if high_open
                                      else value > high)
        if below or above:
            bounds = _bounds(low, high, low_open)
            if high is not None and high_open:
                bounds = bounds[:-1] + ")"
            raise argparse.ArgumentTypeError(
                f"{value:g} is out of range: it must be {bounds}")
        return value

    parse.__name__ = "number"
    return parse


def as_flags(message, parser):
    """`message` with the Python names of `parser`'s flags written as flags.

    `name=True` becomes `--name`, `name=value` becomes `--name value`, and
    a bare `name` (with an underscore, so ordinary words are kept) becomes
    `--name`, for every `--name` option `parser` has.
    """
    if parser is None:
        return message
    names = {}
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                names[option[2:].replace("-", "_")] = option
    for name, flag in sorted(names.items(), key=lambda kv: -len(kv[0])):
        if "_" not in name and f"{name}=" not in message:
            continue
        message = re.sub(rf"(?<![\w.-]){name}=(True\b|(?=\s))", flag,
                         message)
        message = re.sub(rf"(?<![\w.-]){name}=(?!=)", flag + " ", message)
        if "_" in name:
            message = re.sub(rf"(?<![\w.-]){name}\b(?!=)", flag, message)
    return message


def print_error(command, message):
    """The command line's one error line on stderr."""
    text = " ".join(str(message).split())
    print(f"keras-gpt {command}: error: {text}", file=sys.stderr)
