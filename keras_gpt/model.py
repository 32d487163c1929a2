"""GPT: the seed's §6 list, top to bottom, as one Keras model.

token ids -> W_E (+ positions) -> n_layers x [attention, MLP] -> final
LayerNorm -> W_U -> logits. Softmax (with temperature) and sampling live in
generation; the loss takes the logits directly.
"""

import math

import keras
from keras import ops

from keras_gpt import activations
from keras_gpt.config import GPTConfig
from keras_gpt.layers import (PositionEmbedding, SinusoidalEncoding,
                              TokenEmbedding, TransformerBlock, Unembedding)
from keras_gpt.layers.direct import Dropout, LayerNormalization
from keras_gpt.compiling import CompileMethods
from keras_gpt.lora import LoRAMethods
from keras_gpt.quantization import QuantizationMethods
from keras_gpt.sharding import fit_layout_to_model, layout_map


def _normal(stddev):
    # A config, not an instance: every layer that reads it draws its own seed
    # (one shared unseeded instance would give every matrix the same values).
    return {"class_name": "keras_gpt>HostRandomNormal",
            "config": {"mean": 0.0, "stddev": stddev}}


@keras.saving.register_keras_serializable(package="keras_gpt")
class GPT(CompileMethods, LoRAMethods, QuantizationMethods, keras.Model):
    """A decoder-only transformer that maps token ids to next-token logits.

    Weights are created at construction, initialised as GPT-2: N(0, 0.02),
    with the residual output projections (W_O and the MLP down-projection)
    at N(0, 0.02 / sqrt(2 * n_layers)).

    Fine-tuning and compression follow Keras' APIs: `enable_lora(rank)`,
    `save_lora_weights` / `load_lora_weights`, `merge_lora()` (see
    `keras_gpt.lora`) and `quantize("int8")` (see `keras_gpt.quantization`).

    Args:
        config: A `GPTConfig` (or its dict, or a preset name).
        lora_rank, lora_alpha, lora_targets: If `lora_rank` is set, LoRA
            is enabled at construction (`enable_lora`), as Keras' `Dense`
            takes `lora_rank`: what a saved LoRA model's config records.
        **kwargs: `keras.Model` arguments such as `name` or `dtype`
            (e.g. `dtype="mixed_bfloat16"`).

    Call arguments:
        token_ids: int tensor (batch, seq), seq <= context_length, every id
            in [0, vocab_size).
        training: Whether dropout is active.

    Returns:
        float32 logits (batch, seq, vocab_size).

    Example:

    ```python
    config = GPTConfig.from_preset("tiny")
    model = GPT(config)
    model.compile(optimizer="adamw",
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    model.fit(x, y)                        # x, y: (batch, seq) token ids
    logits = model(x[:1])                  # (1, seq, vocab_size)
    seen = model.inspect(x[:1])            # attention weights, residuals
    keras_gpt.generate(model, x[:1, :4], max_new_tokens=20)
    ```
    """

    def __init__(self, config, lora_rank=None, lora_alpha=None,
                 lora_targets=None, **kwargs):
        if isinstance(config, str):
            config = GPTConfig.from_preset(config)
        elif isinstance(config, dict):
            config = GPTConfig.from_dict(config)
        fit_layout_to_model(config)  # in a ModelParallel scope: check it
        super().__init__(**kwargs)
        self.config = config
        c = config
        policy = self.dtype_policy
        residual_init = _normal(0.02 / math.sqrt(2 * c.n_layers))
        self.token_embedding = TokenEmbedding(
            c.vocab_size, c.d_model, embeddings_initializer=_normal(0.02),
            name="token_embedding", dtype=policy)
        if c.positions == "learned":
            self.position_embedding = PositionEmbedding(
                c.context_length, c.d_model,
                embeddings_initializer=_normal(0.02),
                name="position_embedding", dtype=policy)
        elif c.positions == "sinusoidal":
            self.position_embedding = SinusoidalEncoding(
                name="position_embedding", dtype=policy)
        else:  # rotary: applied to queries and keys inside attention
            self.position_embedding = None
        self.embedding_dropout = Dropout(c.dropout, dtype=policy)
        rotary = c.rotary_max_wavelength if c.positions == "rotary" else None
        self.blocks = [
            TransformerBlock(
                c.n_heads, c.d_head, c.d_mlp, activation=c.activation,
                use_bias=c.use_bias, dropout=c.dropout,
                layer_norm_epsilon=c.layer_norm_epsilon,
                rotary_max_wavelength=rotary,
                kernel_initializer=_normal(0.02),
                output_kernel_initializer=residual_init,
                name=f"block_{i}", dtype=policy)
            for i in range(c.n_layers)]
        self.final_norm = LayerNormalization(
            epsilon=c.layer_norm_epsilon, name="final_norm", dtype=policy)
        self.unembedding = Unembedding(
            c.vocab_size, tied=c.tie_embeddings,
            kernel_initializer=_normal(0.02), name="unembedding", dtype=policy)
        self.build((None, None))
        self.lora_rank = self.lora_alpha = self.lora_targets = None
        if lora_rank is not None:
            self.enable_lora(lora_rank, lora_alpha, lora_targets)

    def build(self, input_shape=None):
        if self.built:
            return
        stream = (None, None, self.config.d_model)
        self.token_embedding.build(input_shape)
        if self.position_embedding is not None:
            self.position_embedding.build(stream)
        for layer in (*self.blocks, self.final_norm, self.unembedding):
            layer.build(stream)
        self.built = True

    # The forward pass, in the seed's order ------------------------------------

    def embed(self, token_ids, start_index=0, training=None):
        """Token ids -> W_E vectors plus positions (the residual stream)."""
        self._check_length(token_ids, start_index)
        x = self.token_embedding(token_ids)
        if self.position_embedding is not None:
            x = x + self.position_embedding(x, start_index=start_index)
        return self.embedding_dropout(x, training=training)

    def unembed(self, x):
        """Final LayerNorm then W_U: residual stream -> float32 logits."""
        if not self.config.tie_embeddings:
            return self.unembedding(self.final_norm(x))
        return self.unembedding(
            self.final_norm(x), embeddings=self.token_embedding.embeddings,
            embeddings_scale=getattr(self.token_embedding, "embeddings_scale",
                                     None))

    def call(self, token_ids, training=None):
        x = self.embed(token_ids, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return self.unembed(x)

    # Cached decoding ----------------------------------------------------------

    def init_cache(self, batch_size, max_length=None):
        """An empty key/value cache: one `(keys, values)` pair per layer.

        Keys are zeros (batch * n_heads, d_head, max_length) (stored
        transposed) and values zeros (batch * n_heads, max_length, d_head),
        in the compute dtype. `call_with_cache` writes the keys and values of
        new positions in place, so each new token costs one position's work,
        and attention is two plain batched matmuls (no restacking,
        transposes or copies per decoding step).

        Args:
            batch_size: Rows in the batch.
            max_length: Positions the cache holds (default and most:
                `context_length`).
        """
        c = self.config
        max_length = c.context_length if max_length is None else max_length
        if max_length > c.context_length:
            raise ValueError(f"Cache length {max_length} exceeds "
                             f"context_length={c.context_length}.")
        rows = batch_size * c.n_heads
        return [(ops.zeros((rows, c.d_head, max_length),
                           dtype=self.compute_dtype),
                 ops.zeros((rows, max_length, c.d_head),
                           dtype=self.compute_dtype))
                for _ in range(c.n_layers)]

    def call_with_cache(self, token_ids, cache, cache_index):
        """Logits for `token_ids` placed at `cache_index` onwards.

        Args:
            token_ids: (batch, seq) new tokens (the whole prompt for the
                prefill, one token per decoding step).
            cache: From `init_cache` or a previous call: a list of one
                `(keys, values)` pair per layer.
            cache_index: Position of `token_ids[:, 0]` (int or scalar tensor).

        Returns:
            `(logits, cache)`: logits (batch, seq, vocab_size) and the cache
            (a new list of pairs) with this call's keys and values written in.
        """
        x = self.embed(token_ids, start_index=cache_index)
        layers = []
        for block, layer_cache in zip(self.blocks, cache, strict=True):
            x, layer_cache = block(x, cache=layer_cache,
                                   cache_index=cache_index)
            layers.append(layer_cache)
        return self.unembed(x), layers

    # Interpretability -----------------------------------------------------------

    def inspect(self, token_ids):
        """Everything the model computed on one input, layer by layer.

        Args:
            token_ids: int tensor (batch, seq).

        Returns:
            A dict with `"logits"` (batch, seq, vocab); `"residual_stream"`,
            a list of n_layers + 1 tensors (batch, seq, d_model): the
            embeddings, then the stream after each block; and
            `"attention_weights"`, a list of n_layers tensors (batch, heads,
            seq, seq) whose rows sum to 1 and are 0 above the diagonal.
        """
        x = self.embed(token_ids)
        residuals, weights = [x], []
        for block in self.blocks:
            x, layer_weights = block(x, return_attention_weights=True)
            residuals.append(x)
            weights.append(layer_weights)
        return {"logits": self.unembed(x), "residual_stream": residuals,
                "attention_weights": weights}

    def run_with_cache(self, token_ids, names=None):
        """Logits and the activations named `names` (TransformerLens' names).

        Runs compiled (jax.jit / tf.function with XLA / torch without
        autograd), the program built once per set of names. Only the named
        activations leave it: ask for one and only that one is kept.

        Args:
            token_ids: int (batch, seq) ids.
            names: None (every name), a list of names, or a predicate
                `name -> bool`. `model.hook_names()` lists them; shapes are
                in `keras_gpt.activations`.

        Returns:
            `(logits, cache)`: float32 logits (batch, seq, vocab) equal to
            `model(token_ids)`, and a dict name -> tensor.

        Raises:
            ValueError: an unknown name or a layer out of range (the
                message lists the valid names).

        Example:

        ```python
        logits, cache = model.run_with_cache(ids, names=["blocks.0.attn.pattern"])
        cache["blocks.0.attn.pattern"].shape  # (batch, heads, seq, seq)
        ```
        """
        return activations.run(self, token_ids, names=names)

    def run_with_hooks(self, token_ids, hooks):
        """Logits with activations replaced on the way (ablate, patch, steer).

        Args:
            token_ids: int (batch, seq) ids.
            hooks: `{name: fn}`: `fn(value)` returns what the pass carries on
                with, of the same shape (keras.ops on a tensor). The program
                is compiled once per set of hook functions.

        Returns:
            float32 logits (batch, seq, vocab).

        Raises:
            ValueError: an unknown name, a layer out of range, or a hook
                that changes the shape.

        Example:

        ```python
        def no_head_1(z):  # (batch, pos, head, d_head)
            return z * np.array([1, 0, 1, 1], "float32")[:, None]
        logits = model.run_with_hooks(ids, {"blocks.0.attn.z": no_head_1})
        ```
        """
        return activations.run(self, token_ids, hooks=hooks)[0]

    def hook_names(self):
        """The names `run_with_cache` and `run_with_hooks` accept, in order."""
        return activations.hook_names(self)

    def _check_length(self, token_ids, start_index):
        if len(token_ids.shape) != 2:
            raise ValueError("GPT expects token ids of shape (batch, seq); got "
                             f"shape {tuple(token_ids.shape)}.")
        length = token_ids.shape[1]
        if length is None or not isinstance(start_index, int):
            return
        if start_index + length > self.config.context_length:
            raise ValueError(
                f"Sequence length {start_index + length} exceeds "
                f"context_length={self.config.context_length}; pass at most "
                f"{self.config.context_length} tokens (or truncate the left).")

    def get_config(self):
        base = keras.layers.Layer.get_config(self)
        base["dtype"] = keras.dtype_policies.serialize(self._quantized_dtype())
        lora = {} if self.lora_rank is None else {
            "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha,
            "lora_targets": list(self.lora_targets)}
        return {**base, "config": self.config.to_dict(), **lora}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.get(config["dtype"])
        return cls(GPTConfig.from_dict(config.pop("config")), **config)

    def _structure_changed(self):
        """Variables were added or removed (LoRA, quantization): compiled
        functions are stale; torch's module tracks its parameters anew."""
        self.train_function = self.test_function = None
        self.predict_function = None
        if keras.backend.backend() == "torch":
            for layer in self._flatten_layers():
                layer._track_variables()

    # Distribution -------------------------------------------------------------

    @classmethod
    def get_layout_map(cls, device_mesh, model_dim="model", batch_dim="batch",
                       config=None):
        """A `keras.distribution.LayoutMap` for model-parallel training.

        Megatron-style: W_E and the attention projections (W_QKV by
        columns, W_O by rows, i.e. by heads) and the MLP (up-projection by
        columns, down-projection by rows) are split over the `model_dim`
        axis; the rest is replicated. Details in
        `keras_gpt.sharding.layout_rules`. Called like KerasHub's
        `Backbone.get_layout_map(device_mesh, ...)`, before the model
        exists (it must be built inside the distribution's scope). The
        checks that need the model's shape (the model axis divides n_heads
        and d_mlp) run here when `config` is given, and in any case when a
        GPT is built in the scope of a `ModelParallel` holding the map,
        which also picks W_E's split for its vocabulary (by rows when the
        model axis divides vocab_size, else by d_model columns, else none).

        Args:
            device_mesh: A `keras.distribution.DeviceMesh`.
            model_dim: The mesh axis the weights are split over.
            batch_dim: The mesh axis the data is split over.
            config: Optionally, the `GPTConfig` (or preset name) of the
                model to build, to check the mesh against it now.

        Raises:
            ValueError: an axis is not in the mesh, or (with `config`, or
                later as the model is built) the model axis does not
                divide n_heads or d_mlp.

        Example:

        ```python
        mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"))
        layout = GPT.get_layout_map(mesh)            # or (mesh, config=config)
        distribution = keras.distribution.ModelParallel(
            layout_map=layout, batch_dim_name="batch")
        with distribution.scope():
            model = GPT(config)
            model.compile(...)
            model.fit(...)
        ```
        """
        if isinstance(config, str):
            config = GPTConfig.from_preset(config)
        return layout_map(config, device_mesh, model_dim, batch_dim)
