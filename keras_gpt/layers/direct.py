"""Layers called without Keras' per-call bookkeeping where it does nothing.

Every layer inside `GPT` (ours, and the LayerNormalization and Dropout
below) is a `DirectCall`: on PyTorch, once built, calling it runs its
`call` directly when `keras_gpt.backend.direct_call_applies` finds that
Keras' `Layer.__call__` would change nothing (plain tensors of the right
dtype, `training` given, no masks, mixed precision, hooks...); otherwise,
and on JAX and TensorFlow, Keras' `__call__` as usual. The result is the
same either way (tests/layers/test_direct.py); on PyTorch the training
step of nanoGPT's baby config is 1.069x faster (`tools/ab_speed.py
torch-direct`).
"""

import keras

from keras_gpt.backend import direct_call_applies


class DirectCall:
    """Mixin placed before a Keras layer class in its bases."""

    def __call__(self, *args, **kwargs):
        if direct_call_applies(self, args, kwargs):
            if getattr(self, "quantization_mode", None) is not None:
                return self.quantized_call(*args, **kwargs)
            return self.call(*args, **kwargs)
        return super().__call__(*args, **kwargs)


@keras.saving.register_keras_serializable(package="keras_gpt")
class LayerNormalization(DirectCall, keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization`, a `DirectCall`."""


@keras.saving.register_keras_serializable(package="keras_gpt")
class Dropout(DirectCall, keras.layers.Dropout):
    """`keras.layers.Dropout`, a `DirectCall`."""
