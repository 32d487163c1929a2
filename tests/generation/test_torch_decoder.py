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


def _dequantized(int8_model, float_weights, x):
    """A float GPT holding `int8_model`'s weights as its int8 values
    (q / scale) and its LoRA factors: the function weight-only int8
    products compute."""
    ref = GPT(int8_model.config)
    ref(x)
    ref.set_weights(float_weights)
    for a, b in zip(int8_model._flatten_layers(), ref._flatten_layers()):
        if getattr(a, "quantization_mode", None) != "int8":
            continue
        if hasattr(b, "embeddings"):  # W_E: a scale per token
            b.embeddings.assign(to_numpy(a.embeddings)
                                / to_numpy(a.embeddings_scale)[:, None])
        else:
            q = a._kernel if hasattr(a, "_kernel") else a.kernel
            b.kernel.assign(to_numpy(q) / to_numpy(a.kernel_scale))
    ref.enable_lora(2)
    factors = [[v for v in model.variables if "lora" in v.path]
               for model in (int8_model, ref)]
    for a, b in zip(*factors):
        assert a.path.split("/")[-2:] == b.path.split("/")[-2:]
        b.assign(a)
    return ref


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="the lean decoder is PyTorch's")
@pytest.mark.parametrize("overrides", [
    dict(), dict(tie_embeddings=False, positions="rotary")])
