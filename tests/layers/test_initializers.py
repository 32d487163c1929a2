"""`keras_gpt.layers.initializers.HostRandomNormal`: Keras' RandomNormal,
drawn by NumPy on JAX (no program compiled per shape), Keras' own draw on
TensorFlow and PyTorch."""

import logging

import keras
import numpy as np
import pytest

from keras_gpt.config import GPTConfig
from keras_gpt.layers import HostRandomNormal
from keras_gpt.model import GPT

CONFIG = GPTConfig(n_layers=2, n_heads=2, d_model=16, vocab_size=40,
                   context_length=8)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_values_on_each_backend():
    init = HostRandomNormal(mean=1.0, stddev=0.5, seed=7)
    values = _numpy(init((300, 200)))
    if keras.backend.backend() == "jax":
        expected = (np.random.default_rng(7).standard_normal(
            (300, 200), dtype=np.float32) * np.float32(0.5) + np.float32(1.0))
    else:
        expected = _numpy(keras.initializers.RandomNormal(
            mean=1.0, stddev=0.5, seed=7)((300, 200)))
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6)
    assert values.dtype == np.float32
    assert abs(values.mean() - 1.0) < 0.01 and abs(values.std() - 0.5) < 0.01
    # Keras' semantics: an integer seed gives the same values every call.
    np.testing.assert_array_equal(_numpy(init((300, 200))), values)
    assert not np.allclose(_numpy(HostRandomNormal(seed=8)((4, 4))),
                           _numpy(HostRandomNormal(seed=7)((4, 4))))
    # Serializable by name, like Keras' own.
    again = keras.initializers.get(keras.initializers.serialize(init))
    assert isinstance(again, HostRandomNormal)
    np.testing.assert_array_equal(_numpy(again((300, 200))), values)


def test_gpt_weights_follow_keras_seed():
    def weights():
        keras.utils.set_random_seed(3)
        return [_numpy(v) for v in GPT(CONFIG).weights]

    first, second = weights(), weights()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    keras.utils.set_random_seed(4)
    other = _numpy(GPT(CONFIG).weights[0])
    assert not np.allclose(other, first[0])
    # Each matrix draws its own values (no shared seed), at GPT-2's scale.
    kernels = [w for w in first if w.shape == (16, 16)]
    assert len(kernels) >= 2 and not np.allclose(kernels[0], kernels[1])
    assert 0.01 < first[0].std() < 0.03


def test_other_dtypes_and_seed_generators():
    half = HostRandomNormal(stddev=2.0, seed=3)((400, 50), dtype="bfloat16")
    assert keras.backend.standardize_dtype(half.dtype) == "bfloat16"
    assert abs(_numpy(keras.ops.cast(half, "float32")).std() - 2.0) < 0.05
    if keras.backend.backend() != "torch":  # Keras-on-torch: float32 at most
        wide = HostRandomNormal(stddev=2.0, seed=3)((400, 50),
                                                    dtype="float64")
        assert abs(_numpy(wide).std() - 2.0) < 0.05
    # A SeedGenerator seed (new values each call) takes RandomNormal's path.
    ours = HostRandomNormal(seed=keras.random.SeedGenerator(5))((6, 6))
    keras_own = keras.initializers.RandomNormal(
        seed=keras.random.SeedGenerator(5))((6, 6))
    np.testing.assert_array_equal(_numpy(ours), _numpy(keras_own))


def test_inside_a_traced_function_keras_draws():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        trace = jax.jit
    elif backend == "tensorflow":
        import tensorflow as tf

        trace = tf.function
    else:
        pytest.skip("PyTorch runs Keras' initializers eagerly: no trace")
    ours = trace(lambda: HostRandomNormal(stddev=0.5, seed=3)((5, 6)))()
    keras_own = keras.initializers.RandomNormal(stddev=0.5, seed=3)((5, 6))
    np.testing.assert_allclose(_numpy(ours), _numpy(keras_own), rtol=1e-6)


class _Compiles(logging.Handler):
    def __init__(self):
        super().__init__()
        self.names = []

    def emit(self, record):
        # Logged when a program is lowered (before any compilation cache).
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split()[1])


def test_building_a_gpt_compiles_no_random_program_on_jax():
    if keras.backend.backend() != "jax":
        pytest.skip("compiled random draws are JAX's: TensorFlow and PyTorch "
                    "draw eagerly without compiling")
    import jax

    handler, logger = _Compiles(), logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles():
            # Shapes no other test draws (a program compiled before in this
            # process would not be lowered again).
            GPT(GPTConfig(n_layers=1, n_heads=2, d_model=24, vocab_size=44,
                          context_length=12))
            built = list(handler.names)
            keras.initializers.RandomNormal(seed=1)((13, 17))
    finally:
        logger.removeHandler(handler)
    # The check sees Keras' own draw compile a program ...
    assert any("normal" in name for name in handler.names[len(built):]), (
        handler.names)
    # ... and none while the GPT drew its weights.
    assert not any("normal" in name for name in built), built
