import keras
import numpy as np
import pytest
from tests.conftest import to_numpy

from keras_gpt import GPT, GPTConfig


def tiny(**overrides):
    base = dict(vocab_size=37, context_length=12, d_model=16, n_layers=2,
                n_heads=2)
    return GPTConfig(**{**base, **overrides})


def ids(batch, length, vocab=37, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (batch, length))


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_logits_shape_and_causality(positions):
    model = GPT(tiny(positions=positions))
    x = ids(2, 12)
    logits = to_numpy(model(x))
    assert logits.shape == (2, 12, 37) and logits.dtype == np.float32
    t = 5
    changed = x.copy()
    changed[:, t + 1:] = (changed[:, t + 1:] + 7) % 37
    after = to_numpy(model(changed))
    np.testing.assert_allclose(after[:, :t + 1], logits[:, :t + 1], atol=1e-5)
    assert np.abs(after[:, t + 1:] - logits[:, t + 1:]).max() > 1e-3


def test_logits_under_jit_match_eager():
    model = GPT(tiny(n_layers=1))
    x = ids(2, 8)
    model.compile(jit_compile=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), to_numpy(model(x)),
                               atol=1e-5)


def test_inspect_returns_attention_weights_and_residuals():
    model = GPT(tiny(n_layers=3, n_heads=4))
    x = ids(1, 9)
    seen = model.inspect(x)
    assert len(seen["attention_weights"]) == 3
    assert len(seen["residual_stream"]) == 4
    for w in seen["attention_weights"]:
        w = to_numpy(w)
        assert w.shape == (1, 4, 9, 9)
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
        assert np.all(w[..., np.triu_indices(9, k=1)[0],
                        np.triu_indices(9, k=1)[1]] == 0)
    for r in seen["residual_stream"]:
        assert to_numpy(r).shape == (1, 9, 16)
    np.testing.assert_allclose(to_numpy(seen["logits"]), to_numpy(model(x)),
                               atol=1e-5)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_cached_steps_equal_the_full_pass(positions):
    model = GPT(tiny(positions=positions))
    x = ids(2, 10)
    full = to_numpy(model(x))
    cache = model.init_cache(2)
    # One (keys, values) pair per layer; keys stored transposed.
    assert len(cache) == 2
    for keys, values in cache:
        assert tuple(keys.shape) == (2 * 2, 8, 12)
        assert tuple(values.shape) == (2 * 2, 12, 8)
    logits, cache = model.call_with_cache(x[:, :6], cache, 0)
    np.testing.assert_allclose(to_numpy(logits), full[:, :6], atol=1e-5)
    for t in range(6, 10):
        logits, cache = model.call_with_cache(x[:, t:t + 1], cache, t)
        np.testing.assert_allclose(to_numpy(logits)[:, 0], full[:, t],
                                   atol=1e-5)


def test_gpt2_initialisation():
    config = GPTConfig(vocab_size=500, context_length=64, d_model=128,
                       n_layers=8, n_heads=4)
    model = GPT(config)
    weights = {w.path: to_numpy(w) for w in model.weights}
    residual = 0.02 / np.sqrt(2 * 8)
    for path, value in weights.items():
        if path.endswith("bias") or path.endswith("beta"):
            assert np.all(value == 0), path
        elif path.endswith("gamma"):
            assert np.all(value == 1), path
        elif "attention/out" in path or "mlp/down" in path:
            assert value.std() == pytest.approx(residual, rel=0.1), path
        else:
            assert value.std() == pytest.approx(0.02, rel=0.1), path
    # Every matrix is drawn on its own (no two layers share values).
    kernels = [v for p, v in weights.items() if p.endswith("kernel")]
    assert len({v.ravel()[:4].tobytes() for v in kernels}) == len(kernels)


def test_untied_model_has_its_own_unembedding():
    model = GPT(tiny(tie_embeddings=False))
    paths = [w.path for w in model.weights]
    assert any(p.endswith("unembedding/kernel") for p in paths)


@pytest.mark.parametrize("bad,error,message", [
    (np.array([[1, 37]]), ValueError,
     r"Token id 37 is out of range: ids must be in \[0, 37\)"),
    (np.array([[-3, 1]]), ValueError, "Token id -3 is out of range"),
    (np.array([[1.0, 2.0]], "float32"), TypeError,
     "Token ids must be integers; got dtype float32"),
    (np.zeros((1, 13), "int32"), ValueError,
     "Sequence length 13 exceeds context_length=12"),
    (np.zeros((13,), "int32"), ValueError,
     r"expects token ids of shape \(batch, seq\)"),
])
def test_bad_input_names_value_and_limit(bad, error, message):
    model = GPT(tiny())
    with pytest.raises(error, match=message):
        model(bad)


def test_cache_longer_than_context_is_refused():
    with pytest.raises(ValueError, match="Cache length 13 exceeds "
                                         "context_length=12"):
        GPT(tiny()).init_cache(1, 13)


def test_keras_file_round_trip(tmp_path):
    model = GPT(tiny(positions="rotary", tie_embeddings=False))
    x = ids(2, 12)
    expected = to_numpy(model(x))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode=True
    assert isinstance(loaded, GPT) and loaded.config == model.config
    np.testing.assert_array_equal(to_numpy(loaded(x)), expected)


@pytest.mark.backend_independent
def test_config_round_trip():
    model = GPT(tiny(), name="probe")
    clone = GPT.from_config(model.get_config())
    assert clone.config == model.config and clone.name == "probe"
    assert GPT("tiny").config == GPTConfig.from_preset("tiny")
