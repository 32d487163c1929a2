"""Token embedding W_E: one learned vector of width d_model per token id."""

import keras
from keras import ops

from keras_gpt.backend import check_token_ids, nan_where_out_of_range


@keras.saving.register_keras_serializable(package="keras_gpt")
class TokenEmbedding(keras.layers.Layer):
    """The embedding matrix W_E (vocab_size x d_model).

    Maps token ids to vectors; `unembed` reuses W_E transposed as W_U when
    the model ties them (GPT-2).

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
            or keras.initializers.RandomNormal(stddev=0.02))

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.vocab_size, self.d_model),
            initializer=self.embeddings_initializer)

    def call(self, token_ids):
        token_ids = check_token_ids(token_ids, self.vocab_size)
        return nan_where_out_of_range(
            ops.take(self.embeddings, token_ids, axis=0), token_ids,
            self.vocab_size)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.d_model)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "d_model": self.d_model,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer)}
