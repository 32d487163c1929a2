"""One transformer block: attention then MLP, each on a pre-LayerNorm branch
added back to the residual stream."""

import keras

from keras_gpt.layers.attention import CausalSelfAttention
from keras_gpt.layers.direct import DirectCall, Dropout, LayerNormalization
from keras_gpt.layers.mlp import MLP


@keras.saving.register_keras_serializable(package="keras_gpt")
class TransformerBlock(DirectCall, keras.layers.Layer):
    """`x + attn(ln1(x))`, then `x + mlp(ln2(x))` (GPT-2's pre-LN block).

    Args:
        n_heads: Attention heads.
        d_head: Width of each head.
        d_mlp: MLP hidden width.
        activation: MLP nonlinearity, `"gelu"` or `"relu"`.
        use_bias: Biases in attention and MLP projections.
        dropout: Dropout rate on each branch before it joins the residual.
        layer_norm_epsilon: Epsilon of both LayerNorms.
        rotary_max_wavelength: Rotary positions in attention, if set.
        kernel_initializer: Initializer of W_Q/W_K/W_V and the up-projection.
        output_kernel_initializer: Initializer of W_O and the down-projection.

    Call arguments:
        inputs: The residual stream (batch, seq, d_model).
        cache, cache_index, return_attention_weights: as in
            `CausalSelfAttention`; the block returns the new residual stream
            followed by whatever extra outputs attention returned.

    Example:

    ```python
    block = TransformerBlock(n_heads=2, d_head=4, d_mlp=32)
    block(np.ones((1, 3, 8))).shape  # (1, 3, 8)
    ```
    """

    def __init__(self, n_heads, d_head, d_mlp, activation="gelu",
                 use_bias=True, dropout=0.0, layer_norm_epsilon=1e-5,
                 rotary_max_wavelength=None, kernel_initializer=None,
                 output_kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.n_heads = n_heads
        self.d_head = d_head
        self.d_mlp = d_mlp
        self.activation = activation
        self.use_bias = use_bias
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.rotary_max_wavelength = rotary_max_wavelength
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_kernel_initializer = keras.initializers.get(
            output_kernel_initializer)
        policy = self.dtype_policy
        self.ln1 = LayerNormalization(
            epsilon=layer_norm_epsilon, name="ln1", dtype=policy)
        self.attention = CausalSelfAttention(
            n_heads, d_head, use_bias=use_bias,
            rotary_max_wavelength=rotary_max_wavelength,
            kernel_initializer=kernel_initializer,
            output_kernel_initializer=output_kernel_initializer,
            name="attention", dtype=policy)
        self.ln2 = LayerNormalization(
            epsilon=layer_norm_epsilon, name="ln2", dtype=policy)
        self.mlp = MLP(d_mlp, activation=activation, use_bias=use_bias,
                       kernel_initializer=kernel_initializer,
                       output_kernel_initializer=output_kernel_initializer,
                       name="mlp", dtype=policy)
        self.dropout_layer = Dropout(dropout, dtype=policy)

    def build(self, input_shape):
        for layer in (self.ln1, self.attention, self.ln2, self.mlp):
            layer.build(input_shape)

    def call(self, inputs, cache=None, cache_index=0,
             return_attention_weights=False, training=None):
        attended = self.attention(
            self.ln1(inputs), cache=cache, cache_index=cache_index,
            return_attention_weights=return_attention_weights)
        extras = ()
        if isinstance(attended, tuple):
            attended, *extras = attended
        x = inputs + self.dropout_layer(attended, training=training)
        x = x + self.dropout_layer(self.mlp(self.ln2(x)), training=training)
        return (x, *extras) if extras else x

    def get_config(self):
        return {**super().get_config(), "n_heads": self.n_heads,
                "d_head": self.d_head, "d_mlp": self.d_mlp,
                "activation": self.activation, "use_bias": self.use_bias,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "rotary_max_wavelength": self.rotary_max_wavelength,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer),
                "output_kernel_initializer": keras.initializers.serialize(
                    self.output_kernel_initializer)}
