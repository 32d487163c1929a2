import keras
import numpy as np
import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt.interpret import (TunedLens, logit_lens, train_tuned_lens,
                                 tuned_lens)
from tests.conftest import to_numpy


def tiny_model():
    return GPT(GPTConfig(vocab_size=50, context_length=16, d_model=32,
                         n_layers=2, n_heads=4))


def ids(batch=2, length=9, seed=0):
    return np.random.default_rng(seed).integers(0, 50, (batch, length))


def test_logit_lens_last_row_is_the_model_and_earlier_rows_read_the_stream():
    model = tiny_model()
    x = ids()
    reading = logit_lens(model, x, top_k=3)
    assert reading.names == ["blocks.0.resid_pre", "blocks.1.resid_pre",
                             "blocks.1.resid_post"]
    assert reading.logits.shape == (3, 2, 9, 50)
    np.testing.assert_allclose(reading.logits[-1], to_numpy(model(x)),
                               atol=1e-5)
    np.testing.assert_allclose(reading.kl[-1], 0.0, atol=1e-9)
    assert (reading.kl[:-1] > 0).all()
    # Row 1 is the stream entering block 1 read through ln_final and W_U.
    _, cache = model.run_with_cache(x, names=["blocks.1.resid_pre"])
    np.testing.assert_allclose(
        reading.logits[1], to_numpy(model.unembed(cache["blocks.1.resid_pre"])),
        atol=1e-5)
    top = np.argsort(-reading.logits, axis=-1, kind="stable")[..., :3]
    np.testing.assert_array_equal(reading.top_ids, top)
    assert np.all(np.diff(reading.top_probs, axis=-1) <= 0)
    with pytest.raises(ValueError, match="top_k=0 must be a positive"):
        logit_lens(model, x, top_k=0)


def test_tuned_lens_starts_as_the_logit_lens_learns_and_round_trips(
        tmp_path):
    model = tiny_model()
    x = ids(32, 16)
    plain = logit_lens(model, x[:4])
    start = tuned_lens(model, TunedLens(2, 32), x[:4])
    np.testing.assert_allclose(start.logits, plain.logits, atol=1e-5)
    lens = train_tuned_lens(model, x, epochs=10, learning_rate=3e-3)
    losses = lens.history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    tuned = tuned_lens(model, lens, x[:4])
    assert (tuned.kl[:-1].mean(axis=(1, 2))
            < 0.5 * plain.kl[:-1].mean(axis=(1, 2))).all()
    np.testing.assert_allclose(tuned.logits[-1], plain.logits[-1], atol=1e-5)
    path = tmp_path / "lens.keras"
    lens.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(tuned_lens(model, loaded, x[:4]).logits,
                               tuned.logits, atol=1e-6)


def test_tuned_lens_for_another_model_is_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="lens is for 3 layers of width 32; "
                       "the model has 2 of width 32"):
        tuned_lens(model, TunedLens(3, 32), ids())
    with pytest.raises(ValueError, match=r"reads streams of shape \(batch, "
                       r"2, seq, 32\); got \(1, 2, 4, 16\)"):
        TunedLens(2, 32)(np.zeros((1, 2, 4, 16), "float32"))
