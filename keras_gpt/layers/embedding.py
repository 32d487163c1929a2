"""Token embedding W_E: one learned vector of width d_model per token id."""

import keras
from keras import ops

from keras_gpt.backend import assert_on_device, concrete_value


def check_token_ids(token_ids, vocab_size):
    """Raise clearly on ids that are not integers in [0, vocab_size).

    Values are checked whenever they are known (eager calls on every backend);
    under `jit` only the dtype can be checked, and out-of-range ids are mapped
    to `vocab_size` (not the silent wrap-around of negative indices): pass
    what is gathered with them through `nan_where_out_of_range`.
    """
    dtype = keras.backend.standardize_dtype(token_ids.dtype)
    if "int" not in dtype:
        raise TypeError(f"Token ids must be integers; got dtype {dtype}. "
                        "Cast them with keras.ops.cast(ids, 'int32').")
    values = concrete_value(token_ids)
    if values is not None and values.size:
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"Token id {bad} is out of range: ids must be in "
                             f"[0, {vocab_size}) for vocab_size={vocab_size}.")
        return token_ids
    in_range = ops.logical_and(token_ids >= 0, token_ids < vocab_size)
    assert_on_device(ops.all(in_range),
                     f"token ids out of range [0, {vocab_size})")
    return ops.where(in_range, token_ids, vocab_size)


def nan_where_out_of_range(gathered, token_ids, vocab_size):
    """`gathered` (indexed like `token_ids`, maybe with trailing axes) with
    NaN wherever `check_token_ids` mapped an id to `vocab_size`.

    A compiled gather does not fail on such an id: JAX's returns NaN, but
    TensorFlow's XLA gather clamps it to the last row, which would train
    silently on a wrong embedding or target. NaN makes it visible as a NaN
    loss on every backend. Ids whose values were checked pass unchanged.
    """
    if concrete_value(token_ids) is not None:
        return gathered
    invalid = token_ids >= vocab_size
    while len(invalid.shape) < len(gathered.shape):
        invalid = ops.expand_dims(invalid, -1)
    return ops.where(invalid, float("nan"), gathered)


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
