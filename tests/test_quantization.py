"""GPT.quantize("int8"): the weights, the logits, saving, decoding, and a
LoRA on an int8 base (the KerasHub #1705 sequence)."""

import keras
import numpy as np
import pytest

import keras_gpt
from keras_gpt import GPT, GPTConfig
from keras_gpt.training import compile_for_pretraining
from tests.conftest import to_numpy

CONFIG = GPTConfig(vocab_size=97, context_length=24, d_model=32, n_layers=2,
                   n_heads=2)
UNTIED = GPTConfig(vocab_size=97, context_length=24, d_model=32, n_layers=2,
                   n_heads=2, tie_embeddings=False)
IDS = np.random.default_rng(0).integers(0, 97, (2, 12)).astype("int32")


def _quantized_copy(model):
    copy = GPT.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    copy.quantize("int8")
    return copy


def _greedy_reference(model, prompt, steps):
    """Greedy decoding by full forward passes (no cache, no compiled loop).
    Every pass reads one (1, context) array, zero-padded: a causal model's
    logits at a position do not depend on what follows it, and one shape
    keeps JAX's eager calls from compiling each op again per length."""
    row = list(prompt)
    padded = np.zeros((1, model.config.context_length), "int32")
    for _ in range(steps):
        padded[0, :len(row)] = row
        logits = to_numpy(model(padded))[0, len(row) - 1]
        row.append(int(logits.argmax()))
    return row[len(prompt):]


def test_int8_weights_scales_and_logits():
    config = UNTIED  # W_E and W_U both quantized; tied W_U: the tests below
    model = GPT(config)
    floats = {v.path.split("/", 1)[1]: to_numpy(v) for v in model.weights}
    quantized = _quantized_copy(model)
    by_path = {v.path.split("/", 1)[1]: v for v in quantized.weights}
    names = ["token_embedding/embeddings", "block_0/attention/qkv/kernel",
             "block_1/attention/out/kernel", "block_0/mlp/up/kernel",
             "block_1/mlp/down/kernel", "unembedding/kernel"]
    for name in names:
        q = by_path[name]
        assert keras.backend.standardize_dtype(q.dtype) == "int8", name
        scale = to_numpy(by_path[name + "_scale" if "embed" in name
                                 else name.rsplit("/", 1)[0] + "/kernel_scale"])
        axis = -1 if name.startswith("token") else 0  # per token / channel
        w = floats[name]
        dequantized = to_numpy(q).astype("float32") / np.expand_dims(
            scale, axis)
        bound = np.abs(w).max(axis=axis, keepdims=True) / 127 / 2
        assert np.all(np.abs(dequantized - w) <= bound * 1.001), name
    assert quantized.quantization_modes() == {"int8"}
    f, q = to_numpy(model(IDS)), to_numpy(quantized(IDS))
    relative = np.linalg.norm(q - f) / np.linalg.norm(f)
    assert relative < 0.05, relative  # wrong scales give ~1 or more
    assert relative > 0  # the activations are quantized too


def test_quantized_model_saves_loads_and_decodes(tmp_path):
    model = _quantized_copy(GPT(CONFIG))
    before = to_numpy(model(IDS))
    model.save(tmp_path / "int8.keras")
    loaded = keras.models.load_model(tmp_path / "int8.keras")
    assert loaded.quantization_modes() == {"int8"}
    np.testing.assert_array_equal(to_numpy(loaded(IDS)), before)
    prompts = [[5, 6, 7], [8]]
    out = keras_gpt.generate(loaded, prompts, max_new_tokens=6,
                             temperature=0, eot_id=None)
    assert out == [_greedy_reference(loaded, p, 6) for p in prompts]


def test_lora_on_an_int8_base_saves_reloads_resumes_and_merges(tmp_path):
    """KerasHub #1705: quantize, enable_lora, save, load_model (an
    InvalidArgumentError there); then training goes on from the reload."""
    model = _quantized_copy(GPT(CONFIG))
    model.enable_lora(4, targets="qkv,out,up,down")
    assert model.lora_parameter_counts()[0] == 2 * 4 * (
        (32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
    # Compiled on JAX only: its eager steps cost more than compiling them,
    # TensorFlow's and PyTorch's less.
    compile_for_pretraining(model, total_steps=40, learning_rate=1e-2,
                            jit_compile=keras.backend.backend() == "jax")
    ids = np.random.default_rng(1).integers(0, 97, (16, 17)).astype("int32")
    x, y = ids[:, :-1], ids[:, 1:]
    first = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    kernels = {v.path: to_numpy(v) for v in model.weights
               if "lora" not in v.path}
    model.save(tmp_path / "qlora.keras")
    reloaded = keras.models.load_model(tmp_path / "qlora.keras")
    np.testing.assert_array_equal(to_numpy(reloaded(IDS)),
                                  to_numpy(model(IDS)))
    np.testing.assert_array_equal(
        to_numpy(reloaded.optimizer.iterations), 4)
    second = reloaded.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert second.history["loss"][-1] < first.history["loss"][0]
    for v in reloaded.weights:  # the int8 base never moved
        if "lora" not in v.path:
            np.testing.assert_array_equal(to_numpy(v), kernels[v.path])
    adapted = to_numpy(reloaded(IDS))
    reloaded.merge_lora()  # requantizes the summed kernels
    merged = to_numpy(reloaded(IDS))
    assert reloaded.quantization_modes() == {"int8"}
    assert np.linalg.norm(merged - adapted) / np.linalg.norm(adapted) < 0.05


@pytest.mark.backend_independent
def test_bad_quantize_calls_are_refused():
    model = GPT(CONFIG)
    with pytest.raises(ValueError, match="'int4' is not supported.*int8"):
        model.quantize("int4")
    with pytest.raises(ValueError, match="Invalid quantization mode"):
        model.quantize("int3")
    from keras.quantizers import AbsMaxQuantizer, Int8QuantizationConfig

    with pytest.raises(ValueError, match="takes no config"):
        model.quantize("int8", config=Int8QuantizationConfig(
            activation_quantizer=None))
    model.enable_lora(2)
    with pytest.raises(ValueError, match="merge_lora\\(\\) first"):
        model.quantize("int8")
    model.merge_lora()
    model.quantize("int8", config=Int8QuantizationConfig(
        activation_quantizer=AbsMaxQuantizer()))  # Keras' default: fine
    with pytest.raises(ValueError, match="already quantized \\(int8\\)"):
        model.quantize("int8")
