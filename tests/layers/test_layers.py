import warnings

import keras
import numpy as np
import pytest
from tests.conftest import gradients, to_numpy

from keras_gpt.layers import (MLP, CausalSelfAttention, PositionEmbedding,
                              RotaryEmbedding, SinusoidalEncoding,
                              TokenEmbedding, TransformerBlock, Unembedding)

LAYERS = [
    (TokenEmbedding, dict(vocab_size=11, d_model=8), np.array([[1, 2, 10]])),
    (PositionEmbedding, dict(context_length=6, d_model=8),
     np.ones((2, 5, 8), "float32")),
    (SinusoidalEncoding, dict(max_wavelength=500), np.ones((2, 5, 8),
                                                           "float32")),
    (RotaryEmbedding, dict(max_wavelength=500), np.ones((2, 5, 3, 8),
                                                       "float32")),
    (CausalSelfAttention, dict(n_heads=2, d_head=4, use_bias=False,
                               rotary_max_wavelength=100),
     np.ones((2, 5, 8), "float32")),
    (MLP, dict(d_mlp=16, activation="relu", use_bias=False),
     np.ones((2, 5, 8), "float32")),
    (TransformerBlock, dict(n_heads=2, d_head=4, d_mlp=16, dropout=0.1,
                            layer_norm_epsilon=1e-6),
     np.ones((2, 5, 8), "float32")),
    (Unembedding, dict(vocab_size=13), np.ones((2, 5, 8), "float32")),
]


@pytest.mark.parametrize("cls,kwargs,inputs", LAYERS,
                         ids=[c.__name__ for c, _, _ in LAYERS])
def test_get_config_round_trip(cls, kwargs, inputs):
    layer = cls(**kwargs, name="probe")
    expected = to_numpy(layer(inputs))
    config = layer.get_config()
    for key, value in kwargs.items():
        assert config[key] == value
    clone = cls.from_config(config)
    assert clone.get_config() == config
    # The serialized form (what .keras files hold) round-trips too.
    revived = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(revived) is cls and revived.get_config() == config
    got = to_numpy(clone(inputs))
    assert got.shape == expected.shape
    if layer.weights:
        clone.set_weights(layer.get_weights())
        np.testing.assert_allclose(to_numpy(clone(inputs)), expected,
                                   atol=1e-6)


def test_mlp_uses_tanh_gelu():
    mlp = MLP(d_mlp=6, use_bias=False)
    x = np.random.default_rng(0).normal(size=(1, 2, 4)).astype("float32")
    out = to_numpy(mlp(x))
    up, down = (to_numpy(w) for w in mlp.weights)
    h = x @ up
    gelu = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    np.testing.assert_allclose(out, gelu @ down, rtol=1e-5, atol=1e-6)


def _attention(rng, length):
    """Inputs (2, length, 8) and 2-head attention with N(0, 0.5) weights:
    far from the 0.02-wide initial ones, which give nearly uniform softmax
    weights and outputs near zero, where a wrong scale in the fused path
    stayed within the tolerance."""
    x = rng.normal(size=(2, length, 8)).astype("float32")
    attention = CausalSelfAttention(n_heads=2, d_head=4)
    attention.build(x.shape)
    for weight in attention.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32") * 0.5)
    return x, attention


def test_attention_matches_the_seed_formula():
    x, attention = _attention(np.random.default_rng(0), 5)
    out, weights = attention(x, return_attention_weights=True)
    fused = to_numpy(attention(x))  # SDPA on torch; matmuls on CPU jax/tf
    qkv_w, qkv_b, o_w, o_b = (to_numpy(w) for w in attention.weights)
    q, k, v = np.split(x @ qkv_w + qkv_b, 3, axis=-1)
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        scores = q[..., sl] @ np.swapaxes(k[..., sl], 1, 2) / 2.0
        scores = np.where(np.tril(np.ones((5, 5))) > 0, scores, -np.inf)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        np.testing.assert_allclose(to_numpy(weights)[:, h], p, atol=1e-6)
        heads.append(p @ v[..., sl])
    reference = np.concatenate(heads, -1) @ o_w + o_b
    np.testing.assert_allclose(to_numpy(out), reference, atol=1e-5)
    np.testing.assert_allclose(fused, reference, atol=1e-5)


def test_one_position_attends_to_itself_without_a_warning():
    x, attention = _attention(np.random.default_rng(1), 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, weights = attention(x, return_attention_weights=True)
        plain = to_numpy(attention(x))
    assert not [w for w in caught if "softmax" in str(w.message)], caught
    np.testing.assert_array_equal(to_numpy(weights), np.ones((2, 2, 1, 1)))
    qkv_w, qkv_b, o_w, o_b = (to_numpy(w) for w in attention.weights)
    value = np.split(x @ qkv_w + qkv_b, 3, axis=-1)[2]
    np.testing.assert_allclose(to_numpy(out), value @ o_w + o_b, atol=1e-5)
    np.testing.assert_allclose(plain, value @ o_w + o_b, atol=1e-5)


def test_attention_in_blocks_matches_the_full_score_matrix():
    """Skipping the masked blocks changes neither outputs nor gradients.

    200 positions: query runs of 64, 64, 64 and 8 (an uneven last run).
    """
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(2, 200, 3, 8)).astype("float32")
               for _ in range(3))
    upstream = rng.normal(size=q.shape).astype("float32")
    attention = CausalSelfAttention(n_heads=3, d_head=8)
    blocked = attention._attend_in_blocks
    full = lambda *a: attention._attend_explicitly(*a)[0]  # noqa: E731
    np.testing.assert_allclose(to_numpy(blocked(q, k, v)),
                               to_numpy(full(q, k, v)), atol=1e-5)

    def weighted(fn):  # a scalar whose gradient weighs every output
        return lambda *a: keras.ops.sum(
            fn(*a) * keras.ops.convert_to_tensor(upstream))

    for got, expected in zip(gradients(weighted(blocked), (q, k, v)),
                             gradients(weighted(full), (q, k, v))):
        np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("length, runs", [(64, 1), (100, 2), (128, 2),
                                          (256, 4)])
