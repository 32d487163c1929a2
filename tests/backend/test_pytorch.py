"""PyTorch-only code of `keras_gpt.backend.pytorch`: the CPU product choice
and the cross-entropy whose backward reuses its buffer."""

import keras
import numpy as np
import pytest


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
    from keras_gpt.backend import pytorch

    if gemm == "onednn" and not pytorch.onednn_linear_available():
        pytest.skip("this PyTorch build has no working oneDNN linear op")
    monkeypatch.setattr(pytorch, "_CPU_GEMM", gemm)
    rng = np.random.default_rng(0)
    x, kernel, bias = (torch.tensor(rng.normal(size=s).astype("float32"),
                                    requires_grad=True)
                       for s in ((12, 8), (8, 6), (6,)))
    upstream = torch.tensor(rng.normal(size=(12, 6)).astype("float32"))
    out = backend_lib.linear(x, kernel, bias)
    out.backward(upstream)
    got = [t.grad.clone() for t in (x, kernel, bias)]
    # One op either way: oneDNN's, or torch.addmm with the bias inside.
    assert type(out.grad_fn).__name__ == (
        "OneDNNLinearBackward" if gemm == "onednn" else "AddmmBackward0")
    x_, k_, b_ = (t.detach().numpy() for t in (x, kernel, bias))
    g = upstream.numpy()
    np.testing.assert_allclose(out.detach().numpy(), x_ @ k_ + b_, rtol=1e-5,
                               atol=1e-5)
    for value, expected in zip(got, (g @ k_.T, x_.T @ g, g.sum(0))):
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5,
                                   atol=1e-5)


def test_linear_reads_keras_variables_and_casts_to_the_inputs_dtype(
        monkeypatch):
    """Keras variables (as a layer passes them) give their values, cast to
    the rows' dtype (a mixed-precision layer's bfloat16), and the result
    equals Keras' own ops (the path `tools/ab_speed.py torch-products`
    compares against)."""
    _torch_only()
    import torch

    from keras_gpt.backend import pytorch

    rng = np.random.default_rng(1)
    kernel = keras.Variable(rng.normal(size=(8, 6)).astype("float32"))
    bias = keras.Variable(rng.normal(size=(6,)).astype("float32"))
    x = torch.tensor(rng.normal(size=(5, 8)).astype("float32"))
    direct = pytorch.linear(x, kernel, bias)
    monkeypatch.setattr(pytorch, "_CPU_GEMM", "torch")
    monkeypatch.setattr(pytorch, "DIRECT_PRODUCTS", False)
    via_keras = pytorch.linear(x, kernel, bias)
    expected = x.numpy() @ kernel.numpy() + bias.numpy()
    for out in (direct, via_keras):
        np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5,
                                   atol=1e-5)
    monkeypatch.setattr(pytorch, "DIRECT_PRODUCTS", True)
    half = pytorch.linear(x.to(torch.bfloat16), kernel, bias)
    assert half.dtype == torch.bfloat16
    np.testing.assert_allclose(half.detach().float().numpy(), expected,
                               atol=0.1)
    no_bias = pytorch.linear(x, kernel)
    np.testing.assert_allclose(no_bias.detach().numpy(),
                               x.numpy() @ kernel.numpy(),
                               rtol=1e-5, atol=1e-5)


def test_cpu_gemm_times_both_products_once_and_honours_the_override(
        monkeypatch):
    _torch_only()
    import torch

    from keras_gpt.backend import pytorch

    calls = []
    real = pytorch._time_projections

    def timed(*args, **kwargs):
        calls.append(real(rows=64, d_in=32, d_out=48, rounds=1))
        return calls[-1]

    monkeypatch.setattr(pytorch, "_time_projections", timed)
    monkeypatch.setattr(pytorch, "_CPU_GEMM", None)
    monkeypatch.delenv(pytorch.GEMM_ENV, raising=False)
    with torch.inference_mode():  # the first projection may come in here
        choice = pytorch.cpu_gemm()
    assert pytorch.cpu_gemm() == choice
    if pytorch.onednn_linear_available():
        assert len(calls) == 1 and set(calls[0]) == {"onednn", "torch"}
        assert all(0 < s < float("inf") for s in calls[0].values())
        faster = calls[0]["onednn"] < (pytorch._ONEDNN_MARGIN
                                       * calls[0]["torch"])
        assert choice == ("onednn" if faster else "torch")
    else:
        assert not calls and choice == "torch"

    for forced in ("torch", "onednn"):
        if forced == "onednn" and not pytorch.onednn_linear_available():
            continue
        monkeypatch.setattr(pytorch, "_CPU_GEMM", None)
        monkeypatch.setenv(pytorch.GEMM_ENV, forced)
        assert pytorch.cpu_gemm() == forced
    assert len(calls) <= 1
    monkeypatch.setattr(pytorch, "_CPU_GEMM", None)
    monkeypatch.setattr(pytorch, "onednn_linear_available",
                        lambda: False)
    monkeypatch.setenv(pytorch.GEMM_ENV, "onednn")
    with pytest.raises(ValueError, match=r"KERAS_GPT_TORCH_GEMM=onednn, but "
                                         r"this PyTorch build has no working "
                                         r"oneDNN linear op"):
        pytorch.cpu_gemm()
    monkeypatch.setenv(pytorch.GEMM_ENV, "auto")
    assert pytorch.cpu_gemm() == "torch"  # nothing to time
    assert len(calls) <= 1
    monkeypatch.setattr(pytorch, "_CPU_GEMM", None)
    monkeypatch.setenv(pytorch.GEMM_ENV, "mkl")
    with pytest.raises(ValueError, match=r"KERAS_GPT_TORCH_GEMM='mkl': "
                                         r"expected one of auto, onednn, "
                                         r"torch"):
        pytorch.cpu_gemm()


def test_torch_loss_gradient_backs_up_once():
    """PyTorch writes the loss gradient over the saved log-probabilities:
    a second backward through the same graph raises instead of returning
    a wrong gradient."""
    if keras.backend.backend() != "torch":
        pytest.skip("PyTorch's own loss function (keras_gpt.backend.pytorch)")
    import torch

    from keras_gpt.backend import pytorch

    logits = torch.randn(4, 7, requires_grad=True)
    targets = torch.tensor([0, 3, 6, 2])
    loss = pytorch.cross_entropy(logits, targets).sum()
    loss.backward(retain_graph=True)
    expected = torch.softmax(logits.detach(), -1) - torch.eye(7)[targets]
    torch.testing.assert_close(logits.grad, expected)
    with pytest.raises(RuntimeError, match="modified by an inplace "
                       "operation"):
        loss.backward()
