"""Positional information: learned, sinusoidal, or rotary (on queries/keys).

Attention alone is blind to order; each layer here tells the model where a
token stands. `start_index` lets a cached decoding step ask for the positions
of its new tokens only.
"""

import keras
from keras import ops

from keras_gpt.layers.direct import DirectCall
from keras_gpt.layers.initializers import HostRandomNormal


def _positions(length, start_index, dtype="int32"):
    return ops.cast(ops.arange(length) + start_index, dtype)


@keras.saving.register_keras_serializable(package="keras_gpt")
class PositionEmbedding(DirectCall, keras.layers.Layer):
    """Learned position embeddings (GPT-2, GPT-3): one vector per position.

    Args:
        context_length: Number of positions (rows).
        d_model: Width of each vector.
        embeddings_initializer: Initializer (GPT-2: N(0, 0.02)).

    Call arguments:
        inputs: Tensor (batch, seq, d_model); only its length is used.
        start_index: Position of the first token (for cached decoding).

    Returns:
        Position vectors of shape (1, seq, d_model), to add to the tokens'.

    Example:

    ```python
    pos = PositionEmbedding(context_length=16, d_model=8)
    pos(np.zeros((2, 5, 8))).shape  # (1, 5, 8)
    ```
    """

    def __init__(self, context_length, d_model, embeddings_initializer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.context_length = context_length
        self.d_model = d_model
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
            or HostRandomNormal(stddev=0.02))

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.context_length, self.d_model),
            initializer=self.embeddings_initializer)

    def call(self, inputs, start_index=0):
        length = ops.shape(inputs)[1]
        vectors = ops.take(self.embeddings, _positions(length, start_index),
                           axis=0)
        return vectors[None]

    def get_config(self):
        return {**super().get_config(), "context_length": self.context_length,
                "d_model": self.d_model,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer)}


@keras.saving.register_keras_serializable(package="keras_gpt")
class SinusoidalEncoding(DirectCall, keras.layers.Layer):
    """Fixed sine/cosine positions of "Attention Is All You Need" (no weights).

    Dimension 2i holds sin(pos / w^(2i/d)), dimension 2i+1 the cosine.

    Args:
        max_wavelength: The base w of the wavelengths (10000 in the paper).

    Example:

    ```python
    SinusoidalEncoding()(np.zeros((2, 5, 8))).shape  # (1, 5, 8)
    ```
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.built = True

    def call(self, inputs, start_index=0):
        length, width = ops.shape(inputs)[1], inputs.shape[-1]
        positions = _positions(length, start_index, "float32")
        exponents = ops.arange(0, width, 2, dtype="float32") / width
        inverse = ops.power(float(self.max_wavelength), -exponents)
        angles = positions[:, None] * inverse[None, :]
        encoding = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
        encoding = ops.reshape(encoding, (length, width))
        return ops.cast(encoding, self.compute_dtype)[None]

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}


@keras.saving.register_keras_serializable(package="keras_gpt")
class RotaryEmbedding(DirectCall, keras.layers.Layer):
    """Rotary position embedding (RoFormer), applied to queries and keys.

    Rotates each pair of dimensions (i, i + d/2) of a head by an angle
    proportional to the position, so q·k depends on relative position.

    Args:
        max_wavelength: Base of the rotation frequencies.

    Call arguments:
        inputs: Queries or keys, shape (batch, seq, heads, d_head).
        start_index: Position of the first token (for cached decoding).

    Example:

    ```python
    rope = RotaryEmbedding()
    rope(np.ones((1, 4, 2, 8))).shape  # (1, 4, 2, 8)
    ```
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.built = True

    def call(self, inputs, start_index=0):
        length, width = ops.shape(inputs)[1], inputs.shape[-1]
        half = width // 2
        positions = _positions(length, start_index, "float32")
        inverse = ops.power(float(self.max_wavelength),
                            -ops.arange(0, half, dtype="float32") / half)
        angles = positions[:, None] * inverse[None, :]
        angles = ops.concatenate([angles, angles], axis=-1)[None, :, None, :]
        cos = ops.cast(ops.cos(angles), inputs.dtype)
        sin = ops.cast(ops.sin(angles), inputs.dtype)
        first, second = inputs[..., :half], inputs[..., half:]
        rotated = ops.concatenate([-second, first], axis=-1)
        return inputs * cos + rotated * sin

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}

