"""Supervised fine-tuning: the loss counts completion tokens only."""

import json

import keras
import numpy as np
import pytest
from tests.conftest import gradients, to_numpy

from keras_gpt import GPT, GPTConfig
from keras_gpt.commands.main import main
from keras_gpt.data import build_sft_examples
from keras_gpt.finetune import finetune
from keras_gpt.tokenizers import ByteTokenizer
from keras_gpt.training.sft import (compile_for_sft, make_sft_dataset,
                                    sft_loss)
from keras_gpt.training.source import Source

TOKENIZER = ByteTokenizer()
LINES = [{"prompt": "Question one?", "completion": " yes"},
         {"prompt": "Q2", "completion": " a longer answer"},
         {"messages": [{"role": "user", "content": "hi"},
                       {"role": "assistant", "content": "hello"}]},
         {"prompt": "", "completion": "free text"}] * 3


def tiny_model():
    return GPT(GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=48,
                         d_model=32, n_layers=1, n_heads=2))


@pytest.fixture
def sft_file(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    return path


def fixed_batch(path):
    examples = build_sft_examples(path, TOKENIZER, 48)
    x, y, w = next(iter(make_sft_dataset(examples, 8, seed=0)))
    return np.asarray(x), np.asarray(y), np.asarray(w)


def masked_cross_entropy(logits, y, w):
    logits = logits.astype(np.float64)
    log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) \
        + logits.max(-1)
    ce = log_z - np.take_along_axis(logits, y[..., None], -1)[..., 0]
    return (ce * w).sum() / w.sum()


def test_sft_loss_is_the_masked_cross_entropy(sft_file):
    x, y, w = fixed_batch(sft_file)
    assert 0 < w.sum() < w.size  # prompts and padding are masked
    model = tiny_model()
    compile_for_sft(model, total_steps=10, learning_rate=1e-3)
    expected = masked_cross_entropy(to_numpy(model(x)), y, w)
    # What fit sees: train_on_batch runs fit's step and returns the loss
    # before the step's update.
    assert model.train_on_batch(x, y, sample_weight=w) == pytest.approx(
        expected, rel=1e-5)


def test_prompt_tokens_get_zero_gradient(sft_file):
    x, y, w = fixed_batch(sft_file)
    logits = to_numpy(tiny_model()(x))
    loss = sft_loss()
    (grad,) = gradients(lambda l: loss(y, l, sample_weight=w), [logits])
    assert (grad[w == 0] == 0).all()
    assert (np.abs(grad[w == 1]).sum(-1) > 0).all()
    # Another target where the weight is 0 changes nothing.
    other = np.where(w == 0, (y + 7) % TOKENIZER.vocab_size, y)
    assert float(loss(other, logits, sample_weight=w)) == pytest.approx(
        float(loss(y, logits, sample_weight=w)), rel=1e-6)


def tiny_source(tmp_path):
    """A run directory holding a tiny untrained GPT and a byte tokenizer."""
    folder = tmp_path / "source"
    folder.mkdir()
    tiny_model().save(folder / "model.keras")
    TOKENIZER.save(folder / "tokenizer")
    return folder


@pytest.mark.backend_independent
def test_sft_run_directory(tmp_path, sft_file, capsys, monkeypatch):
    """`finetune(..., sft=...)`, what `train --init-from --sft` runs: a
    normal run directory whose step 0 is the source on held-out examples;
    LoRA flags apply; the data file, given relative, is stored absolute, so
    `--resume` works from another folder. (Wiring: the loss is checked on
    every backend above.)"""
    source = Source(tiny_model(), TOKENIZER, {"path": "tiny", "kind": "test"})
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    final = finetune(source, out, sft=sft_file.name, lora_rank=2, steps=4,
                     eval_every=2, batch_size=4, val_fraction=0.25,
                     samples=1, cache_dir=tmp_path / "cache", verbose=1)
    assert final["step"] == 4
    printed = capsys.readouterr().out
    assert "0 prompts cut from the left" in printed
    assert "9 training and 3 held-out examples" in printed
    assert "--- sample:" in printed
    for name in ("model.keras", "lora.safetensors", "tokenizer/tokenizer.json",
                 "metrics.jsonl", "run.json", "loss.png"):
        assert (out / name).exists(), name
    records = [json.loads(line) for line in
               (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2, 4]
    run = json.loads((out / "run.json").read_text())
    assert run["sft"] == str(sft_file)
    assert run["sft_data"] == {"examples": 12, "truncated": 0, "longest": 26,
                               "train": 9, "held_out": 3}
    loaded = keras.models.load_model(out / "model.keras")
    assert loaded.lora_rank == 2
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["train", "--out", str(out), "--resume", "--steps", "6",
                 "--sft", "../" + sft_file.name]) == 0
    assert [json.loads(line)["step"] for line in (
        out / "metrics.jsonl").read_text().splitlines()] == [0, 2, 4, 6]


@pytest.mark.backend_independent
def test_sft_command_errors(tmp_path, sft_file, capsys):
    source = tiny_source(tmp_path)
    out = tmp_path / "run"
    common = ["train", "--cache-dir", str(tmp_path / "cache"), "--out",
              str(out)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    cases = [
        (["--sft", str(sft_file)], "--sft needs --init-from SOURCE"),
        (["--init-from", str(source), "--sft", str(sft_file), "--data",
          str(sft_file)], "--sft and --data cannot be combined"),
        (["--init-from", str(source), "--sft", str(bad)],
         "bad.jsonl, line 2: missing field 'completion'"),
        (["--init-from", str(source), "--sft", str(tmp_path / "no.jsonl")],
         "No such file"),
    ]
    for args, message in cases:
        assert main(common + args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists()
