"""int8 products, as Keras' `quantize("int8")` defines them.

Weights: per output channel, `q = round(w * scale)` in [-127, 127] with
`scale = 127 / max|w|` over the channel's inputs (`keras.quantizers.
abs_max_quantize`), so `w ~= q / scale`. Activations: quantized the same way
per row, on the fly. The product of the integers is exact; dividing by both
scales gives the float result. That is Keras' `Dense` int8 mode (W8A8); its
gradient with respect to the input is the straight-through one, the
product with the dequantized kernel, so a LoRA on a quantized base trains.

Where the integers are multiplied:

- PyTorch on CPU: `torch._int_mm` (int8 x int8 -> int32, oneDNN; its
  batch-1 products read a quarter of float32's bytes), in a torch autograd
  Function with the straight-through gradient (`pytorch.int8_linear`).
- JAX and TensorFlow: as float32 products of the integer values (exact:
  partial sums stay below 2**24 for these widths). XLA on CPU has no fast
  int8 or bfloat16 product (its own loops ran 25x slower than its float32
  GEMV, `tools/int8_products.py`); inside a compiled decoding loop the cast
  of the int8 kernel is loop-invariant and XLA hoists it, so int8 decoding
  there runs at float32's speed while the stored weights stay int8.
"""

import keras
import numpy as np

from keras_gpt.backend import pytorch

# Keras' range for int8 (symmetric; -128 unused).
INT8_MAX = 127.0


def quantize_weight(kernel, axis=0):
    """`(q, scale)`: int8 `q` and float32 `scale` with `kernel ~= q / scale`.

    Args:
        kernel: A float array or variable.
        axis: The axis reduced for each scale: 0 for a (in, out) kernel
            (one scale per output channel), -1 for an embedding table (one
            per token).

    Returns:
        NumPy arrays: `q` int8 of `kernel`'s shape, `scale` float32 with
        `axis` removed.
    """
    from keras.quantizers import abs_max_quantize

    q, scale = abs_max_quantize(kernel, axis=axis, to_numpy=True)
    return (np.asarray(keras.ops.convert_to_numpy(q), np.int8),
            np.squeeze(np.asarray(keras.ops.convert_to_numpy(scale),
                                  np.float32), axis=axis))


def dequantize(q, scale, axis=0):
    """`q / scale` as float32 (`scale` broadcast along `axis`)."""
    from keras import ops

    scale = ops.expand_dims(ops.cast(scale, "float32"), axis)
    return ops.divide(ops.cast(q, "float32"), scale)


def linear(x, q_kernel, kernel_scale, bias=None):
    """`x @ kernel + bias` for a quantized kernel, in Keras' int8 arithmetic.

    Args:
        x: (rows, in) float activations; each row is quantized on its own.
        q_kernel: (in, out) int8 kernel.
        kernel_scale: (out,) float scales (`kernel ~= q_kernel / scale`).
        bias: Optional (out,) float bias.

    Returns:
        (rows, out) in `x`'s dtype. Rows never interact: a row's result does
        not depend on the others.
    """
    from keras import ops

    q_kernel = ops.convert_to_tensor(q_kernel)
    kernel_scale = ops.cast(kernel_scale, "float32")
    if keras.backend.backend() == "torch":
        y = pytorch.int8_linear(x, q_kernel, kernel_scale)
    else:
        y = _linear_in_float(x, q_kernel, kernel_scale)
    y = ops.cast(y, x.dtype)
    return y if bias is None else y + ops.cast(bias, y.dtype)


def _linear_in_float(x, q_kernel, kernel_scale):
    """Per-row quantized `x` times `q_kernel`, both as float32 integers.

    The straight-through gradient comes from `stop_gradient`: the forward
    value of `xs + stop_gradient(round(xs) - xs)` is exactly `round(xs)`
    (the difference is exact in float), its gradient is `xs`'s, and the row
    scale is held constant, so d/dx is the dequantized kernel's product.
    """
    from keras import ops

    x32 = ops.cast(x, "float32")
    amax = ops.max(ops.abs(x32), axis=-1, keepdims=True)
    row_scale = ops.stop_gradient(
        INT8_MAX / (amax + keras.backend.epsilon()))
    scaled = x32 * row_scale
    rounded = ops.clip(ops.round(scaled), -INT8_MAX, INT8_MAX)
    xq = scaled + ops.stop_gradient(rounded - scaled)
    y = ops.matmul(xq, ops.cast(q_kernel, "float32"))
    return y / (row_scale * ops.cast(kernel_scale, "float32"))