def test_short_sequences_attend_in_one_run(length, runs, monkeypatch):
    """Runs of at least 64 queries: at 64 positions, two runs of 32 saved
    no time (`tools/ab_speed.py attention --config baby`)."""
    attention = CausalSelfAttention(n_heads=1, d_head=4)
    calls = []
    run = attention._attend_run
    monkeypatch.setattr(attention, "_attend_run", lambda *a, **kw: (
        calls.append(a[0].shape[2]) or run(*a, **kw)))
    q = np.zeros((1, length, 1, 4), "float32")
    attention._attend_in_blocks(q, q, q)
    assert len(calls) == runs and sum(calls) == length, calls


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_attention_matches_the_formula(dtype, monkeypatch):
    """`ops.dot_product_attention`, the path of torch and of GPUs (where
    JAX and TF take it too, in bfloat16 under mixed precision), gives the
    explicit formula's outputs and gradients on every backend: to float32
    rounding, or in bfloat16 to 2% of the whole (the explicit path keeps
    its scores in float32, the fused one rounds them to 8 bits)."""
    from keras_gpt import backend as backend_lib

    monkeypatch.setattr(backend_lib, "_FUSED_ATTENTION", True)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 40, 12)).astype("float32")
    upstream = keras.ops.convert_to_tensor(
        rng.normal(size=(2, 40, 12)).astype("float32"))
    attention = CausalSelfAttention(n_heads=3, d_head=4, dtype=dtype)
    attention.build(x.shape)
    # Far from the initial weights (test_attention_matches_the_seed_formula).
    for weight in attention.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32") * 0.5)

    def loss(return_weights):
        def fn(inputs):
            out = attention(inputs, return_attention_weights=return_weights)
            out = out[0] if return_weights else out
            return keras.ops.sum(keras.ops.cast(out, "float32") * upstream)
        return fn

    for fused, explicit in zip(
            (attention(x), *gradients(loss(False), (x,))),
            (attention(x, return_attention_weights=True)[0],
             *gradients(loss(True), (x,)))):
        fused, explicit = (to_numpy(t).astype("float32")
                           for t in (fused, explicit))
        if dtype == "float32":
            # Sums of 40 products reordered: float32 rounding, relative.
            np.testing.assert_allclose(fused, explicit, rtol=1e-5, atol=1e-5)
        else:
            error = np.linalg.norm(fused - explicit)
            assert error <= 0.02 * np.linalg.norm(explicit), error


def test_rotary_scores_depend_on_relative_position_only():
    rope = RotaryEmbedding()
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 1, 1, 8)).astype("float32")
    k = rng.normal(size=(1, 1, 1, 8)).astype("float32")

    def score(pos_q, pos_k):
        rq = to_numpy(rope(q, start_index=pos_q))
        rk = to_numpy(rope(k, start_index=pos_k))
        return float((rq * rk).sum())

    assert score(3, 1) == pytest.approx(score(12, 10), abs=1e-4)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)
    # Position 0 is the identity; norms are preserved everywhere.
    np.testing.assert_allclose(to_numpy(rope(q)), q, atol=1e-6)
    assert np.linalg.norm(to_numpy(rope(q, start_index=7))) == pytest.approx(
        np.linalg.norm(q), rel=1e-5)


def test_sinusoidal_matches_the_paper():
    enc = to_numpy(SinusoidalEncoding()(np.zeros((1, 4, 6), "float32")))[0]
    pos, i = 3, 1
    assert enc[pos, 2 * i] == pytest.approx(np.sin(pos / 10000 ** (2 * i / 6)))
    assert enc[pos, 2 * i + 1] == pytest.approx(
        np.cos(pos / 10000 ** (2 * i / 6)))
    shifted = to_numpy(SinusoidalEncoding()(np.zeros((1, 2, 6), "float32"),
                                            start_index=2))[0]
    np.testing.assert_allclose(shifted, enc[2:4], atol=1e-6)


def test_tied_unembedding_is_embedding_transposed():
    emb = TokenEmbedding(7, 4)
    emb.build()
    x = np.random.default_rng(2).normal(size=(1, 3, 4)).astype("float32")
    logits = Unembedding(7, tied=True)(x, embeddings=emb.embeddings)
    np.testing.assert_allclose(to_numpy(logits),
                               x @ to_numpy(emb.embeddings).T, atol=1e-5)
    with pytest.raises(ValueError, match="needs `embeddings`"):
        Unembedding(7, tied=True)(x)


@pytest.mark.parametrize("ids,message", [
    (np.array([[0, 11]]), r"Token id 11 is out of range: ids must be in "
                          r"\[0, 11\)"),
    (np.array([[-1, 3]]), r"Token id -1 is out of range"),
])
def test_token_embedding_rejects_out_of_range_ids(ids, message):
    with pytest.raises(ValueError, match=message):
        TokenEmbedding(11, 4)(ids)


def test_token_embedding_rejects_float_ids():
    with pytest.raises(TypeError, match="Token ids must be integers; got "
                                        "dtype float32"):
        TokenEmbedding(11, 4)(np.array([[1.0, 2.0]], "float32"))
