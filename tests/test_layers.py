import keras
import numpy as np
import pytest
from conftest import gradients, to_numpy

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


def test_attention_matches_the_seed_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    attention = CausalSelfAttention(n_heads=2, d_head=4)
    attention.build(x.shape)
    # Weights far from their 0.02-wide initial ones: those give nearly
    # uniform softmax weights and outputs near zero, where a wrong scale in
    # the fused path stayed within the tolerance.
    for weight in attention.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32") * 0.5)
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


def test_attention_in_blocks_matches_the_full_score_matrix():
    """Skipping the masked blocks changes neither outputs nor gradients.

    100 positions: query runs of 32, 32, 32 and 4 (an uneven last run).
    """
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(2, 100, 3, 8)).astype("float32")
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
            np.testing.assert_allclose(fused, explicit, atol=1e-5)
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


def _torch_only():
    if keras.backend.backend() != "torch":
        pytest.skip("only PyTorch has its own projection backward (oneDNN) "
                    "and GEMM choice; elsewhere the product is ops.matmul")


@pytest.mark.parametrize("gemm", ["onednn", "torch"])
def test_projection_gradients_match_plain_matmul(gemm, monkeypatch):
    """backend.linear is exact with either product PyTorch CPU may pick."""
    _torch_only()
    import torch

    from keras_gpt import backend as backend_lib
    from keras_gpt import backend_torch

    if gemm == "onednn" and not backend_torch.onednn_linear_available():
        pytest.skip("this PyTorch build has no working oneDNN linear op")
    monkeypatch.setattr(backend_torch, "_CPU_GEMM", gemm)
    rng = np.random.default_rng(0)
    x, kernel, bias = (torch.tensor(rng.normal(size=s).astype("float32"),
                                    requires_grad=True)
                       for s in ((12, 8), (8, 6), (6,)))
    upstream = torch.tensor(rng.normal(size=(12, 6)).astype("float32"))
    out = backend_lib.linear(x, kernel, bias)
    out.backward(upstream)
    got = [t.grad.clone() for t in (x, kernel, bias)]
    assert (type(out.grad_fn).__name__ == "OneDNNLinearBackward") == (
        gemm == "onednn")
    x_, k_, b_ = (t.detach().numpy() for t in (x, kernel, bias))
    g = upstream.numpy()
    np.testing.assert_allclose(out.detach().numpy(), x_ @ k_ + b_, rtol=1e-5,
                               atol=1e-5)
    for value, expected in zip(got, (g @ k_.T, x_.T @ g, g.sum(0))):
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5,
                                   atol=1e-5)


def test_cpu_gemm_times_both_products_once_and_honours_the_override(
        monkeypatch):
    _torch_only()
    import torch

    from keras_gpt import backend_torch

    calls = []
    real = backend_torch._time_projections

    def timed(*args, **kwargs):
        calls.append(real(rows=64, d_in=32, d_out=48, rounds=1))
        return calls[-1]

    monkeypatch.setattr(backend_torch, "_time_projections", timed)
    monkeypatch.setattr(backend_torch, "_CPU_GEMM", None)
    monkeypatch.delenv(backend_torch.GEMM_ENV, raising=False)
    with torch.inference_mode():  # the first projection may come in here
        choice = backend_torch.cpu_gemm()
    assert backend_torch.cpu_gemm() == choice
    if backend_torch.onednn_linear_available():
        assert len(calls) == 1 and set(calls[0]) == {"onednn", "torch"}
        assert all(0 < s < float("inf") for s in calls[0].values())
        faster = calls[0]["onednn"] < (backend_torch._ONEDNN_MARGIN
                                       * calls[0]["torch"])
        assert choice == ("onednn" if faster else "torch")
    else:
        assert not calls and choice == "torch"

    for forced in ("torch", "onednn"):
        if forced == "onednn" and not backend_torch.onednn_linear_available():
            continue
        monkeypatch.setattr(backend_torch, "_CPU_GEMM", None)
        monkeypatch.setenv(backend_torch.GEMM_ENV, forced)
        assert backend_torch.cpu_gemm() == forced
    assert len(calls) <= 1
    monkeypatch.setattr(backend_torch, "_CPU_GEMM", None)
    monkeypatch.setattr(backend_torch, "onednn_linear_available",
                        lambda: False)
    monkeypatch.setenv(backend_torch.GEMM_ENV, "onednn")
    with pytest.raises(ValueError, match=r"KERAS_GPT_TORCH_GEMM=onednn, but "
                                         r"this PyTorch build has no working "
                                         r"oneDNN linear op"):
        backend_torch.cpu_gemm()
    monkeypatch.setenv(backend_torch.GEMM_ENV, "auto")
    assert backend_torch.cpu_gemm() == "torch"  # nothing to time
    assert len(calls) <= 1
    monkeypatch.setattr(backend_torch, "_CPU_GEMM", None)
    monkeypatch.setenv(backend_torch.GEMM_ENV, "mkl")
    with pytest.raises(ValueError, match=r"KERAS_GPT_TORCH_GEMM='mkl': "
                                         r"expected one of auto, onednn, "
                                         r"torch"):
        backend_torch.cpu_gemm()
