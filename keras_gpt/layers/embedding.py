"""Token embedding W_E: one learned vector of width d_model per token id."""

import keras
from keras import ops

from keras_gpt.backend import check_token_ids, int8, nan_where_out_of_range
from keras_gpt.layers.adapters import add_int8_table, mark_int8
from keras_gpt.layers.direct import DirectCall
from keras_gpt.layers.initializers import HostRandomNormal


@keras.saving.register_keras_serializable(package="keras_gpt")
class TokenEmbedding(DirectCall, keras.layers.Layer):
    """The embedding matrix W_E (vocab_size x d_model).

    Maps token ids to vectors; `unembed` reuses W_E transposed as W_U when
    the model ties them (GPT-2). `quantize("int8")` stores W_E as int8
    with one float32 scale per token (`embeddings_scale`, Keras'
    `Embedding` int8 layout); looked-up rows are dequantized.

    Args:
        vocab_size: Number of token ids.
        d_model: Width of each embedding vector.
        embeddings_initializer: Initializer of W_E (GPT-2: N(0, 0.02)).

    Example:

    ```python
    layer = TokenEmbedding(vocab_size=100, d_model=8)
    layer(np.array([[1, 2, 3]])).shape  # (1, 3, 8)
    ```
    """

    def __init__(self, vocab_size, d_model, embeddings_initializer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
            or HostRandomNormal(stddev=0.02))

    def build(self, input_shape=None):
        if self.quantization_mode == "int8":
            self._int8_build()
            return
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.vocab_size, self.d_model),
            initializer=self.embeddings_initializer)

    def _int8_build(self):
        self.embeddings, self.embeddings_scale = add_int8_table(
            self, "embeddings", (self.vocab_size, self.d_model),
            (self.vocab_size,))

    def call(self, token_ids):
        token_ids = check_token_ids(token_ids, self.vocab_size)
        return nan_where_out_of_range(
            ops.take(self.embeddings, token_ids, axis=0), token_ids,
            self.vocab_size)

    def _int8_call(self, token_ids):
        token_ids = check_token_ids(token_ids, self.vocab_size)
        rows = ops.cast(ops.take(self.embeddings, token_ids, axis=0),
                        self.compute_dtype)
        scales = ops.take(self.embeddings_scale, token_ids, axis=0)
        rows = rows / ops.cast(scales, self.compute_dtype)[..., None]
        return nan_where_out_of_range(rows, token_ids, self.vocab_size)

    def quantize(self, mode=None, type_check=True, config=None):
        if mode != "int8":
            raise self._quantization_mode_error(mode)
        q, scale = int8.quantize_weight(self.embeddings, axis=-1)
        self._tracker.unlock()
        del self.embeddings
        self._int8_build()
        self._tracker.lock()
        self.embeddings.assign(q)
        self.embeddings_scale.assign(scale)
        mark_int8(self)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.d_model)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "d_model": self.d_model,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer)}
