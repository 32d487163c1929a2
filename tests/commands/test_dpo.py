"""`keras-gpt dpo`: the command's wiring and its one-line errors."""

import json

import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt.commands.main import main
from keras_gpt.tokenizers import ByteTokenizer

pytestmark = pytest.mark.backend_independent


@pytest.fixture
def source(tmp_path):
    """A run directory holding a tiny untrained GPT and a byte tokenizer."""
    folder = tmp_path / "source"
    folder.mkdir()
    GPT(GPTConfig(vocab_size=257, context_length=24, d_model=16, n_layers=1,
                  n_heads=2)).save(folder / "model.keras")
    ByteTokenizer().save(folder / "tokenizer")
    return folder


@pytest.fixture
def prefs(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(
        {"prompt": f"n{i}:", "chosen": " yes", "rejected": " no"}) + "\n"
        for i in range(8)))
    return path


def dpo(tmp_path, *args):
    return main(["dpo", "--cache-dir", str(tmp_path / "cache"), *args])


def test_dpo_command_trains_a_run(tmp_path, source, prefs, capsys):
    out = tmp_path / "run"
    assert dpo(tmp_path, "--init-from", str(source), "--data", str(prefs),
               "--lora-rank", "2", "--steps", "2", "--eval-every", "2",
               "--batch-size", "2", "--samples", "0", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"Done: {out} (step 2, loss " in printed
    assert "val_rewards/accuracies" in printed
    assert (out / "lora.safetensors").is_file()
    # A DPO run does not resume; train --resume says so instead of
    # pretraining on it.
    assert main(["train", "--out", str(out), "--resume"]) == 2
    assert "is a DPO run, which does not resume" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--beta", "0"], "--beta 0.0 must be a finite number > 0"),
    (["--beta", "-1"], "--beta -1.0 must be a finite number > 0"),
    (["--beta", "nan"], "--beta nan must be a finite number > 0"),
    (["--beta", "inf"], "--beta inf must be a finite number > 0"),
    (["--lora-rank", "0"], "--lora-rank: 0 is out of range: it must be >= 1"),
    (["--learning-rate", "-1"], "--learning-rate: -1 is out of range: it "
                                "must be > 0"),
    (["--val-fraction", "nan"], "--val-fraction: nan is not a finite"),
    (["--eval-every", "3"], "--steps 200 must be a multiple of --eval-every"),
    (["--data", "BAD"], "bad.jsonl, line 2: field 'chosen' must be a string, "
                        "got null"),
    (["--data", "EMPTY_COMPLETION"], "line 1: field 'rejected' is empty"),
    (["--data", "MISSING"], "No such file"),
    (["--init-from", "NOWHERE"], "--init-from"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, source, prefs, capsys,
                                          args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
                   '{"prompt": "a", "chosen": null, "rejected": "c"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"prompt": "a", "chosen": "b", "rejected": ""}\n')
    replace = {"BAD": str(bad), "EMPTY_COMPLETION": str(empty),
               "MISSING": str(tmp_path / "missing.jsonl"),
               "NOWHERE": str(tmp_path / "nowhere")}
    args = [replace.get(a, a) for a in args]
    base = {"--init-from": str(source), "--data": str(prefs)}
    for flag in list(base):
        if flag in args:
            base.pop(flag)
    out = tmp_path / "run"
    command = [x for kv in base.items() for x in kv] + args + ["--out",
                                                               str(out)]
    assert dpo(tmp_path, *command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-gpt dpo: error: "), err
    assert message in err[0], err
    assert not out.exists()


def test_an_existing_run_is_not_overwritten(tmp_path, source, prefs, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_text("mine")
    assert dpo(tmp_path, "--init-from", str(source), "--data", str(prefs),
               "--out", str(out)) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (out / "model.keras").read_text() == "mine"


def test_ctrl_c_says_what_is_on_disk(tmp_path, monkeypatch, capsys):
    from keras_gpt.commands import dpo as command

    def interrupted(source, out, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "dpo", interrupted)
    out = tmp_path / "run"
    args = ["dpo", "--init-from", "x", "--data", "y", "--out", str(out)]
    assert main(args) == 130
    assert f"nothing was kept in {out}" in capsys.readouterr().out
    out.mkdir()
    (out / "model.keras").write_bytes(b"a checkpoint")
    assert main(args) == 130
    assert (f"{out} holds the last checkpoint (a DPO run does not resume); "
            f"start a new run from it with --init-from {out}"
            in capsys.readouterr().out.replace("\n", " "))
