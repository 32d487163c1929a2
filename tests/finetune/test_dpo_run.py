"""The DPO run directory (wiring: the arithmetic is tested on every backend
in test_dpo.py, so these run in one backend's pass)."""

import json
import math

import keras
import numpy as np
import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt.data import build_preference_pairs
from keras_gpt.finetune import dpo, reference
from keras_gpt.tokenizers import ByteTokenizer
from keras_gpt.training.source import Source

pytestmark = pytest.mark.backend_independent

BYTE = ByteTokenizer()


def tiny_source():
    model = GPT(GPTConfig(vocab_size=BYTE.vocab_size, context_length=24,
                          d_model=16, n_layers=1, n_heads=2))
    return Source(model, BYTE, {"path": "tiny", "kind": "test"})


@pytest.fixture
def prefs(tmp_path):
    path = tmp_path / "prefs.jsonl"
    lines = [{"prompt": f"n{i}:", "chosen": " yes", "rejected": " no"}
             for i in range(10)]
    lines.insert(3, {"prompt": "same", "chosen": "x", "rejected": "x"})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_dpo_with_lora_writes_a_run_directory(tmp_path, prefs, capsys):
    out = tmp_path / "run"
    final = dpo(tiny_source(), out, data=prefs, beta=0.5, lora_rank=2,
                steps=4, eval_every=2, batch_size=4, val_fraction=0.2,
                samples=1, learning_rate=1e-2, cache_dir=tmp_path / "cache")
    assert final["step"] == 4
    for key in ("loss", "rewards/chosen", "rewards/rejected",
                "rewards/accuracies", "rewards/margins", "val_loss",
                "val_rewards/accuracies"):
        assert key in final, key
    printed = capsys.readouterr().out
    assert "1 pairs skipped because chosen == rejected (lines 4)" in printed
    assert "reference adapter" in printed and "--- sample: 'n" in printed
    for name in ("model.keras", "lora.safetensors", "config.json",
                 "tokenizer/tokenizer.json", "state.json", "loss.png"):
        assert (out / name).exists(), name
    records = [json.loads(line) for line in
               (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2, 4]
    assert records[0]["val_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert records[0]["val_rewards/margins"] == 0.0
    assert set(records[-1]) >= {"rewards/margins", "val_rewards/chosen",
                                "tokens_per_s", "wall_s"}
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == "dpo" and run["beta"] == 0.5
    assert run["dpo_data"]["identical"] == 1
    assert run["dpo_data"]["train"] + run["dpo_data"]["held_out"] == 10
    policy = keras.models.load_model(out / "model.keras")
    assert isinstance(policy, GPT) and policy.lora_rank == 2
    with pytest.raises(ValueError, match="already holds files"):
        dpo(tiny_source(), out, data=prefs)


def test_without_lora_the_reference_is_computed_once_and_cached(
        tmp_path, prefs, monkeypatch):
    cache = tmp_path / "cache"
    dpo(tiny_source(), tmp_path / "run", data=prefs, steps=2, eval_every=2,
        batch_size=4, samples=0, cache_dir=cache, verbose=0)
    stored = sorted((cache / "examples").glob("reference-*.npz"))
    assert len(stored) == 2  # training and held-out pairs
    pairs = build_preference_pairs(prefs, BYTE, 24, warn=False)
    arrays = pairs.arrays()
    model = tiny_source().model
    first = reference.cached_reference(model, arrays, cache, batch_size=4)

    def refuse(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(reference, "reference_log_probs", refuse)
    again = tiny_source().model  # another model object, the same weights
    for variable, value in zip(again.weights, model.weights):
        variable.assign(value)
    for a, b in zip(reference.cached_reference(again, arrays, cache), first):
        np.testing.assert_array_equal(a, b)
    again.weights[0].assign(again.weights[0] + 1.0)  # other weights
    with pytest.raises(AssertionError, match="computed again"):
        reference.cached_reference(again, arrays, cache)


@pytest.mark.parametrize("options, message", [
    (dict(beta=0.0), "--beta 0.0 must be a finite number > 0"),
    (dict(beta=float("nan")), "--beta nan must be"),
    (dict(steps=5, eval_every=2), "--steps 5 must be a multiple"),
    (dict(batch_size=40), "--batch-size 40 is larger than the 9 training"),
    (dict(lora_alpha=2.0), "--lora-alpha and --lora-targets need "
                           "--lora-rank"),
    (dict(lora_rank=99), "LoRA rank 99 is out of range"),
    (dict(val_fraction=1.0), "--val-fraction 1.0 must be in"),
    (dict(warmup_steps=200), r"--warmup-steps 200 must be in \[0, --steps "
                             r"200\)"),
])
def test_bad_options_write_nothing(tmp_path, prefs, options, message):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        dpo(tiny_source(), out, data=prefs, verbose=0,
            cache_dir=tmp_path / "cache", **options)
    assert not out.exists()


def test_bench_dpo_smoke(capsys):
    """tools/bench_dpo.py runs (its figures are in the README)."""
    from tests.conftest import load_tool

    ratios = load_tool("bench_dpo").main(["--smoke"])
    assert set(ratios) == {"dpo / sft-2B", "dpo / sft-B"}
    assert all(r > 0 for r in ratios.values())
    assert "ms/step" in capsys.readouterr().out
