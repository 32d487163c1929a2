
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from tests.conftest import to_numpy

from keras_gpt import (GPT, GPTConfig, compile_for_pretraining,
                       make_optimizer)

BACKENDS = ("tensorflow", "jax", "torch")


def arithmetic_sequences(n, length, vocab, seed=0):
    """x_t = a + b*t (mod vocab), a random, b in {1, 2, 3} per row: the next
    token needs the two before it, so attention must learn to look back."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, vocab, (n, 1))
    b = rng.integers(1, 4, (n, 1))
    seq = (a + b * np.arange(length + 1)) % vocab
    return seq[:, :-1].astype("int32"), seq[:, 1:].astype("int32")


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_fit_learns_a_sequence_task(positions):
    vocab, length = 16, 12
    config = GPTConfig(vocab_size=vocab, context_length=length, d_model=32,
                       n_layers=2, n_heads=2, positions=positions)
    model = GPT(config)
    x, y = arithmetic_sequences(512, length, vocab)
    epochs, batch = 10, 32
    compile_for_pretraining(model, total_steps=epochs * 512 // batch,
                            learning_rate=1e-2, warmup_steps=10,
                            weight_decay=0.0)
    start = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
    end = history.history["loss"][-1]
    # ln(16) = 2.77 at the start; only the first step of a row is uncertain
    # (which b: ln(3) / 12 = 0.09 on average), the rest is learnable.
    assert start > 2.5
    assert end < 0.3 * start, (start, history.history["loss"])


def test_schedule_warms_up_then_decays():
    optimizer = make_optimizer(total_steps=100, learning_rate=1e-3,
                               warmup_steps=10, min_learning_rate_ratio=0.1)
    schedule = optimizer.learning_rate if callable(
        optimizer.learning_rate) else optimizer._learning_rate
    lr = {s: float(to_numpy(schedule(s))) for s in (0, 5, 10, 55, 100)}
    assert lr[0] == pytest.approx(0.0, abs=1e-9)
    assert lr[5] == pytest.approx(5e-4, rel=1e-4)
    assert lr[10] == pytest.approx(1e-3, rel=1e-4)
    assert lr[55] == pytest.approx(0.55e-3, rel=1e-3)  # cosine midpoint
    assert lr[100] == pytest.approx(1e-4, rel=1e-4)
    assert optimizer.global_clipnorm == 1.0


def test_weight_decay_skips_biases_norms_and_embeddings():
    model = GPT(GPTConfig.from_preset("tiny", vocab_size=50))
    for w in model.weights:  # nonzero everywhere so decay would show
        w.assign(np.ones(w.shape, "float32"))
    optimizer = make_optimizer(total_steps=10, learning_rate=0.1,
                               warmup_steps=0, weight_decay=0.5,
                               clipnorm=None)
    variables = model.trainable_variables
    optimizer.apply([keras.ops.zeros(v.shape) for v in variables],
                    variables)
    for v in variables:
        value = to_numpy(v)
        if v.name in ("bias", "gamma", "beta", "embeddings"):
            np.testing.assert_allclose(value, 1.0, err_msg=v.path)
        else:
            np.testing.assert_allclose(value, 1.0 - 0.1 * 0.5, rtol=1e-5,
                                       err_msg=v.path)


@pytest.mark.parametrize("kwargs,message", [
    (dict(total_steps=0), "total_steps=0 must be >= 1"),
    (dict(total_steps=10, warmup_steps=10),
     r"warmup_steps=10 must be in \[0, total_steps=10\)"),
    (dict(total_steps=10, learning_rate=-1.0), "learning_rate=-1.0 must be"),
])
def test_bad_recipe_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(**kwargs)


def test_mixed_bfloat16_trains():
    config = GPTConfig.from_preset("tiny", vocab_size=16, context_length=12)
    model = GPT(config, dtype="mixed_bfloat16")
    assert model.blocks[0].attention.qkv.compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)
    x, y = arithmetic_sequences(64, 12, 16)
    compile_for_pretraining(model, total_steps=4, learning_rate=1e-2,
                            warmup_steps=1)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert to_numpy(model(x[:2])).dtype == np.float32


LOAD_AND_PREDICT = """
import sys, numpy as np, keras, keras_gpt.model
model = keras.models.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(x)))
"""


def test_weights_saved_here_load_under_every_backend(tmp_path):
    model = GPT(GPTConfig.from_preset("tiny", vocab_size=61,
                                      positions="rotary"))
    x = np.random.default_rng(3).integers(0, 61, (2, 10)).astype("int32")
    np.save(tmp_path / "x.npy", x)
    # Compiled: the file names NextTokenLoss, which must load wherever
    # keras_gpt.model is imported.
    compile_for_pretraining(model, total_steps=10)
    model.save(tmp_path / "model.keras")
    expected = to_numpy(model(x))
    here = keras.backend.backend()
    for backend in BACKENDS:
        if backend == here:
            continue
        out = tmp_path / f"{backend}.npy"
        env = {**os.environ, "KERAS_BACKEND": backend,
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run(
            [sys.executable, "-c", LOAD_AND_PREDICT, str(tmp_path /
             "model.keras"), str(tmp_path / "x.npy"), str(out)],
            env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        np.testing.assert_allclose(np.load(out), expected, atol=1e-5,
                                   err_msg=f"{here} -> {backend}")


def test_a_replanned_schedule_continues_from_the_rate_it_had():
    """Issue 17, item 12: `--resume --steps N` re-plans the cosine from the
    checkpoint's step; the rate is continuous there and the steps before
    are unchanged (so a checkpoint resumes exactly)."""
    from keras_gpt.training.recipe import ReplannedCosine

    def rates(schedule, steps):
        return np.array([float(keras.ops.convert_to_numpy(schedule(s)))
                         for s in steps])

    first = make_optimizer(100, learning_rate=1e-2, warmup_steps=10)
    replanned = make_optimizer(100, learning_rate=1e-2, warmup_steps=10,
                               replans=[(50, 200)])
    plan, new = first._learning_rate, replanned._learning_rate
    assert isinstance(new, ReplannedCosine)
    np.testing.assert_allclose(rates(new, [0, 5, 10, 30, 49, 50]),
                               rates(plan, [0, 5, 10, 30, 49, 50]), rtol=1e-6)
    start = rates(plan, [50])[0]
    np.testing.assert_allclose(rates(new, [125, 200, 300]),
                               [1e-3 + (start - 1e-3) / 2, 1e-3, 1e-3],
                               rtol=1e-5)
    later = rates(new, range(50, 201, 30))
    assert np.all(np.diff(later) < 0)  # a decay, no jump
    restored = ReplannedCosine.from_config(
        keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(new)).get_config())
    np.testing.assert_allclose(rates(restored, [60, 150]),
                               rates(new, [60, 150]), rtol=1e-6)
    with pytest.raises(ValueError, match="must be more than from_step=50"):
        ReplannedCosine(plan, 50, 50, 1e-3)
