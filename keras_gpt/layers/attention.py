"""Causal multi-head self-attention: softmax(Q K^T / sqrt(d_head)) V per head.

Each token's query is compared (dot product) with the keys of itself and the
tokens before it — never after: future positions are masked before the
softmax — and the resulting weights mix the values. Several heads do this in
parallel on their own slices; W_O maps the concatenated heads back into the
residual stream.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_gpt import backend as backend_lib
from keras_gpt.layers.direct import DirectCall
from keras_gpt.layers.initializers import HostRandomNormal
from keras_gpt.layers.positions import RotaryEmbedding
from keras_gpt.layers.rows import Projection

# `_attend_in_blocks`: query runs per sequence, and the shortest run. At
# 64 positions two runs of 32 saved nothing: CPU time per step 57.2 vs
# 56.4 ms on JAX, 41.9 vs 40.5 on TF, for one run (nanoGPT's baby config;
# `tools/ab_speed.py attention --config baby`), and they add ops to compile;
# so runs hold at least 64 queries (up to 64 positions: one run).
_QUERY_BLOCKS = 4
_MIN_QUERY_BLOCK = 64


@keras.saving.register_keras_serializable(package="keras_gpt")
class CausalSelfAttention(DirectCall, keras.layers.Layer):
    """Multi-head causal self-attention with a fused W_Q/W_K/W_V projection.

    The fused kernel has GPT-2's `c_attn` layout, (d_model, 3 * n_heads *
    d_head), split in query, key, value order. On PyTorch and on
    accelerators the work runs on `keras.ops.dot_product_attention` (SDPA,
    cuDNN); JAX and TensorFlow on CPU use the formula itself as heads-first
    batched matmuls, skipping the masked upper triangle block by block
    (faster there: see `keras_gpt.backend.use_fused_attention`); a call
    asking for the attention weights computes the whole score matrix.

    Args:
        n_heads: Number of heads.
        d_head: Width of each head's queries, keys and values.
        use_bias: Biases on the projections.
        rotary_max_wavelength: If set, rotary position embedding is applied
            to queries and keys with this base wavelength.
        kernel_initializer: Initializer of W_Q, W_K, W_V.
        output_kernel_initializer: Initializer of W_O (GPT-2 scales it down
            by sqrt(2 * n_layers)).

    Call arguments:
        inputs: The (normalised) residual stream, (batch, seq, d_model).
        cache: Optional `(keys, values)` pair from `GPT.init_cache`: keys
            (batch * n_heads, d_head, max_length), values (batch * n_heads,
            max_length, d_head). The new keys and values are written into it
            at `cache_index` and attention reads all filled positions; the
            layout lets XLA update it in place and multiply without
            transposes. The updated pair is returned.
        cache_index: Position of the first token of `inputs` in the cache.
        return_attention_weights: Also return the weights (batch, heads,
            seq, keys).

    Returns:
        The output (batch, seq, d_model); with a cache, `(output, cache)`;
        with attention weights, `(output, weights)` or
        `(output, weights, cache)`.

    Example:

    ```python
    attention = CausalSelfAttention(n_heads=2, d_head=4)
    out, weights = attention(np.ones((1, 3, 8)), return_attention_weights=True)
    weights.shape  # (1, 2, 3, 3)
    ```
    """

    def __init__(self, n_heads, d_head, use_bias=True,
                 rotary_max_wavelength=None, kernel_initializer=None,
                 output_kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.n_heads = n_heads
        self.d_head = d_head
        self.use_bias = use_bias
        self.rotary_max_wavelength = rotary_max_wavelength
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or HostRandomNormal(stddev=0.02))
        self.output_kernel_initializer = keras.initializers.get(
            output_kernel_initializer
            or HostRandomNormal(stddev=0.02))
        self.rotary = None
        if rotary_max_wavelength:
            self.rotary = RotaryEmbedding(rotary_max_wavelength, name="rotary",
                                          dtype=self.dtype_policy)

    def build(self, input_shape):
        d_model = input_shape[-1]
        width = self.n_heads * self.d_head
        self.qkv = Projection(
            3 * width, use_bias=self.use_bias, name="qkv",
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy)
        self.qkv.build(input_shape)
        self.out = Projection(
            d_model, use_bias=self.use_bias, name="out",
            kernel_initializer=self.output_kernel_initializer,
            dtype=self.dtype_policy)
        self.out.build((*input_shape[:-1], width))

    def call(self, inputs, cache=None, cache_index=0,
             return_attention_weights=False):
        batch, length = ops.shape(inputs)[0], ops.shape(inputs)[1]
        # Split, not strided slices: its gradient is one concatenation
        # (TensorFlow builds a zero-filled buffer per slice).
        query, key, value = (
            ops.reshape(part, (batch, length, self.n_heads, self.d_head))
            for part in ops.split(self.qkv(inputs), 3, axis=-1))
        if self.rotary is not None:
            query = self.rotary(query, start_index=cache_index)
            key = self.rotary(key, start_index=cache_index)

        if cache is not None:
            return self._call_with_cache(
                batch, length, query, key, value, cache, cache_index,
                return_attention_weights)

        if return_attention_weights:
            outputs, weights = self._attend_explicitly(query, key, value)
        elif not backend_lib.use_fused_attention():
            outputs = self._attend_in_blocks(query, key, value)
        else:
            outputs = ops.dot_product_attention(
                query, key, value, is_causal=True,
                scale=1.0 / math.sqrt(self.d_head))
        outputs = self.out(ops.reshape(
            outputs, (batch, length, self.n_heads * self.d_head)))
        if return_attention_weights:
            return outputs, weights
        return outputs

    def _call_with_cache(self, batch, length, query, key, value, cache,
                         cache_index, return_attention_weights):
        """Cached attention (see `call` for the cache layout).

        Batch and heads are merged into one leading axis and keys are stored
        transposed, so that both products are plain batched matmuls and the
        in-place cache updates are not copied (XLA on CPU otherwise copies
        the cache several times per step).
        """
        if not isinstance(cache, (tuple, list)) or len(cache) != 2:
            raise ValueError("cache must be a (keys, values) pair, one layer's "
                             "entry of GPT.init_cache(); got "
                             f"{type(cache).__name__}.")
        keys, values = cache
        rows = batch * self.n_heads

        def heads_first(x):  # (batch, seq, heads, d) -> (batch * heads, seq, d)
            return ops.reshape(ops.transpose(x, (0, 2, 1, 3)),
                               (rows, length, self.d_head))

        keys = ops.slice_update(keys, (0, 0, cache_index), ops.cast(
            ops.transpose(heads_first(key), (0, 2, 1)), keys.dtype))
        values = ops.slice_update(values, (0, cache_index, 0), ops.cast(
            heads_first(value), values.dtype))
        query_positions = ops.arange(length) + cache_index
        key_positions = ops.arange(ops.shape(keys)[2])
        mask = key_positions[None, :] <= query_positions[:, None]
        scores = ops.matmul(ops.cast(heads_first(query), "float32"),
                            ops.cast(keys, "float32"))
        scores = ops.where(mask[None], scores / math.sqrt(self.d_head),
                           float(np.finfo("float32").min))
        weights = ops.softmax(scores, axis=-1)
        outputs = ops.matmul(ops.cast(weights, values.dtype), values)
        outputs = ops.reshape(outputs, (batch, self.n_heads, length,
                                        self.d_head))
        outputs = self.out(ops.reshape(
            ops.transpose(outputs, (0, 2, 1, 3)),
            (batch, length, self.n_heads * self.d_head)))
        if return_attention_weights:
            weights = ops.reshape(weights, (batch, self.n_heads, length, -1))
            return outputs, weights, (keys, values)
        return outputs, (keys, values)

    def _attend_in_blocks(self, query, key, value):
        """`_attend_explicitly`'s outputs, skipping what the mask would empty.

        Queries are cut into `_QUERY_BLOCKS` runs of positions; each run
        attends only to the keys up to its own last position, so the
        softmax and both products never touch most of the masked upper
        triangle (with 4 runs, 10/16 of the full score matrix). The whole
        training step on CPU: 1.03x on TF, 1.08x on JAX (6 layers, d_model
        384, batch 8 x 256: `tools/ab_speed.py attention`).
        """
        length = query.shape[1]
        size = max(_MIN_QUERY_BLOCK, -(-(length or 0) // _QUERY_BLOCKS))
        cuts = list(range(size, length or 0, size))
        if not cuts:  # unknown or short length: one run
            return self._attend_explicitly(query, key, value)[0]
        queries, keys, values = self._heads_first(query, key, value)
        outputs = []
        for start, run in zip([0] + cuts, ops.split(queries, cuts, axis=2)):
            stop = start + run.shape[2]
            outputs.append(self._attend_run(
                run, keys[..., :stop], values[:, :, :stop], start)[0])
        return ops.transpose(ops.concatenate(outputs, axis=2), (0, 2, 1, 3))

    def _attend_explicitly(self, query, key, value):
        """The seed's formula, heads first: (outputs, softmax weights).

        query, key, value: (batch, seq, heads, d_head). Returns outputs
        (batch, seq, heads, d_head) and weights (batch, heads, seq, seq).
        """
        outputs, weights = self._attend_run(
            *self._heads_first(query, key, value), start=0)
        return ops.transpose(outputs, (0, 2, 1, 3)), weights

    @staticmethod
    def _heads_first(query, key, value):
        """float32 queries (batch, heads, seq, d), keys transposed (batch,
        heads, d, seq) and values (batch, heads, seq, d)."""
        return (ops.cast(ops.transpose(query, (0, 2, 1, 3)), "float32"),
                ops.cast(ops.transpose(key, (0, 2, 3, 1)), "float32"),
                ops.transpose(value, (0, 2, 1, 3)))

    def _attend_run(self, queries, keys, values, start):
        """softmax(Q K^T / sqrt(d_head)) V for queries at positions start,
        start + 1, ... over the keys and values of positions 0, 1, ...
        (`_heads_first` layouts): (outputs, weights)."""
        stop = start + ops.shape(queries)[2]
        scores = ops.matmul(queries, keys) / math.sqrt(self.d_head)
        visible = ops.arange(stop)[None, :] <= ops.arange(start, stop)[:, None]
        scores = ops.where(visible, scores, float(np.finfo("float32").min))
        if scores.shape[-1] == 1:
            # One position sees only itself: weight 1 (what the softmax
            # gives; Keras' softmax warns about an axis of size 1).
            weights = ops.ones_like(scores)
        else:
            weights = ops.softmax(scores, axis=-1)
        return ops.matmul(ops.cast(weights, values.dtype), values), weights

    def get_config(self):
        return {**super().get_config(), "n_heads": self.n_heads,
                "d_head": self.d_head, "use_bias": self.use_bias,
                "rotary_max_wavelength": self.rotary_max_wavelength,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer),
                "output_kernel_initializer": keras.initializers.serialize(
                    self.output_kernel_initializer)}
