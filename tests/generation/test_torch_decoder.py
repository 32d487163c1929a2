"""TorchDecoder: the lean PyTorch decoding step computes the Keras model's
cached forward pass."""

import keras
import numpy as np
import pytest
from tests.conftest import to_numpy
from tests.generation.test_generation import VOCAB, tiny

from keras_gpt import GPT
from keras_gpt.generation.torch_decoder import TorchDecoder


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="the lean decoder is PyTorch's")
@pytest.mark.parametrize("overrides", [
    dict(), dict(positions="sinusoidal", use_bias=False),
    dict(positions="rotary", tie_embeddings=False, activation="relu")])
def test_torch_lean_decoder_matches_keras(overrides):
    import torch

    m = GPT(tiny(**overrides))
    decoder = TorchDecoder.for_model(m).refresh()
    x = np.random.default_rng(1).integers(0, VOCAB, (2, 9))
    full = to_numpy(m(x))
    with torch.inference_mode():
        cache = decoder.init_cache(2, 16)
        ids = torch.tensor(x, dtype=torch.int32)
        np.testing.assert_allclose(to_numpy(decoder.step(ids[:, :5], cache, 0)),
                                   full[:, :5], atol=1e-5)
        for t in range(5, 9):
            logits = decoder.step(ids[:, t:t + 1], cache, t)
            np.testing.assert_allclose(to_numpy(logits)[:, 0], full[:, t],
                                       atol=1e-5)
    # Weights changed in place are seen by the next call.
    m.blocks[0].mlp.up.kernel.assign(m.blocks[0].mlp.up.kernel * 2.0)
    decoder.refresh()
    with torch.inference_mode():
        cache = decoder.init_cache(2, 16)
        logits = decoder.step(torch.tensor(x, dtype=torch.int32), cache, 0)
    np.testing.assert_allclose(to_numpy(logits), to_numpy(m(x)), atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="the lean decoder is PyTorch's")
@pytest.mark.parametrize("overrides", [
    dict(), dict(tie_embeddings=False, positions="rotary")])
def test_int8_decoder_matches_the_keras_int8_model(overrides, monkeypatch):
    """Both int8 product paths (`torch._int_mm` where VNNI or AMX makes it
    fast, float32 products of the integers elsewhere) compute Keras' int8
    arithmetic: the decoder's logits are the quantized model's, with a
    LoRA on the quantized base too."""
    import torch

    from keras_gpt.backend import pytorch

    m = GPT(tiny(**overrides))
    x = np.random.default_rng(2).integers(0, VOCAB, (2, 9))
    float_logits = to_numpy(m(x))
    m.quantize("int8")
    m.enable_lora(2)
    b = m.blocks[0].attention.qkv.lora_kernel_b
    b.assign(np.random.default_rng(3).normal(0, 0.1, b.shape))
    full = to_numpy(m(x))
    assert np.abs(full - float_logits).max() > 1e-3  # int8 and the LoRA count
    float_product = ("onednn" if pytorch.onednn_linear_available()
                     else "addmm")
    for fast in (True, False):
        monkeypatch.setattr(pytorch, "int8_products_are_fast", lambda: fast)
        decoder = TorchDecoder.for_model(m).refresh()
        kinds = {layer["qkv"][1][0] if isinstance(layer["qkv"][1], tuple)
                 else "torch._int_mm" for layer in decoder.layers}
        assert kinds == {"torch._int_mm" if fast else float_product}
        with torch.inference_mode():
            cache = decoder.init_cache(2, 16)
            ids = torch.tensor(x, dtype=torch.int32)
            np.testing.assert_allclose(
                to_numpy(decoder.step(ids[:, :5], cache, 0)), full[:, :5],
                atol=1e-5, err_msg=f"fast={fast}")
            for t in range(5, 9):
                logits = decoder.step(ids[:, t:t + 1], cache, t)
                np.testing.assert_allclose(to_numpy(logits)[:, 0],
                                           full[:, t], atol=1e-5,
                                           err_msg=f"fast={fast}")