def test_int8_decoder_paths_match_their_arithmetic(overrides, monkeypatch):
    """The decoder's three int8 product paths, with a LoRA on the quantized
    base. `torch._int_mm` (CPUs with VNNI or AMX) computes Keras' int8
    arithmetic: the quantized model's logits. Elsewhere weight-only int8:
    the logits of a float model holding the int8 values, exactly where
    the kernels are dequantized to float32 (more rows than
    `WEIGHT_ONLY_MAX_ROWS`, or no `_weight_int8pack_mm`), up to bfloat16
    rounding where the product reads the int8 kernel (one row per
    sequence here)."""
    import torch

    from keras_gpt.backend import pytorch

    m = GPT(tiny(**overrides))
    x = np.random.default_rng(2).integers(0, VOCAB, (2, 9))
    float_logits = to_numpy(m(x))
    float_weights = m.get_weights()
    m.quantize("int8")
    m.enable_lora(2)
    b = m.blocks[0].attention.qkv.lora_kernel_b
    b.assign(np.random.default_rng(3).normal(0, 0.1, b.shape))
    full = to_numpy(m(x))
    assert np.abs(full - float_logits).max() > 1e-3  # int8 and the LoRA count
    weight_only = to_numpy(_dequantized(m, float_weights, x)(x))
    assert np.abs(weight_only - full).max() > 1e-4  # rows not quantized
    assert pytorch.weight_only_int8_available()
    for fast, int8_rows in ((True, True), (False, True), (False, False)):
        monkeypatch.setattr(pytorch, "int8_products_are_fast", lambda: fast)
        monkeypatch.setattr(pytorch, "weight_only_int8_available",
                            lambda: int8_rows)
        case = f"fast={fast}, _weight_int8pack_mm={int8_rows}"
        expected = full if fast else weight_only
        decoder = TorchDecoder.for_model(m).refresh()
        assert {layer["qkv"][0] for layer in decoder.layers} == {
            "int8" if fast else "int8w"}
        with torch.inference_mode():
            cache = decoder.init_cache(2, 16)
            ids = torch.tensor(x, dtype=torch.int32)
            np.testing.assert_allclose(  # 10 rows: float32 or _int_mm
                to_numpy(decoder.step(ids[:, :5], cache, 0)),
                expected[:, :5], atol=1e-5, err_msg=case)
            bfloat16 = not fast and int8_rows
            for t in range(5, 9):  # 2 rows
                logits = to_numpy(decoder.step(ids[:, t:t + 1], cache, t))
                error = np.abs(logits[:, 0] - expected[:, t]).max()
                bound = 5e-3 * np.abs(expected).max() if bfloat16 else 1e-5
                assert error <= bound, (case, error, bound)


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="the lean decoder is PyTorch's")
def test_few_row_steps_take_the_faster_products_timed_once(monkeypatch):
    """Steps of up to FEW_ROWS rows run the default products (oneDNN's
    packed float32 kernels, weight-only int8) or `addmm` of the plain
    float32 kernels (int8 ones dequantized), whichever whole steps took
    less time, timed once per row count; `KERAS_GPT_TORCH_GEMM` forces
    one. Both give the model's logits; the int8 model's `addmm` steps
    those of its dequantized weights exactly."""
    import torch

    from keras_gpt.backend import pytorch, timing
    from keras_gpt.generation import torch_decoder

    m = GPT(tiny())
    x = np.random.default_rng(4).integers(0, VOCAB, (2, 9))
    timed, onednn_rows, weight_only_rows = [], [], []

    def faster(name):
        def fake(runs, rounds):
            for run in runs.values():
                run()  # the real steps, on the scratch cache
            timed.append(sorted(runs))
            return {n: 1.0 if n == name else 2.0 for n in runs}
        return fake

    def spy(product, rows):
        def call(x, *args):
            rows.append(x.shape[0])
            return product(x, *args)
        return call

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise",
                        spy(torch.ops.mkldnn._linear_pointwise, onednn_rows))
    monkeypatch.setattr(pytorch, "weight_only_int8_matmul", spy(
        pytorch.weight_only_int8_matmul, weight_only_rows))

    def decode(decoder, expected, bound=1e-5):
        with torch.inference_mode():
            cache = decoder.init_cache(2, 16)
            ids = torch.tensor(x, dtype=torch.int32)
            logits = [to_numpy(decoder.step(ids[:, :5], cache, 0))]
            for t in range(5, 9):  # 2 rows
                logits.append(to_numpy(decoder.step(ids[:, t:t + 1], cache,
                                                    t)))
        error = np.abs(np.concatenate(logits, axis=1) - expected).max()
        assert error <= bound, error

    full = to_numpy(m(x))
    monkeypatch.delenv(pytorch.GEMM_ENV, raising=False)
    for name in ("addmm", "default"):
        monkeypatch.setattr(timing, "interleaved_best", faster(name))
        timed.clear()
        decoder = TorchDecoder.for_model(m).refresh()
        decode(decoder, full)
        onednn_rows.clear()
        decode(decoder, full)
        assert decoder._few_rows == {2: name}
        assert timed == [["addmm", "default"]]  # once, for 2 rows
        # The 10-row prefill always runs on oneDNN; the 2-row steps on it
        # only when it was faster.
        assert set(onednn_rows) == ({10} if name == "addmm" else {10, 2})
    for forced, packed in (("onednn", True), ("torch", False)):
        monkeypatch.setenv(pytorch.GEMM_ENV, forced)
        timed.clear()
        decoder = TorchDecoder.for_model(m).refresh()
        decode(decoder, full)
        assert timed == []
        assert (decoder.layers[0]["up"][0] == "onednn") is packed
    monkeypatch.delenv(pytorch.GEMM_ENV)
    monkeypatch.setattr(torch_decoder, "_MAX_TIMED_BYTES", 0)
    decoder = TorchDecoder.for_model(m).refresh()
    decode(decoder, full)
    assert timed == [] and decoder._few_rows == {2: "default"}
    monkeypatch.undo()

    float_weights = m.get_weights()
    m.quantize("int8")
    m.enable_lora(2)
    dequantized = to_numpy(_dequantized(m, float_weights, x)(x))
    monkeypatch.setattr(pytorch, "int8_products_are_fast", lambda: False)
    monkeypatch.setattr(pytorch, "weight_only_int8_matmul", spy(
        pytorch.weight_only_int8_matmul, weight_only_rows))
    monkeypatch.setattr(timing, "interleaved_best", faster("addmm"))
    decoder = TorchDecoder.for_model(m).refresh()
    weight_only_rows.clear()
    decode(decoder, dequantized)  # exact: float32 products throughout
    assert decoder._few_rows == {2: "addmm"}
    assert set(weight_only_rows) == {2}  # timing the default steps only
    weight_only_rows.clear()
    decode(decoder, dequantized)
    assert weight_only_rows == []
    monkeypatch.setenv(pytorch.GEMM_ENV, "mkl")
    with pytest.raises(ValueError, match=r"KERAS_GPT_TORCH_GEMM='mkl': "
                                         r"expected one of auto, onednn"):
        TorchDecoder.for_model(m).refresh()
