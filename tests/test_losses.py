"""NextTokenLoss: Keras' sparse cross-entropy from logits, computed without
a one-hot, with clear errors for bad ids."""

import keras
import numpy as np
import pytest
from tests.conftest import gradients, to_numpy

from keras_gpt import GPT, GPTConfig, NextTokenLoss


def test_next_token_loss_is_sparse_categorical_crossentropy():
    """Same value, gradient and sample weighting as Keras' own loss."""
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(2, 5, 11)).astype("float32")
    targets = rng.integers(0, 11, size=(2, 5)).astype("int32")
    weights = rng.uniform(size=(2, 5)).astype("float32")
    ours = NextTokenLoss()
    keras_own = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for kwargs in ({}, {"sample_weight": weights}):
        np.testing.assert_allclose(
            to_numpy(ours(targets, logits, **kwargs)),
            to_numpy(keras_own(targets, logits, **kwargs)), rtol=1e-5)
    # Ids with a trailing axis of 1, which Keras' loss also takes.
    np.testing.assert_allclose(to_numpy(ours(targets[..., None], logits)),
                               to_numpy(keras_own(targets, logits)), rtol=1e-5)
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    softmax = shifted / shifted.sum(-1, keepdims=True)
    one_hot = np.eye(11, dtype="float32")[targets]
    # Weighted, each token's gradient is scaled by its own upstream value.
    for scale, kwargs in ((np.ones_like(weights), {}),
                          (weights, {"sample_weight": weights})):
        got, = gradients(lambda x: ours(targets, x, **kwargs), (logits,))
        expected, = gradients(lambda x: keras_own(targets, x, **kwargs),
                              (logits,))
        np.testing.assert_allclose(got, expected, atol=1e-6)
        np.testing.assert_allclose(
            got, (softmax - one_hot) * scale[..., None] / 10,
            atol=1e-6)
    restored = NextTokenLoss.from_config(ours.get_config())
    assert restored.name == "next_token_loss"
    bad = targets.copy()
    bad[1, 2] = 11
    with pytest.raises(ValueError, match=r"Token id 11 is out of range: "
                       r"ids must be in \[0, 11\)"):
        ours(bad, logits)


def test_out_of_range_ids_give_nan_in_compiled_steps():
    """Compiled, ids cannot be checked: the loss becomes NaN instead of
    TensorFlow's XLA gather silently clamping them to the last row."""
    if keras.backend.backend() == "torch":
        pytest.skip("PyTorch runs Keras' steps eagerly unless torch.compile "
                    "is asked for (slow here); eager ids raise (test above)")
    model = GPT(GPTConfig(vocab_size=11, context_length=8, d_model=16,
                          n_layers=1, n_heads=2))
    model.compile(loss=NextTokenLoss(), jit_compile=True)
    x = np.array([[1, 2, 3, 4]], "int32")
    y = np.array([[2, 3, 4, 5]], "int32")
    assert np.isfinite(model.evaluate(x, y, verbose=0))
    bad_target, bad_input = y.copy(), x.copy()
    bad_target[0, 1] = bad_input[0, 2] = 11
    assert np.isnan(model.evaluate(x, bad_target, verbose=0))
    assert np.isnan(model.evaluate(bad_input, y, verbose=0))
