"""A damaged, truncated or foreign model.keras: one line naming the file and
what is wrong, exit 2, nothing changed on disk, for every command that reads
a checkpoint: generate, export, train --resume, convert, explain (issue 17:
items 6 and 7). The checks run before anything is built, so they cannot
differ by backend."""

import hashlib
import shutil

import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt.checkpoints import (CheckpointError, read_config,
                                   saved_gpt_config, saved_step)
from keras_gpt.commands.main import main

pytestmark = pytest.mark.backend_independent

TEXT = "The quick brown fox jumps over the lazy dog.\n" * 80
TINY = ["--tokenizer", "char", "--n-layers", "1", "--n-heads", "2",
        "--d-model", "16", "--context-length", "16", "--batch-size", "4",
        "--eval-steps", "1", "--samples", "0", "--steps", "2",
        "--eval-every", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    (folder / "text.txt").write_text(TEXT)
    assert main(["train", "--data", str(folder / "text.txt"), *TINY,
                 "--cache-dir", str(folder / "cache"),
                 "--out", str(folder / "run")]) == 0
    return folder


def _damage(path, how):
    data = path.read_bytes()
    if how == "bytes changed":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(64) + data[middle + 64:])
    elif how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif how == "not a zip":
        path.write_text("a text file named model.keras\n")
    elif how == "empty":
        path.write_bytes(b"")


MESSAGES = {"bytes changed": "is damaged: its member model.weights.h5 fails "
                             "its CRC check",
            "truncated": "is truncated (",
            "not a zip": "is not a Keras model file",
            "empty": "is not a Keras model file"}


def _snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes())
            .hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("how", list(MESSAGES))
def test_every_command_answers_a_damaged_checkpoint_in_one_line(
        trained, tmp_path, capsys, how):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    checkpoint = run / "model.keras"
    _damage(checkpoint, how)
    before = _snapshot(tmp_path)
    commands = {
        "generate": ["generate", str(run), "--prompt", "The"],
        "export": ["export", str(run), str(tmp_path / "served")],
        "train": ["train", "--out", str(run), "--resume", "--data",
                  str(trained / "text.txt"), "--cache-dir",
                  str(trained / "cache")],
        "convert": ["convert", "--from", "keras-hub", str(checkpoint),
                    "--out", str(tmp_path / "converted")],
        "explain": ["explain", str(run), "--prompt", "The", "--out",
                    str(tmp_path / "report")],
    }
    for name, argv in commands.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1, (name, err)
        assert err.startswith(f"keras-gpt {name}: error: {checkpoint} "), err
        assert MESSAGES[how] in err, (name, err)
        assert "Traceback" not in err and "Skipping" not in err
        assert _snapshot(tmp_path) == before, name


def test_resume_onto_a_checkpoint_of_another_shape_is_one_line(
        trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    other = GPT(GPTConfig(vocab_size=40, context_length=16, d_model=32,
                          n_layers=1, n_heads=2))
    other.save(run / "model.keras")
    before = _snapshot(tmp_path)
    assert main(["train", "--out", str(run), "--resume", "--cache-dir",
                 str(trained / "cache")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Skipping" not in err, err
    assert f"{run / 'model.keras'} holds a model of another shape than " \
        f"{run / 'config.json'} (" in err and "--d-model 32, not 16" in err
    assert "it is not this run's checkpoint" in err
    assert _snapshot(tmp_path) == before


def test_reading_a_whole_checkpoint(trained):
    checkpoint = trained / "run" / "model.keras"
    assert read_config(checkpoint)["class_name"] == "GPT"
    assert saved_gpt_config(checkpoint)["d_model"] == 16
    assert saved_step(checkpoint) == 2
    with pytest.raises(FileNotFoundError, match="No checkpoint file"):
        read_config(trained / "none.keras")
    with pytest.raises(CheckpointError, match="is not a Keras model file"):
        read_config(trained / "text.txt")
