"""`keras_gpt.backend.int8.linear`: Keras' W8A8 arithmetic, whichever way the
product runs (one row padded to two, a kernel read transposed, the decoding
loop's transposed copies), and its straight-through input gradient."""

import keras
import numpy as np

from keras_gpt.backend import int8
from tests.conftest import gradients, to_numpy

RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 48)).astype("float32")
W = RNG.normal(size=(48, 20)).astype("float32")
Q, SCALE = int8.quantize_weight(W)


def _linear(x, *args, **kwargs):
    return to_numpy(int8.linear(keras.ops.convert_to_tensor(x), *args,
                                **kwargs))


def _reference(x):
    """Keras' int8 Dense, in NumPy: rows quantized per row, exact integer
    product, divided by both scales."""
    row_scale = 127.0 / (np.abs(x).max(-1, keepdims=True) + 1e-7)
    q = np.clip(np.round(x * row_scale), -127, 127).astype(np.int64)
    return (q @ Q.astype(np.int64)) / (row_scale * SCALE)


def test_rows_one_at_a_time_equal_the_batch_and_keras_arithmetic():
    """One row (padded to two on JAX/TensorFlow) gives the same values as
    the same row inside a batch, and both are Keras' arithmetic."""
    batch = _linear(X, Q, SCALE)
    np.testing.assert_allclose(batch, _reference(X), rtol=1e-6, atol=1e-6)
    for i in range(len(X)):
        one = _linear(X[i:i + 1], Q, SCALE)
        assert one.shape == (1, 20)
        np.testing.assert_array_equal(one, batch[i:i + 1])


def test_a_kernel_read_transposed_gives_the_same_values():
    stored = np.ascontiguousarray(Q.T)  # (out, in), as a tied W_E is kept
    for rows in (X[:1], X):
        np.testing.assert_array_equal(
            _linear(rows, stored, SCALE, transposed=True),
            _linear(rows, Q, SCALE))


def test_kernels_transposed_reads_the_copy_and_gives_the_same_values():
    variable = keras.Variable(Q, dtype="int8", trainable=False)
    plain = _linear(X[:1], variable, SCALE)
    with int8.kernels_transposed([variable]):
        copied = _linear(X[:1], variable, SCALE)
        if keras.backend.backend() == "jax":  # the only backend it copies on
            assert id(variable) in int8._TRANSPOSED
    assert not int8._TRANSPOSED  # gone after the block
    np.testing.assert_array_equal(copied, plain)


def test_input_gradient_is_the_straight_through_one():
    """d/dx of sum(linear(x) * g) is g @ dequantized(kernel)^T, for one row
    and for many, kernel stored either way."""
    dequantized = Q.astype("float32") / SCALE
    for rows in (X[:1], X):
        g = RNG.normal(size=(len(rows), 20)).astype("float32")
        expected = g @ dequantized.T
        for kernel, transposed in ((Q, False), (np.ascontiguousarray(Q.T),
                                                True)):
            def loss(x):
                y = int8.linear(x, keras.ops.convert_to_tensor(kernel),
                                SCALE, transposed=transposed)
                return keras.ops.sum(y * keras.ops.convert_to_tensor(g))

            (grad,) = gradients(loss, [rows])
            np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)
