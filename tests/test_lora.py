"""GPT.enable_lora / save_lora_weights / load_lora_weights / merge_lora."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt.training import compile_for_pretraining
from tests.conftest import to_numpy

CONFIG = GPTConfig(vocab_size=97, context_length=16, d_model=32, n_layers=2,
                   n_heads=2)
UNTIED = GPTConfig(vocab_size=97, context_length=16, d_model=32, n_layers=2,
                   n_heads=2, tie_embeddings=False, d_mlp=48)
IDS = np.random.default_rng(0).integers(0, 97, (2, 12)).astype("int32")
ALL = "qkv,out,up,down,unembedding"


def _data(n=16, seed=1):
    ids = np.random.default_rng(seed).integers(0, 97, (n, 17))
    return ids[:, :-1].astype("int32"), ids[:, 1:].astype("int32")


def _perturb(model, seed=0):
    """Random B factors: the adapted model differs from its base."""
    rng = np.random.default_rng(seed)
    for layer in model._lora_layers(model.lora_targets).values():
        b = layer.lora_kernel_b
        b.assign(0.2 * rng.standard_normal(b.shape).astype("float32"))


def test_trainable_count_is_the_formula_and_the_rest_is_frozen():
    model = GPT(UNTIED)
    c = UNTIED
    model.enable_lora(4, targets=ALL)
    pairs = [(c.d_model, 3 * c.d_model), (c.d_model, c.d_model),
             (c.d_model, c.d_mlp), (c.d_mlp, c.d_model)]
    expected = 4 * (c.n_layers * sum(a + b for a, b in pairs)
                    + c.d_model + c.vocab_size)
    trainable, total = model.lora_parameter_counts()
    assert trainable == expected
    assert total == GPT(UNTIED).count_params() + expected
    assert {v.path.rsplit("/", 1)[1] for v in model.trainable_variables} \
        == {"lora_kernel_a", "lora_kernel_b"}
    default = GPT(CONFIG)
    default.enable_lora(8)
    assert default.lora_targets == ("qkv",) and default.lora_alpha == 8
    assert default.lora_parameter_counts()[0] == 2 * 8 * (32 + 96)


def test_training_moves_only_the_factors_and_merging_keeps_the_logits():
    model = GPT(UNTIED)
    base = to_numpy(model(IDS))
    model.enable_lora(4, alpha=8, targets=ALL)
    np.testing.assert_array_equal(to_numpy(model(IDS)), base)  # B = 0
    frozen = {v.path: to_numpy(v) for v in model.weights
              if "lora" not in v.path}
    # Compiled on JAX only: its eager steps cost more than compiling them,
    # TensorFlow's and PyTorch's less.
    compile_for_pretraining(model, total_steps=20, learning_rate=1e-2,
                            jit_compile=keras.backend.backend() == "jax")
    x, y = _data()
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    for v in model.weights:
        if "lora" not in v.path:  # base kernels bit-identical
            np.testing.assert_array_equal(to_numpy(v), frozen[v.path],
                                          err_msg=v.path)
    adapted = to_numpy(model(IDS))
    assert np.abs(adapted - base).max() > 1e-3
    model.merge_lora()
    assert model.lora_rank is None
    assert not [v for v in model.weights if "lora" in v.path]
    np.testing.assert_allclose(to_numpy(model(IDS)), adapted, atol=1e-5)
    assert model.lora_parameter_counts()[0] == model.count_params()


@pytest.fixture
def adapted(tmp_path):
    """A base model saved whole and an adapter saved alone."""
    base = GPT(CONFIG)
    base.save(tmp_path / "base.keras")
    model = keras.models.load_model(tmp_path / "base.keras")
    model.enable_lora(4, alpha=6, targets="qkv,out,up")
    _perturb(model)
    model.save_lora_weights(tmp_path / "adapter.safetensors")
    model.save(tmp_path / "adapted.keras")
    return model, tmp_path


def test_load_model_and_adapter_file_give_the_adapted_logits(adapted):
    model, folder = adapted
    expected = to_numpy(model(IDS))
    reloaded = keras.models.load_model(folder / "adapted.keras")
    assert (reloaded.lora_rank, reloaded.lora_alpha, reloaded.lora_targets) \
        == (4, 6, ("qkv", "out", "up"))
    np.testing.assert_array_equal(to_numpy(reloaded(IDS)), expected)
    fresh = keras.models.load_model(folder / "base.keras")
    fresh.load_lora_weights(folder / "adapter.safetensors")  # enables LoRA
    np.testing.assert_array_equal(to_numpy(fresh(IDS)), expected)
    from safetensors import safe_open

    with safe_open(str(folder / "adapter.safetensors"), "numpy") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert "block_1/attention/qkv/lora_kernel_a" in keys  # by layer path
    assert (meta["rank"], meta["targets"]) == ("4", "qkv,out,up")


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="runs once, in the jax pass: saves under jax, loads under torch "
           "in a subprocess (a process per backend is costly)")
def test_adapter_saved_here_loads_under_another_backend(adapted):
    model, folder = adapted
    np.save(folder / "ids.npy", IDS)
    np.save(folder / "expected.npy", to_numpy(model(IDS)))
    code = (
        "import sys, numpy as np, keras, keras_gpt\n"
        "d = sys.argv[1]\n"
        "m = keras.models.load_model(d + '/base.keras')\n"
        "m.load_lora_weights(d + '/adapter.safetensors')\n"
        "out = keras.ops.convert_to_numpy(m(np.load(d + '/ids.npy')))\n"
        "np.testing.assert_allclose(out, np.load(d + '/expected.npy'),"
        " atol=1e-5)\n"
        "print('same logits under', keras.backend.backend())\n")
    other = "torch"
    env = dict(os.environ, KERAS_BACKEND=other, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code, str(folder)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"same logits under {other}" in done.stdout


@pytest.mark.backend_independent
def test_bad_lora_input_is_refused_clearly(adapted):
    model, folder = adapted
    with pytest.raises(ValueError, match="already enabled"):
        model.enable_lora(2)
    fresh = GPT(CONFIG)
    for rank, message in ((0, r"rank 0 is out of range.*\[1, d_model=32\]"),
                          (33, r"rank 33 is out of range"),
                          (2.5, r"rank 2.5 is out of range")):
        with pytest.raises(ValueError, match=message):
            fresh.enable_lora(rank)
    with pytest.raises(ValueError, match="alpha -1 must be a number > 0"):
        fresh.enable_lora(4, alpha=-1)
    with pytest.raises(ValueError, match=r"Unknown LoRA targets \['mlp'\]"):
        fresh.enable_lora(4, targets="qkv,mlp")
    with pytest.raises(ValueError, match="needs an untied W_U"):
        fresh.enable_lora(4, targets="unembedding")
    with pytest.raises(ValueError, match="no LoRA to merge"):
        fresh.merge_lora()
    with pytest.raises(ValueError, match="enable_lora"):
        fresh.save_lora_weights(folder / "none.safetensors")
    # Refused calls change nothing.
    assert fresh.lora_rank is None
    assert len(fresh.trainable_weights) == len(fresh.weights)
    # An adapter for another model: other depth, other rank or targets.
    deeper = GPT(GPTConfig(vocab_size=97, context_length=16, d_model=32,
                           n_layers=3, n_heads=2))
    with pytest.raises(ValueError, match=r"does not fit this model: missing "
                       r"\['block_2/.*2 layers.*this one has 3"):
        deeper.load_lora_weights(folder / "adapter.safetensors")
    assert deeper.lora_rank is None  # left as it was
    wider = GPT(GPTConfig(vocab_size=97, context_length=16, d_model=48,
                          n_layers=2, n_heads=2))
    with pytest.raises(ValueError, match=r"shape .* this model's"):
        wider.load_lora_weights(folder / "adapter.safetensors")
    other = GPT(CONFIG)
    other.enable_lora(2, targets="qkv,out,up")
    with pytest.raises(ValueError, match="holds rank 4, alpha 6"):
        other.load_lora_weights(folder / "adapter.safetensors")
    with pytest.raises(FileNotFoundError, match="No LoRA file"):
        other.load_lora_weights(folder / "missing.safetensors")
    (folder / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        GPT(CONFIG).load_lora_weights(folder / "bad.safetensors")
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2, np.float32)}, str(folder / "x.safetensors"))
    with pytest.raises(ValueError, match="not a keras_gpt LoRA file"):
        GPT(CONFIG).load_lora_weights(folder / "x.safetensors")
