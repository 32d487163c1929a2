"""The MLP (feed-forward) block: up-project, nonlinearity, down-project.

Applied to every position independently — where, the seed says, much of a
model's knowledge is stored.
"""

import keras
from keras import ops

from keras_gpt.layers.direct import DirectCall
from keras_gpt.layers.initializers import HostRandomNormal
from keras_gpt.layers.rows import Projection, on_rows


@keras.saving.register_keras_serializable(package="keras_gpt")
class MLP(DirectCall, keras.layers.Layer):
    """Up-projection to d_mlp, GELU (tanh approximation) or ReLU, down again.

    Args:
        d_mlp: Hidden width (GPT: 4 * d_model).
        activation: `"gelu"` (tanh approximation, as GPT-2) or `"relu"`.
        use_bias: Biases on both projections.
        kernel_initializer: Initializer of the up-projection.
        output_kernel_initializer: Initializer of the down-projection.

    Example:

    ```python
    MLP(d_mlp=32)(np.ones((2, 3, 8))).shape  # (2, 3, 8)
    ```
    """

    def __init__(self, d_mlp, activation="gelu", use_bias=True,
                 kernel_initializer=None, output_kernel_initializer=None,
                 **kwargs):
        super().__init__(**kwargs)
        if activation not in ("gelu", "relu"):
            raise ValueError(f"Unknown activation {activation!r}; expected "
                             "'gelu' or 'relu'.")
        self.d_mlp = d_mlp
        self.activation = activation
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or HostRandomNormal(stddev=0.02))
        self.output_kernel_initializer = keras.initializers.get(
            output_kernel_initializer
            or HostRandomNormal(stddev=0.02))

    def build(self, input_shape):
        self.up = Projection(
            self.d_mlp, use_bias=self.use_bias, name="up",
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy)
        self.up.build(input_shape)
        self.down = Projection(
            input_shape[-1], use_bias=self.use_bias, name="down",
            kernel_initializer=self.output_kernel_initializer,
            dtype=self.dtype_policy)
        self.down.build((*input_shape[:-1], self.d_mlp))

    def call(self, inputs):
        return on_rows(self._position_wise, inputs)

    def _position_wise(self, rows):
        hidden = self.up(rows)
        if self.activation == "gelu":
            hidden = ops.gelu(hidden, approximate=True)
        else:
            hidden = ops.relu(hidden)
        return self.down(hidden)

    def get_config(self):
        return {**super().get_config(), "d_mlp": self.d_mlp,
                "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer),
                "output_kernel_initializer": keras.initializers.serialize(
                    self.output_kernel_initializer)}
