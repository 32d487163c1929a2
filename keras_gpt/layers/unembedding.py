"""The unembedding W_U: final vectors -> one logit per vocabulary token."""

import keras
from keras import ops

from keras_gpt import backend as backend_lib
from keras_gpt.layers.rows import on_rows


@keras.saving.register_keras_serializable(package="keras_gpt")
class Unembedding(keras.layers.Layer):
    """Logits = x @ W_U, with W_U its own (d_model x vocab) matrix or W_E^T.

    Args:
        vocab_size: Number of logits per position.
        tied: If True the layer holds no weights: pass W_E as
            `embeddings` and W_U = W_E^T (GPT-2).
        kernel_initializer: Initializer of an untied W_U.

    Call arguments:
        inputs: Final residual stream (batch, seq, d_model).
        embeddings: W_E (vocab_size, d_model), required when tied.

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
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.02))

    def build(self, input_shape):
        if not self.tied:
            self.kernel = self.add_weight(
                name="kernel", shape=(input_shape[-1], self.vocab_size),
                initializer=self.kernel_initializer)

    def call(self, inputs, embeddings=None):
        if self.tied:
            if embeddings is None:
                raise ValueError("A tied Unembedding needs `embeddings` (W_E).")
            kernel = ops.transpose(ops.cast(embeddings, inputs.dtype))
        else:
            kernel = self.kernel
        logits = on_rows(lambda rows: backend_lib.linear(rows, kernel),
                         inputs)
        return ops.cast(logits, "float32")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.vocab_size)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "tied": self.tied,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer)}
