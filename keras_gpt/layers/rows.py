"""Position-wise products on a (rows, features) matrix.

A Dense kernel applied to a (batch, seq, d) tensor is one matrix product,
but its gradient contracts over two axes (batch and seq), which XLA on CPU
does not lower to a single GEMM: measured on JAX, the MLP's backward pass
ran 1.6x slower than the same product on (batch * seq, d) rows. Reshaping
is free, so every position-wise product goes through `on_rows`, and
through `keras_gpt.backend.linear` (oneDNN on PyTorch CPU).
"""

import keras
from keras import ops

from keras_gpt import backend as backend_lib
from keras_gpt.backend import int8
from keras_gpt.layers.adapters import (lora_delta, remove_lora_factors,
                                       with_lora)
from keras_gpt.layers.direct import DirectCall


def on_rows(fn, x):
    """`fn` applied to `x` flattened to 2-D rows, then unflattened.

    Args:
        fn: Maps a (rows, features) tensor to (rows, out_features).
        x: A tensor (..., features).

    Returns:
        `fn`'s output reshaped to (..., out_features).
    """
    shape = ops.shape(x)
    if len(shape) == 2:  # already rows (an MLP's inner products)
        return fn(x)
    y = fn(ops.reshape(x, (-1, shape[-1])))
    return ops.reshape(y, (*shape[:-1], ops.shape(y)[-1]))


@keras.saving.register_keras_serializable(package="keras_gpt")
class Projection(DirectCall, keras.layers.Dense):
    """A `keras.layers.Dense` without activation, computed on 2-D rows.

    Same weights (`kernel`, `bias`) and arguments as Dense; the product is
    `keras_gpt.backend.linear`. Dense's LoRA and int8 modes work as in
    Keras (`enable_lora(rank, lora_alpha)`: float32 factors `lora_kernel_a`
    (in, rank) and `lora_kernel_b` (rank, out), zeros, base kernel frozen,
    output + (alpha / rank) * x A B; `quantize("int8")`: int8 kernel and
    per-output-channel `kernel_scale`, rows quantized on the fly, see
    `keras_gpt.backend.int8`), with two differences that a training run
    needs: the low-rank term is computed as (x A) B, never as a merged
    kernel, and saving keeps the base kernel and the factors apart (Keras
    saves the merged kernel and zeroes the factors on load, which loses a
    LoRA run's state). `merge_lora()` folds the factors in for good.

    Example:

    ```python
    Projection(16, name="up")(np.ones((2, 3, 8))).shape  # (2, 3, 16)
    ```
    """

    def __init__(self, units, **kwargs):
        if kwargs.get("activation") is not None:
            raise ValueError("Projection has no activation; apply it after.")
        super().__init__(units, **kwargs)

    def call(self, inputs):
        return on_rows(lambda rows: with_lora(self, rows, backend_lib.linear(
            rows, self._kernel, self.bias)), inputs)

    def _int8_call(self, inputs):
        return on_rows(lambda rows: with_lora(self, rows, int8.linear(
            rows, self._kernel, self.kernel_scale, self.bias)), inputs)

    def quantize(self, mode=None, type_check=True, config=None):
        if self.lora_enabled:
            raise ValueError(f"{self.name}: quantize before enable_lora (a "
                             "LoRA on a quantized base), or merge_lora() "
                             "first.")
        if mode != "int8":
            raise self._quantization_mode_error(mode)
        super().quantize(mode, type_check=False, config=config)

    def merge_lora(self):
        """Folds (alpha / rank) A B into the kernel and removes A and B.

        A float kernel becomes kernel + delta exactly as the adapted layer
        computes it; an int8 kernel is dequantized, summed and quantized
        again (new per-channel scales).
        """
        if not self.lora_enabled:
            raise ValueError(f"{self.name}: no LoRA to merge.")
        delta = lora_delta(self)
        if self.quantization_mode == "int8":
            q, scale = int8.quantize_weight(int8.dequantize(
                self._kernel, self.kernel_scale) + delta)
            self._kernel.assign(q)
            self.kernel_scale.assign(scale)
        else:
            self._kernel.assign(self._kernel + ops.cast(delta,
                                                        self._kernel.dtype))
            self._kernel.trainable = True
        remove_lora_factors(self)

    def _own_variables(self):
        names = ["_kernel", "bias", "kernel_scale", "lora_kernel_a",
                 "lora_kernel_b"]
        return [getattr(self, n) for n in names
                if getattr(self, n, None) is not None]

    def save_own_variables(self, store):
        # Dense's order (kernel, bias, kernel_scale), then the factors.
        for i, variable in enumerate(self._own_variables()):
            store[str(i)] = variable

    def load_own_variables(self, store):
        variables = self._own_variables()
        if len(store.keys()) != len(variables):
            raise ValueError(
                f"Layer {self.path!r} expects {len(variables)} variables "
                "(kernel, bias, int8 scales, LoRA factors), but the file "
                f"holds {len(store.keys())}: it was saved from a model of "
                "another kind.")
        for i, variable in enumerate(variables):
            variable.assign(store[str(i)])
