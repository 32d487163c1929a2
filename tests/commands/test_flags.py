"""Every command's flags: numbers checked where they are parsed (NaN and
infinities refused), every default stated in --help, library messages shown
with the command's flags, and a bad flag is one line (issue 17: items 1, 5,
9, 13)."""

import os
import subprocess
import sys

import pytest

from keras_gpt.commands.flags import as_flags
from keras_gpt.commands.main import build_parser, main, subcommand_parser
from keras_gpt.config import PRESETS

pytestmark = pytest.mark.backend_independent

# bench's flags belong to keras_gpt/bench (not checked here).
COMMANDS = ("params", "plan", "train", "generate", "convert", "export",
            "explain")


def _options(command):
    parser = subcommand_parser(build_parser(), command)
    return [a for a in parser._actions if a.option_strings
            and a.dest != "help"], parser


def _number_flags():
    found = []
    for command in COMMANDS:
        for action in _options(command)[0]:
            kind = getattr(action.type, "__name__", None)
            if action.type in (int, float):
                kind = "plain"
            if kind in ("number", "integer", "plain"):
                found.append((command, action.option_strings[0], kind))
    return found


def test_every_number_flag_is_checked_where_it_is_parsed():
    flags = _number_flags()
    assert len(flags) >= 30
    assert [f for f in flags if f[2] == "plain"] == []  # no bare int/float
    reals = {(c, f) for c, f, kind in flags if kind == "number"}
    assert {("train", "--learning-rate"), ("train", "--dropout"),
            ("generate", "--temperature"), ("generate", "--top-p"),
            ("export", "--top-p"), ("plan", "--headroom"),
            ("convert", "--dropout")} <= reals


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_every_real_flag_refuses_non_finite_values(capsys, value):
    for command, flag, kind in _number_flags():
        assert main([command, f"{flag}={value}"]) == 2, (command, flag)
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert len(lines) == 1, err
        expected = ("is not a finite number" if kind == "number" else
                    "is not an integer")
        assert lines[0].startswith(f"keras-gpt {command}: error: argument "
                                   f"{flag}") and expected in lines[0], err


@pytest.mark.parametrize("argv,message", [
    (["train", "--warmup-steps", "-3", "--data", "/nowhere"],
     "argument --warmup-steps: -3 is out of range: it must be >= 0"),
    (["train", "--learning-rate", "0"],
     "argument --learning-rate: 0 is out of range: it must be > 0"),
    (["generate", "RUN", "--top-k", "-1"],
     "argument --top-k: -1 is out of range: it must be >= 0"),
    (["generate", "RUN", "--top-p", "0"], "it must be in (0, 1]"),
    (["generate", "RUN", "--num-samples", "0"], "it must be >= 1"),
    (["export", "RUN", "OUT", "--temperature", "-1"], "it must be >= 0"),
    (["plan", "tiny", "--device-memory", "1GB", "--headroom", "1"],
     "it must be in [0, 1)"),
])
def test_out_of_range_flags_fail_before_anything_runs(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err, err


def test_warmup_is_checked_before_the_data_is_read(capsys, tmp_path):
    assert main(["train", "--steps", "100", "--eval-every", "50",
                 "--warmup-steps", "100", "--data", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--warmup-steps 100 must be an integer in [0, --steps 100)" in err
    assert not (tmp_path / "run").exists()


def test_every_flag_states_its_default():
    for command in COMMANDS:
        options, parser = _options(command)
        for action in options:
            text = (action.help or "").lower()
            assert "default" in text or "required" in text, (
                command, action.option_strings, action.help)
        assert parser.description, command
    train_help = subcommand_parser(build_parser(), "train").format_help()
    for name in PRESETS:
        assert name in train_help
    assert "params" in subcommand_parser(build_parser(), "params").description


def test_library_messages_are_shown_with_the_commands_flags():
    generate = subcommand_parser(build_parser(), "generate")
    text = as_flags(
        "max_new_tokens=200 leaves no room for a prompt in context_length="
        "128: lower max_new_tokens, pass truncate_prompt=True or "
        "sliding_window=True (approximate); top_k=0 is off.", generate)
    assert text == (
        "--max-new-tokens 200 leaves no room for a prompt in context_length="
        "128: lower --max-new-tokens, pass --truncate-prompt or "
        "--sliding-window (approximate); --top-k 0 is off.")
    export = subcommand_parser(build_parser(), "export")
    assert as_flags("pass overwrite=True to replace it, or a version= other "
                    "than 3.", export) == (
        "pass --overwrite to replace it, or a --version other than 3.")
    train = subcommand_parser(build_parser(), "train")
    assert as_flags("warmup_steps=-3 must be in [0, total_steps=1200).",
                    train) == ("--warmup-steps -3 must be in [0, "
                               "total_steps=1200).")


def test_a_bad_flag_is_one_line_and_exit_2_in_a_process(tmp_path):
    """The real `keras-gpt` process: no usage block, no traceback, nothing
    written."""
    environ = {k: v for k, v in os.environ.items()
               if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "keras_gpt.commands", "train",
         "--learning-rate", "nan", "--out", str(out)],
        env=environ, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "keras-gpt train: error: argument --learning-rate: nan is not a "
        "finite number (see keras-gpt train --help)"]
    assert not out.exists()
