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
  PyTorch's decoder (`keras_gpt.generation.torch_decoder`) does so only
  where VNNI or AMX makes it fast; elsewhere it is weight-only int8 (the
  rows not quantized): up to 4 rows, bfloat16 rows times the int8 kernel
  (`pytorch.weight_only_int8_matmul`), beyond, float32 rows times the
  kernel dequantized to float32 and packed for oneDNN.
- JAX and TensorFlow: `ops.matmul` of the int8 rows and kernel (int32,
  as Keras' int8 `Dense`), in a `custom_gradient` with the
  straight-through gradient; one row is padded to two (`_linear_xla`).
"""

import contextlib

import keras
import numpy as np

from keras_gpt.backend import pytorch

# Keras' range for int8 (symmetric; -128 unused).
INT8_MAX = 127.0

# id(kernel variable) -> its (out, in) copy, while `kernels_transposed`.
_TRANSPOSED = {}


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


def linear(x, q_kernel, kernel_scale, bias=None, transposed=False):
    """`x @ kernel + bias` for a quantized kernel, in Keras' int8 arithmetic.

    Args:
        x: (rows, in) float activations; each row is quantized on its own.
        q_kernel: (in, out) int8 kernel, or (out, in) if `transposed` (an
            int8 W_E as the tied W_U^T: multiplied as it is stored).
        kernel_scale: (out,) float scales (`kernel ~= q_kernel / scale`).
        bias: Optional (out,) float bias.
        transposed: Whether `q_kernel` is stored (out, in).

    Returns:
        (rows, out) in `x`'s dtype. Rows never interact: a row's result does
        not depend on the others.
    """
    from keras import ops

    copy = None if transposed else _TRANSPOSED.get(id(q_kernel))
    if copy is not None:
        q_kernel, transposed = copy, True
    q_kernel = ops.convert_to_tensor(q_kernel)
    kernel_scale = ops.cast(kernel_scale, "float32")
    if keras.backend.backend() == "torch":
        if transposed:
            q_kernel = ops.transpose(q_kernel)
        y = pytorch.int8_linear(x, q_kernel, kernel_scale)
    else:
        y = _linear_xla(x, q_kernel, kernel_scale, transposed)
    y = ops.cast(y, x.dtype)
    return y if bias is None else y + ops.cast(bias, y.dtype)


@contextlib.contextmanager
def kernels_transposed(kernels):
    """Within, `linear` of these (in, out) int8 kernel variables reads an
    (out, in) copy made here, once.

    For JAX's compiled decoding loop: made outside the loop, the copy is
    loop-invariant, and XLA's library product reads an (out, in) int8
    matrix faster than an (in, out) one (the 25 products of a bench-model
    step: 1.15 against 1.38 ms, `tools/int8_products.py`). Written inside
    the loop, XLA would fold the transpose into the product instead.
    Elsewhere this does nothing: TensorFlow's XLA widened such copies to
    int32 outside its library product, and decoded several times slower.
    """
    from keras import ops

    if keras.backend.backend() != "jax":
        yield
        return
    saved = dict(_TRANSPOSED)
    _TRANSPOSED.update({id(k): ops.transpose(ops.convert_to_tensor(k))
                        for k in kernels})
    try:
        yield
    finally:
        _TRANSPOSED.clear()
        _TRANSPOSED.update(saved)


def _linear_xla(x, q_kernel, kernel_scale, transposed):
    """Per-row quantized `x` times `q_kernel` as an int8 x int8 -> int32
    product (exact), with Keras' straight-through input gradient.

    XLA on CPU runs integer products of two or more rows through its
    library contraction, but a single row through its own loops: the 25
    products of a bench-model decoding step took 24 ms for one row, 1.4 ms
    for two, against 2.0 ms for float32's GEMV (`tools/int8_products.py`,
    AVX2 EPYC). So one row, as in batch-1 decoding, is padded with a zero
    row.
    A transposed kernel is contracted on its second axis, not transposed:
    inside a decoding loop XLA would hoist the transpose and widen it to
    int32 outside its library product.
    """
    from keras import ops

    @ops.custom_gradient
    def product(x32, q_kernel, kernel_scale):
        amax = ops.max(ops.abs(x32), axis=-1, keepdims=True)
        row_scale = INT8_MAX / (amax + keras.backend.epsilon())
        q = ops.cast(ops.clip(ops.round(x32 * row_scale), -INT8_MAX,
                              INT8_MAX), "int8")
        single = q.shape[0] == 1
        if single:
            q = ops.pad(q, [[0, 1], [0, 0]])
        y = ops.cast(_integer_product(q, q_kernel, transposed), "float32")
        if single:
            y = y[:1]

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            if transposed:
                kernel = dequantize(q_kernel, kernel_scale, axis=-1)
                return ops.matmul(upstream, kernel), None, None
            kernel = dequantize(q_kernel, kernel_scale)
            return ops.matmul(upstream, ops.transpose(kernel)), None, None

        return y / (row_scale * kernel_scale), grad

    return product(ops.cast(x, "float32"), q_kernel, kernel_scale)


def _integer_product(q, q_kernel, transposed):
    """int32 `q @ q_kernel` (or `q @ q_kernel^T`) of int8 operands, the
    transposed kernel read as stored: `tf.linalg.matmul(transpose_b=True)`
    on TensorFlow (Keras' einsum there transposes first), a contraction of
    the second axes on JAX."""
    from keras import ops

    if not transposed:
        return ops.matmul(q, q_kernel)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.linalg.matmul(q, q_kernel, transpose_b=True,
                                output_type=tf.int32)
    return ops.einsum("ri,oi->ro", q, q_kernel)
