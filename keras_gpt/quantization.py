"""int8 quantization of a GPT (`GPT.quantize("int8")`), Keras' API.

What is quantized: every projection (the fused W_Q/W_K/W_V, W_O, the MLP's
up and down), the token embedding W_E (and so a tied W_U) and an untied
W_U: int8 weights with one float32 scale per output channel (per token for
W_E), activations quantized per row on the fly (Keras' int8 mode; the
arithmetic is in `keras_gpt.backend.int8`). LayerNorms, position
embeddings and biases stay float: they are a tiny part of the bytes.

A quantized model saves and loads like any other (`model.save`,
`keras.models.load_model`): its config records each quantized layer's
dtype policy in a `keras.dtype_policies.DTypePolicyMap`, as KerasHub's
backbones do, so the layers are rebuilt int8 before the weights load.
"""

import keras

MODES = ("int8",)
# Names of the layers `quantize` converts (Keras' `filters` see names).
QUANTIZED_LAYERS = ("qkv", "out", "up", "down", "token_embedding",
                    "unembedding")


class QuantizationMethods:
    """`quantize` and its config for `keras_gpt.GPT` (a mixin)."""

    def quantize(self, mode=None, config=None, filters=None, **kwargs):
        """Quantizes the model's weights in place (`keras.Model.quantize`).

        Args:
            mode: `"int8"` (the only mode: per-output-channel int8 weights
                and float scales, activations quantized per row).
            config: None (or Keras' default `Int8QuantizationConfig()`,
                which `Layer.quantize` fills in): the quantizers are fixed.
            filters: Like Keras': a regex on layer names, a list of them or
                a callable, to quantize only some of the layers above.
            **kwargs: Keras' (`type_check`), ignored.

        Raises:
            ValueError: another mode, a config, a model already quantized,
                or one with LoRA factors (quantize first, then enable_lora
                for a LoRA on an int8 base; or merge_lora() first).

        Example:

        ```python
        model.quantize("int8")
        model.save("gpt-int8.keras")   # keras.models.load_model reads it
        ```
        """
        if mode not in MODES:
            raise ValueError(f"Quantization mode {mode!r} is not supported: "
                             f"GPT.quantize takes {', '.join(MODES)}.")
        if not _is_default(config):
            raise ValueError("GPT.quantize takes no config: keras_gpt's int8 "
                             "uses Keras' default int8 quantizers "
                             f"(got {config!r}).")
        if self.quantization_modes():
            raise ValueError(
                f"This model is already quantized "
                f"({', '.join(sorted(self.quantization_modes()))}); quantize "
                "a float model.")
        if getattr(self, "lora_rank", None) is not None:
            raise ValueError("This model has LoRA factors: merge_lora() "
                             "first, or quantize before enable_lora (a LoRA "
                             "on an int8 base).")

        def chosen(layer):
            return layer.name in QUANTIZED_LAYERS and (
                filters is None or _matches(layer, filters))

        super().quantize(mode, filters=chosen, type_check=False)
        self._structure_changed()

    def quantization_modes(self):
        """The set of quantization modes of the model's layers (empty for a
        float model)."""
        return {layer.quantization_mode
                for layer in self._flatten_layers(include_self=False)
                if layer.quantization_mode}

    def _quantized_dtype(self):
        """The model's dtype for `get_config`: its policy, or a
        `DTypePolicyMap` of the quantized layers' policies by path."""
        policy = self.dtype_policy
        if isinstance(policy, keras.dtype_policies.DTypePolicyMap):
            return policy
        quantized = {layer.path: layer.dtype_policy
                     for layer in self._flatten_layers(include_self=False)
                     if layer.quantization_mode}
        if not quantized:
            return policy
        policy_map = keras.dtype_policies.DTypePolicyMap(
            default_policy=policy)
        for path, layer_policy in quantized.items():
            policy_map[path] = layer_policy
        return policy_map


def _is_default(config):
    """Whether `config` is None or Keras' `Int8QuantizationConfig()`."""
    if config is None:
        return True
    weights = getattr(config, "weight_quantizer", "?")
    inputs = getattr(config, "activation_quantizer", None)
    return (type(config).__name__ == "Int8QuantizationConfig"
            and weights is None
            and type(inputs).__name__ == "AbsMaxQuantizer"
            and tuple(inputs.value_range) == (-127, 127)
            and inputs.axis in (None, (-1,)))


def _matches(layer, filters):
    import re

    if callable(filters):
        return bool(filters(layer))
    patterns = [filters] if isinstance(filters, str) else list(filters)
    return any(re.search(p, layer.name) for p in patterns)
