"""A run directory stopped at any moment can be continued or restarted, and
what the command says matches what is on disk (issue 17: items 2 and 3,
and the kill -9 test)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from keras_gpt.commands.main import main
from keras_gpt.training import run as training_run
from keras_gpt.training.run_dir import RunDir

TEXT = ("The quick brown fox jumps over the lazy dog.\n"
        "Pack my box with five dozen liquor jugs!\n") * 60
TINY = ["--tokenizer", "char", "--n-layers", "1", "--n-heads", "2",
        "--d-model", "16", "--context-length", "16", "--batch-size", "4",
        "--eval-steps", "1", "--samples", "0"]
LONG = [*TINY, "--steps", "12", "--eval-every", "2"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    return path


def _train(tmp_path, *args):
    return main(["train", "--cache-dir", str(tmp_path / "cache"), *args])


def _metrics(run):
    return [(r["step"], r["loss"], r["val_loss"]) for r in
            map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def _start(tmp_path, *args):
    environ = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "keras_gpt.commands", "train", "--cache-dir",
         str(tmp_path / "cache"), *args], env=environ,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(process, ready, delay, timeout=300):
    """SIGKILL `process` `delay` seconds after `ready()` is true; it must
    still be running then."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.01)
    time.sleep(delay)
    assert process.poll() is None, "the run ended before the kill"
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()


def _rows(run):
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.backend_independent
def test_kill_9_before_and_after_the_first_checkpoint(tmp_path, corpus,
                                                      capsys):
    """Killed before its first checkpoint, the run restarts from step 0 as
    the message says; killed again after it, it resumes; the metrics equal
    an uninterrupted run's at every step.

    What a kill leaves and how a resume reads it is the run directory's
    logic, the same on every backend (run once); that a resume computes
    exactly what an uninterrupted run does is tested on every backend by
    test_run.py::test_resume_continues_exactly and
    test_resume_replays_the_dropout_random_state."""
    rng = random.Random(17)
    assert _train(tmp_path, "--data", str(corpus), *LONG, "--out",
                  str(tmp_path / "whole")) == 0
    expected = _metrics(tmp_path / "whole")
    run = tmp_path / "run"

    # 1. Killed after set-up, before the first checkpoint.
    _kill_when(_start(tmp_path, "--data", str(corpus), *LONG, "--out",
                      str(run)), (run / "run.json").exists,
               rng.uniform(0, 0.3))
    assert not (run / "model.keras").exists()
    capsys.readouterr()
    assert _train(tmp_path, "--data", str(corpus), *LONG, "--out",
                  str(run)) == 2
    err = capsys.readouterr().err
    assert f"--out {run} --resume` starts it again from step 0" in err

    # 2. As told: --resume; killed after its first checkpoint, at or after
    # its k-th evaluation (its metrics row is written before its checkpoint,
    # so the kill may fall between the two), with 4 or more still to come.
    rows = rng.randint(1, 2)
    _kill_when(_start(tmp_path, "--out", str(run), "--resume"),
               lambda: (run / "model.keras").exists() and _rows(run) >= rows,
               rng.uniform(0, 0.05))
    kept = RunDir(run)
    assert kept.kind == "checkpointed"
    step = kept.checkpoint_step()

    # 3. --resume from the checkpoint, to the end.
    assert _train(tmp_path, "--out", str(run), "--resume") == 0
    out = capsys.readouterr().out
    assert f"Resuming {run} from step" in out and str(step) in out
    assert _metrics(run) == expected
    assert not list(run.glob(".tmp-*"))


@pytest.mark.backend_independent
def test_ctrl_c_before_the_first_checkpoint_says_what_is_kept(
        tmp_path, corpus, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_run, "_fit", interrupted)
    run = tmp_path / "run"
    assert _train(tmp_path, "--data", str(corpus), *TINY, "--steps", "4",
                  "--eval-every", "2", "--out", str(run)) == 130
    out = capsys.readouterr().out
    assert not run.exists()
    assert ("Interrupted before the first checkpoint: nothing was kept "
            f"in {run}; run the same command to start again." in out)
    assert "holds the last checkpoint" not in out

    # A run stopped before its first checkpoint, resumed and interrupted
    # again: its directory stays, and so does the way on.
    run.mkdir()
    (run / "run.json").write_text("{}")
    assert RunDir(run).after_interrupt() == (
        f"Interrupted before the first checkpoint: keras-gpt train --out "
        f"{run} --resume starts the run again from step 0.")


@pytest.mark.backend_independent
def test_an_unfinished_set_up_is_cleared_by_a_new_run(tmp_path, corpus,
                                                     capsys, monkeypatch):
    run = tmp_path / "run"
    (run / "tokenizer").mkdir(parents=True)
    (run / "config.json").write_text("{")
    (run / ".tmp-123-run.json").write_text("")
    assert RunDir(run).kind == "unfinished"
    assert _train(tmp_path, "--out", str(run), "--resume") == 2
    assert "start it again without --resume" in capsys.readouterr().err

    started = []
    monkeypatch.setattr(training_run, "_fit",
                        lambda run_dir, *a, **k: started.append(run_dir)
                        or {"step": 0})
    assert _train(tmp_path, "--data", str(corpus), *TINY, "--steps", "2",
                  "--eval-every", "2", "--out", str(run)) == 0
    assert started and sorted(p.name for p in run.iterdir()) == [
        "config.json", "run.json", "tokenizer"]
    (run / "notes.txt").write_text("mine")
    (run / "run.json").unlink()
    assert _train(tmp_path, "--data", str(corpus), *TINY, "--out",
                  str(run)) == 2
    assert "already holds files that are not a keras-gpt run" in \
        capsys.readouterr().err
    assert (run / "notes.txt").read_text() == "mine"


@pytest.mark.backend_independent
def test_a_damaged_run_json_is_named(tmp_path):
    (tmp_path / "run.json").write_text("{bad")
    with pytest.raises(ValueError, match=r"run\.json is not valid JSON .*"
                                         r"restore it"):
        RunDir(tmp_path).stored_options()
