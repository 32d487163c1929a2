"""`keras_gpt.layers.direct`: on PyTorch, built sublayers run their `call`
without Keras' `Layer.__call__`, with the same results; everywhere else,
and whenever Keras' bookkeeping would do something, Keras' path."""

import keras
import numpy as np
import pytest

from keras_gpt.backend import layer_calls
from keras_gpt.config import GPTConfig
from keras_gpt.model import GPT

CONFIG = dict(n_layers=2, n_heads=2, d_model=16, vocab_size=32,
              context_length=8)


def _torch_only():
    if keras.backend.backend() != "torch":
        pytest.skip("direct calls are PyTorch-only: JAX and TensorFlow run "
                    "the layers' Python once, while tracing")


def _ids(batch=3, seed=0):
    return np.random.default_rng(seed).integers(
        0, CONFIG["vocab_size"], (batch, CONFIG["context_length"])).astype(
            "int32")


def _model(**overrides):
    keras.utils.set_random_seed(1)
    model = GPT(GPTConfig(**{**CONFIG, "dropout": 0.0, **overrides}))
    model(_ids(1))
    return model


@pytest.fixture
def keras_calls(monkeypatch):
    """Counts the layers (by class name) that went through Keras'
    `Layer.__call__`."""
    counts = {}
    original = keras.layers.Layer.__call__

    def counting(self, *args, **kwargs):
        name = type(self).__name__
        counts[name] = counts.get(name, 0) + 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Layer, "__call__", counting)
    return counts


def _keras_path(monkeypatch):
    monkeypatch.setattr(layer_calls, "_TORCH", False)


def _step(model, ids):
    """Logits and the gradients of the next-token loss, as numpy."""
    import torch

    x = torch.as_tensor(ids)
    model.zero_grad()
    logits = model(x, training=True)
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, CONFIG["vocab_size"]),
        x[:, 1:].reshape(-1).long())
    loss.backward()
    return (logits.detach().numpy(),
            [v.value.grad.numpy().copy() for v in model.trainable_variables])


def test_off_torch_never_direct():
    if keras.backend.backend() == "torch":
        pytest.skip("checks the JAX and TensorFlow passes")
    model = _model()
    block = model.blocks[0]
    x = keras.ops.ones((1, 4, CONFIG["d_model"]))
    assert not layer_calls.direct_call_applies(block, (x,),
                                               {"training": True})


def test_training_step_is_the_same_and_skips_keras(monkeypatch, keras_calls):
    _torch_only()
    model = _model()
    keras_calls.clear()
    logits, grads = _step(model, _ids())
    # Only the model itself went through Keras' __call__.
    assert keras_calls == {"GPT": 1}
    keras_calls.clear()
    _keras_path(monkeypatch)
    keras_logits, keras_grads = _step(model, _ids())
    assert keras_calls["Projection"] == 4 * CONFIG["n_layers"]
    np.testing.assert_array_equal(logits, keras_logits)
    for got, want in zip(grads, keras_grads, strict=True):
        np.testing.assert_array_equal(got, want)


def test_dropout_sees_training(keras_calls):
    _torch_only()
    import torch

    model = _model(dropout=0.5)
    x = torch.as_tensor(_ids())
    train = keras.ops.convert_to_numpy(model(x, training=True))
    keras_calls.clear()
    infer = keras.ops.convert_to_numpy(model(x, training=False))
    assert keras_calls == {"GPT": 1}
    assert np.abs(train - infer).max() > 1e-3
    np.testing.assert_array_equal(
        infer, keras.ops.convert_to_numpy(model(x, training=False)))


def test_fit_takes_direct_calls(keras_calls):
    _torch_only()
    model = _model()
    model.compile(optimizer="adam", loss=keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True))
    ids = _ids(4)
    keras_calls.clear()
    history = model.fit(ids[:, :-1], ids[:, 1:], batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert set(keras_calls) == {"GPT"}


@pytest.mark.parametrize("kind", ["int8", "lora"])
def test_quantized_and_lora_models_agree(kind, monkeypatch, keras_calls):
    _torch_only()
    model = _model()
    if kind == "int8":
        model.quantize("int8")
    else:
        model.enable_lora(2)
        for layer in model._flatten_layers():
            factor = getattr(layer, "lora_kernel_b", None)
            if factor is not None:
                factor.assign(np.full(factor.shape, 0.1, "float32"))
    ids = _ids()
    keras_calls.clear()
    direct = keras.ops.convert_to_numpy(model(ids, training=False))
    assert set(keras_calls) == {"GPT"}
    _keras_path(monkeypatch)
    np.testing.assert_array_equal(direct, keras.ops.convert_to_numpy(
        model(ids, training=False)))


def test_keras_path_where_its_bookkeeping_matters(keras_calls):
    _torch_only()
    import torch

    model = _model()
    keras_calls.clear()
    block = model.blocks[0]
    x = torch.ones((1, 4, CONFIG["d_model"]))
    assert layer_calls.direct_call_applies(block, (x,), {"training": True})
    refused = {
        "training not given": ((x,), {}),
        "float64 input": ((x.double(),), {"training": True}),
        "NumPy input": ((np.ones((1, 4, CONFIG["d_model"]), "float32"),),
                        {"training": True}),
        "two positional inputs": ((x, x), {"training": True}),
        "a tuple argument": ((x,), {"training": True, "cache": (x, x)}),
    }
    for why, (args, kwargs) in refused.items():
        assert not layer_calls.direct_call_applies(block, args, kwargs), why
    unbuilt = model.blocks[0].__class__.from_config(block.get_config())
    assert not layer_calls.direct_call_applies(unbuilt, (x,),
                                               {"training": True})

    # A torch hook is honoured: the layer goes through Keras and torch.
    seen = []
    handle = block.register_forward_hook(lambda *_: seen.append(1))
    try:
        model(_ids(), training=True)
    finally:
        handle.remove()
    assert seen == [1] and keras_calls["TransformerBlock"] == 1


def test_mixed_precision_takes_keras_path(keras_calls):
    _torch_only()
    keras.utils.set_random_seed(1)
    model = GPT(GPTConfig(**CONFIG, dropout=0.0), dtype="mixed_bfloat16")
    model(_ids(1))
    keras_calls.clear()
    logits = model(_ids(), training=True)
    assert keras_calls["Projection"] == 4 * CONFIG["n_layers"]
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.isfinite(keras.ops.convert_to_numpy(logits)).all()
