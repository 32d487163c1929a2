"""The unembedding W_U: final vectors -> one logit per vocabulary token."""

import functools

import keras
from keras import ops

from keras_gpt import backend as backend_lib
from keras_gpt.backend import int8
from keras_gpt.layers.adapters import (add_int8_table, add_lora_factors,
                                       lora_delta, mark_int8,
                                       remove_lora_factors, with_lora)
from keras_gpt.layers.direct import DirectCall
from keras_gpt.layers.initializers import HostRandomNormal
from keras_gpt.layers.rows import on_rows


@keras.saving.register_keras_serializable(package="keras_gpt")
class Unembedding(DirectCall, keras.layers.Layer):
    """Logits = x @ W_U, with W_U its own (d_model x vocab) matrix or W_E^T.

    Args:
        vocab_size: Number of logits per position.
        tied: If True the layer holds no weights: pass W_E as
            `embeddings` and W_U = W_E^T (GPT-2).
        kernel_initializer: Initializer of an untied W_U.

    An untied W_U takes `enable_lora(rank, lora_alpha)` and
    `quantize("int8")` as a `keras.layers.Dense` kernel does (see
    `keras_gpt.layers.adapters`); a tied one follows W_E.

    Call arguments:
        inputs: Final residual stream (batch, seq, d_model).
        embeddings: W_E (vocab_size, d_model), required when tied.
        embeddings_scale: W_E's per-token scales when W_E is int8.

    Returns:
        float32 logits (batch, seq, vocab_size), whatever the compute dtype
        (the softmax and loss want full precision).

    Example:

    ```python
    unembed = Unembedding(vocab_size=100)
    unembed(np.ones((1, 3, 8))).shape  # (1, 3, 100)
    ```
    """

    def __init__(self, vocab_size, tied=False, kernel_initializer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.tied = tied
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or HostRandomNormal(stddev=0.02))

    def build(self, input_shape):
        if self.tied:
            return
        shape = (input_shape[-1], self.vocab_size)
        if self.quantization_mode == "int8":
            self.kernel, self.kernel_scale = add_int8_table(
                self, "kernel", shape, (self.vocab_size,))
        else:
            self.kernel = self.add_weight(
                name="kernel", shape=shape,
                initializer=self.kernel_initializer)

    def call(self, inputs, embeddings=None, embeddings_scale=None):
        if not self.tied:
            product = functools.partial(backend_lib.linear,
                                        kernel=self.kernel)
        elif embeddings is None:
            raise ValueError("A tied Unembedding needs `embeddings` (W_E).")
        elif embeddings_scale is None and keras.backend.standardize_dtype(
                embeddings.dtype) == "int8":
            raise ValueError("An int8 W_E needs its `embeddings_scale`.")
        elif embeddings_scale is not None:  # an int8 W_E
            product = functools.partial(
                int8.linear, q_kernel=embeddings,
                kernel_scale=embeddings_scale, transposed=True)
        else:
            product = functools.partial(backend_lib.linear, kernel=(
                ops.transpose(ops.cast(embeddings, inputs.dtype))))
        logits = on_rows(lambda rows: with_lora(self, rows, product(rows)),
                         inputs)
        return ops.cast(logits, "float32")

    def _int8_call(self, inputs, embeddings=None, embeddings_scale=None):
        logits = on_rows(lambda rows: with_lora(self, rows, int8.linear(
            rows, self.kernel, self.kernel_scale)), inputs)
        return ops.cast(logits, "float32")

    def enable_lora(self, rank, lora_alpha=None):
        """LoRA on an untied W_U, as `keras.layers.Dense.enable_lora`."""
        if self.tied:
            raise ValueError("A tied unembedding is W_E^T: it has no kernel "
                             "of its own for LoRA.")
        add_lora_factors(self, self.kernel, rank, lora_alpha)

    def merge_lora(self):
        """Folds the LoRA delta into W_U and removes the factors."""
        if not getattr(self, "lora_enabled", False):
            raise ValueError(f"{self.name}: no LoRA to merge.")
        delta = lora_delta(self)
        if self.quantization_mode == "int8":
            q, scale = int8.quantize_weight(int8.dequantize(
                self.kernel, self.kernel_scale) + delta)
            self.kernel.assign(q)
            self.kernel_scale.assign(scale)
        else:
            self.kernel.assign(self.kernel + delta)
            self.kernel.trainable = True
        remove_lora_factors(self)

    def quantize(self, mode=None, type_check=True, config=None):
        if mode != "int8":
            raise self._quantization_mode_error(mode)
        if self.tied:  # W_E is quantized by the token embedding
            return
        if getattr(self, "lora_enabled", False):
            raise ValueError(f"{self.name}: quantize before enable_lora, or "
                             "merge_lora() first.")
        q, scale = int8.quantize_weight(self.kernel)
        self._tracker.unlock()
        del self.kernel
        self.kernel, self.kernel_scale = add_int8_table(
            self, "kernel", q.shape, (self.vocab_size,))
        self._tracker.lock()
        self.kernel.assign(q)
        self.kernel_scale.assign(scale)
        mark_int8(self)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.vocab_size)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "tied": self.tied,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer)}
