import json

import keras
import numpy as np
import pytest
from tests.conftest import to_numpy

from keras_gpt.training import callbacks as run_callbacks
from keras_gpt.commands.main import main

TEXT = ("The quick brown fox jumps over the lazy dog.\n"
        "Pack my box with five dozen liquor jugs!\t  Spaces   here.\n") * 40

TINY = ["--tokenizer", "char", "--n-layers", "1", "--n-heads", "2",
        "--d-model", "16", "--context-length", "16", "--batch-size", "4",
        "--eval-steps", "1", "--samples", "0"]


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(TEXT)
    (folder / "sub" / "b.md").write_text(TEXT.upper())
    return folder


def train(tmp_path, *args):
    return main(["train", "--cache-dir", str(tmp_path / "cache"), *args])


def test_train_writes_a_complete_run(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert train(tmp_path, "--data", str(corpus), *TINY, "--steps", "4",
                 "--eval-every", "2", "--samples", "1", "--out",
                 str(out)) == 0
    # One sampled continuation per evaluation, even at context 16.
    assert capsys.readouterr().out.count("--- sample: ''") == 2
    for name in ("model.keras", "config.json", "run.json", "state.json",
                 "metrics.jsonl", "loss.png", "tokenizer/tokenizer.json"):
        assert (out / name).is_file(), name
    # model.keras is the checkpoint: the weights are written once.
    assert not list(out.glob("*.h5"))
    assert any((out / "logs").rglob("*tfevents*"))
    records = [json.loads(l) for l in (out / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        assert set(r) == {"step", "loss", "val_loss", "tokens_per_s",
                          "wall_s"}
        assert np.isfinite(r["val_loss"]) and r["tokens_per_s"] > 0
    model = keras.models.load_model(out / "model.keras")
    assert model.config.context_length == 16
    assert model.config.vocab_size == len(set(TEXT + TEXT.upper())) + 1


def test_resume_continues_exactly(tmp_path, corpus, monkeypatch):
    args = ["--data", str(corpus), *TINY, "--steps", "6", "--eval-every", "3"]
    assert train(tmp_path, *args, "--out", str(tmp_path / "whole")) == 0

    save = run_callbacks.RunLogger.on_epoch_end

    def interrupted(self, epoch, logs=None):
        save(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(run_callbacks.RunLogger, "on_epoch_end", interrupted)
    cut = tmp_path / "cut"
    assert train(tmp_path, *args, "--out", str(cut)) == 130
    assert json.loads((cut / "state.json").read_text())["step"] == 3
    monkeypatch.setattr(run_callbacks.RunLogger, "on_epoch_end", save)
    assert train(tmp_path, "--out", str(cut), "--resume") == 0

    whole = keras.models.load_model(tmp_path / "whole" / "model.keras")
    resumed = keras.models.load_model(cut / "model.keras")
    for a, b in zip(whole.weights, resumed.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-5,
                                   err_msg=a.path)
    steps = [json.loads(l)["step"] for l in (cut / "metrics.jsonl").open()]
    assert steps == [3, 6]


def test_default_corpus_with_bpe(tmp_path):
    out = tmp_path / "run"
    assert train(tmp_path, "--tokenizer", "bpe", "--vocab-size", "400",
                 *TINY[2:], "--steps", "2", "--eval-every", "2",
                 "--out", str(out)) == 0
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 400


@pytest.mark.backend_independent
@pytest.mark.parametrize("args,message", [
    (["--data", "{tmp}/nope"], "No such file or folder: '{tmp}/nope'"),
    (["--data", "{tmp}/empty"], "are empty"),
    (["--data", "{tmp}/short.txt"], "fewer than --context-length + 1 = 17"),
    (["--data", "{corpus}", "--tokenizer", "bpe", "--vocab-size", "10"],
     "--vocab-size 10 is too small"),
    (["--data", "{corpus}", "--tokenizer", "bpe", "--vocab-size", "99999"],
     "--vocab-size 99999 is larger than this corpus supports"),
    (["--data", "{corpus}", "--steps", "5", "--eval-every", "2"],
     "--steps 5 must be a multiple of --eval-every 2"),
    (["--data", "{corpus}", "--val-fraction", "1.5"],
     "--val-fraction: 1.5 is out of range: it must be in (0, 1)"),
])
def test_bad_input_is_one_clear_line_and_no_run_dir(tmp_path, corpus, capsys,
                                                     args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("")
    (tmp_path / "short.txt").write_text("tiny text")
    args = [a.format(tmp=tmp_path, corpus=corpus) for a in args]
    message = message.format(tmp=tmp_path)
    out = tmp_path / "run"
    assert train(tmp_path, *TINY, "--steps", "2", "--eval-every", "2", *args,
                 "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-gpt train: error:") and "Traceback" not in err
    assert message in err
    assert not out.exists()


@pytest.mark.backend_independent
def test_resume_refuses_another_runs_config(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    base = ["--data", str(corpus), *TINY, "--steps", "2", "--eval-every", "2"]
    assert train(tmp_path, *base, "--out", str(out)) == 0
    assert train(tmp_path, *base, "--out", str(out)) == 2
    assert "already holds a run (checkpoint at step 2)" in capsys.readouterr().err
    assert train(tmp_path, "--out", str(out), "--resume", "--d-model",
                 "32") == 2
    err = capsys.readouterr().err
    assert "another run's config: --d-model 32 differs from the stored 16" \
        in err
    assert train(tmp_path, "--out", str(tmp_path / "none"), "--resume") == 2
    assert "Nothing to resume" in capsys.readouterr().err


def test_samples_with_a_vocabulary_smaller_than_top_k(tmp_path, capsys):
    data = tmp_path / "small.txt"
    data.write_text("abba cab dab bad " * 60)  # 5 characters + end-of-text
    out = tmp_path / "run"
    assert train(tmp_path, "--data", str(data), *TINY, "--steps", "2",
                 "--eval-every", "2", "--samples", "1", "--out",
                 str(out)) == 0
    text = capsys.readouterr().out
    assert text.count("--- sample: ''") == 1
    assert keras.models.load_model(out / "model.keras").config.vocab_size == 6


@pytest.mark.backend_independent
def test_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint(
        tmp_path, corpus, capsys):
    """Issue 17, item 5: the step is named, the checkpoint of the step
    before stays as it was, exit status 2. (The run directory's side; the
    stop inside `fit`, asynchronous on JAX and PyTorch, is tested on every
    backend in test_callbacks.py.)"""
    from keras_gpt.checkpoints import load_model, saved_step

    out = tmp_path / "run"
    # Warmup from 0: step 1 trains at rate 0 (checkpoint 1 is finite),
    # step 2 at 5e29.
    assert train(tmp_path, "--data", str(corpus), *TINY, "--steps", "4",
                 "--eval-every", "1", "--warmup-steps", "2",
                 "--learning-rate", "1e30", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("keras-gpt train: error: The ")
    assert (f"loss became nan at step 2: training stopped; {out}/model.keras "
            "keeps the last finite checkpoint.") in err
    assert saved_step(out / "model.keras") == 1
    model = load_model(out / "model.keras")
    assert all(np.isfinite(to_numpy(w)).all() for w in model.weights)
    records = [json.loads(l) for l in (out / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [1]


@pytest.mark.backend_independent
@pytest.mark.parametrize("case,message", [
    ("binary", "binary.txt is not a text file (a NUL byte at offset 3)"),
    ("latin-1", "latin.txt is not UTF-8 text (100 of its first 500 bytes "
                "are not valid UTF-8)"),
    ("vocabulary", "fewer than the --vocab-size 400 BPE ids it was asked "
                   "for"),
])
def test_data_that_cannot_train_is_refused(tmp_path, capsys, case, message):
    """Issue 17, item 8 (before any model is built)."""
    data = tmp_path / "data"
    data.mkdir()
    args = ["--data", str(data)]
    if case == "binary":
        (data / "binary.txt").write_bytes(b"ELF\0\x01\x02" + b"x" * 500)
    elif case == "latin-1":
        (data / "latin.txt").write_bytes("caf\xe9 ".encode("latin-1") * 100)
    else:
        (data / "small.txt").write_text(TEXT[:1400])
        args += ["--tokenizer", "bpe", "--vocab-size", "400"]
    out = tmp_path / "run"
    assert train(tmp_path, *TINY, *args, "--steps", "2", "--eval-every", "2",
                 "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


@pytest.mark.backend_independent
def test_a_small_validation_part_is_a_warning_with_the_numbers():
    from keras_gpt.training.run import check_lengths

    options = {"tokenizer": "char", "eval_steps": 20}
    train_part, val_part = np.zeros(5000), np.zeros(200)
    warnings = check_lengths(train_part, val_part, 16, options, 30)
    assert warnings == [
        "the validation part has 200 tokens, fewer than one window of 17 per "
        "evaluation batch (20 x 17 = 340): its windows overlap, so val_loss "
        "rests on few tokens; raise --val-fraction or lower --eval-steps for "
        "a steadier figure."]
    assert check_lengths(train_part, np.zeros(340), 16, options, 30) == []


def test_resume_replays_the_dropout_random_state():
    """Keras saves no dropout random state; a resumed run sets it to where
    its steps left it, so its masks are those of a run never stopped (on
    PyTorch, Keras draws unseeded dropout from torch's global generator,
    which no checkpoint holds)."""
    from keras_gpt import GPT, GPTConfig, next_token_loss
    from keras_gpt.training.run import replay_dropout_draws

    config = GPTConfig(vocab_size=16, context_length=8, d_model=16,
                       n_layers=2, n_heads=2, dropout=0.2)
    ids = np.random.default_rng(0).integers(0, 16, (12, 8)).astype("int32")

    def states(model):
        return [to_numpy(v).tolist() for v in model.variables
                if v.path.endswith("seed_generator_state")]

    keras.utils.set_random_seed(5)
    trained = GPT(config)
    # Keras' own "auto" (no XLA on TensorFlow's CPU): a cheaper compile.
    trained.compile(optimizer="adamw", loss=next_token_loss())
    trained.fit(ids, ids, batch_size=4, epochs=1, verbose=0)
    keras.utils.set_random_seed(5)
    resumed = GPT(config)
    assert len(states(resumed)) == 3
    replay_dropout_draws(resumed, 3, batch_size=4)
    assert states(resumed) == states(trained)
