"""A run's options: --data stored as absolute paths and accepted in either
form on resume from anywhere, and --resume --steps N extending a run with a
re-planned schedule (issue 17: items 4 and 12)."""

import json

import keras
import numpy as np
import pytest

from keras_gpt.checkpoints import load_model
from keras_gpt.commands.main import main
from keras_gpt.training.options import (RunOptions, check_options, replan,
                                        resolve_options)

TEXT = "The quick brown fox jumps over the lazy dog.\n" * 80
TINY = ["--tokenizer", "char", "--n-layers", "1", "--n-heads", "2",
        "--d-model", "16", "--context-length", "16", "--batch-size", "4",
        "--eval-steps", "1", "--samples", "0"]


@pytest.mark.backend_independent
def test_data_paths_are_stored_absolute_and_matched_from_anywhere(
        tmp_path, monkeypatch):
    (tmp_path / "a" / "texts").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    stored = resolve_options(RunOptions(data=["texts", "texts/*.md"]))
    assert stored["data"] == [str(tmp_path / "a" / "texts"),
                              str(tmp_path / "a" / "texts" / "*.md")]
    monkeypatch.chdir(tmp_path / "b")
    for given in (["../a/texts", "../a/texts/*.md"], stored["data"]):
        resumed = resolve_options(RunOptions(data=given), stored)
        assert resumed["data"] == stored["data"]
    with pytest.raises(ValueError, match="--data .*/b/texts differs from "
                                         "the stored .*/a/texts"):
        resolve_options(RunOptions(data=["texts"]), stored)
    # A run stored before paths were absolute resumes from its folder.
    old = {**stored, "data": ["texts"]}
    monkeypatch.chdir(tmp_path / "a")
    assert resolve_options(RunOptions(data=[str(tmp_path / "a" / "texts")]),
                           old)["data"] == ["texts"]


@pytest.mark.backend_independent
def test_non_finite_options_are_refused_in_python_too():
    for field, value in (("learning_rate", float("nan")),
                         ("learning_rate", float("inf")),
                         ("dropout", float("nan")),
                         ("val_fraction", float("nan"))):
        with pytest.raises(ValueError, match="is not a finite number"):
            check_options(resolve_options(RunOptions(**{field: value})))


@pytest.mark.backend_independent
def test_replan_records_where_the_schedule_changed():
    o = resolve_options(RunOptions(steps=100, eval_every=10))
    assert o["warmup_steps"] == 10 and o["extensions"] == []
    longer = replan({**o, "steps": 200}, 100, step=100)
    assert longer["extensions"] == [[0, 100], [100, 200]]
    again = replan({**longer, "steps": 300}, 200, step=100)  # same step
    assert again["extensions"] == [[0, 100], [100, 300]]
    later = replan({**again, "steps": 400}, 300, step=300)
    assert later["extensions"] == [[0, 100], [100, 300], [300, 400]]
    assert replan({**o, "steps": 50}, 100, step=0)["extensions"] == []


@pytest.mark.backend_independent
def test_extend_a_finished_run_from_another_folder(tmp_path, monkeypatch,
                                                  capsys):
    """The run directory's side of --resume --steps N (run.json, the
    message, the paths, the schedule saved with the checkpoint); the
    schedule's numbers are tested on every backend in test_recipe.py."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "text.txt").write_text(TEXT)
    cache = str(tmp_path / "cache")
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", "--data", "text.txt", *TINY, "--steps", "4",
                 "--eval-every", "2", "--learning-rate", "1e-2",
                 "--cache-dir", cache, "--out", "../run"]) == 0
    run = tmp_path / "run"
    first = load_model(run / "model.keras")
    rate_at_4 = float(keras.ops.convert_to_numpy(
        first.optimizer.learning_rate))
    np.testing.assert_allclose(rate_at_4, 1e-3, rtol=1e-5)  # 10% of peak

    monkeypatch.chdir(tmp_path / "b")
    capsys.readouterr()
    assert main(["train", "--out", "../run", "--resume", "--steps", "8",
                 "--data", "../a/text.txt", "--cache-dir", cache]) == 0
    out = capsys.readouterr().out
    assert ("Resuming ../run from step 4 (../run/model.keras) to step 8. "
            "The learning rate is re-planned from step 4: a half cosine "
            "from its rate there to 0.001 at step 8.") in out
    stored = json.loads((run / "run.json").read_text())
    assert stored["steps"] == 8 and stored["extensions"] == [[0, 4], [4, 8]]
    assert stored["data"] == [str(tmp_path / "a" / "text.txt")]
    steps = [json.loads(line)["step"] for line in
             (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]
    # The schedule is saved with the checkpoint and read back.
    model = load_model(run / "model.keras")
    schedule = model.optimizer._learning_rate
    assert type(schedule).__name__ == "ReplannedCosine"
    rates = [float(keras.ops.convert_to_numpy(schedule(s))) for s in
             (3, 4, 6, 8, 9)]
    np.testing.assert_allclose(rates[1:], [1e-3] * 4, rtol=1e-5)

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", "run", "--resume", "--steps", "6"]) == 2
    assert ("--steps 6 is not more than the 8 steps run has trained"
            in capsys.readouterr().err)


@pytest.mark.backend_independent
def test_the_default_run_is_short_and_does_not_overfit_by_design(tmp_path):
    """Issue 17, item 15: the first run sees the default corpus's training
    tokens about 5 times (the previous defaults: 16, and overfit), and its
    evaluations draw a curve; its measured curve is in the README."""
    from keras_gpt.training.options import DEFAULT_MODEL
    from keras_gpt.training.run import prepare_data

    o = resolve_options(RunOptions())
    check_options(o)
    _, train, val = prepare_data(o, cache_dir=tmp_path)
    seen = o["steps"] * o["batch_size"] * DEFAULT_MODEL["context_length"]
    assert seen / len(train) <= 6
    assert o["steps"] // o["eval_every"] >= 5 and o["dropout"] == 0.0
    # An evaluation reads at most about two passes over the validation part.
    window = DEFAULT_MODEL["context_length"] + 1
    assert o["eval_steps"] * o["batch_size"] * window <= 2 * len(val)
