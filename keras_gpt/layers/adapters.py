"""LoRA factors and int8 state for layers that are not a `keras.layers.Dense`.

`Projection` is a Dense and takes both from Keras. `Unembedding` (an untied
W_U) and `TokenEmbedding` hold their matrices themselves; these helpers give
them the same variables, names and arithmetic as Dense: LoRA factors
`lora_kernel_a` (in, rank, he-uniform) and `lora_kernel_b` (rank, out,
zeros) in float32 with the base frozen and (alpha / rank) * x A B added to
the output; int8 tables with a float32 scale per output channel.
"""

import keras
from keras import ops


def add_lora_factors(layer, base, rank, alpha=None):
    """Creates `layer.lora_kernel_a/b` for the (in, out) matrix `base`.

    Follows `keras.layers.Dense.enable_lora`: raises if LoRA is already on
    or the layer is not built, freezes `base`, sets `lora_enabled`,
    `lora_rank` and `lora_alpha` (default: `rank`).
    """
    if not layer.built:
        raise ValueError(f"{layer.name}: build the layer before enable_lora.")
    if getattr(layer, "lora_enabled", False):
        raise ValueError(f"{layer.name}: lora is already enabled. This can "
                         "only be done once per layer.")
    d_in, d_out = base.shape
    layer._tracker.unlock()
    layer.lora_kernel_a = layer.add_weight(
        name="lora_kernel_a", shape=(d_in, rank), initializer="he_uniform",
        dtype="float32")
    layer.lora_kernel_b = layer.add_weight(
        name="lora_kernel_b", shape=(rank, d_out), initializer="zeros",
        dtype="float32")
    layer._tracker.lock()
    base.trainable = False
    layer.lora_enabled = True
    layer.lora_rank = rank
    layer.lora_alpha = rank if alpha is None else alpha


def lora_delta(layer):
    """(alpha / rank) * A @ B, float32 (in, out)."""
    return (layer.lora_alpha / layer.lora_rank) * ops.matmul(
        layer.lora_kernel_a, layer.lora_kernel_b)


def with_lora(layer, rows, outputs):
    """`outputs` + (alpha / rank) * (rows A) B, when the layer has LoRA."""
    if not getattr(layer, "lora_enabled", False):
        return outputs
    low_rank = ops.matmul(ops.matmul(rows, layer.lora_kernel_a),
                          layer.lora_kernel_b)
    return outputs + ops.cast((layer.lora_alpha / layer.lora_rank)
                              * low_rank, outputs.dtype)


def remove_lora_factors(layer):
    """Deletes the factors (after their delta went into the base)."""
    layer._tracker.unlock()
    del layer.lora_kernel_a
    del layer.lora_kernel_b
    layer._tracker.lock()
    layer.lora_enabled = False
    layer.lora_rank = layer.lora_alpha = None


def mark_int8(layer):
    """Sets `layer`'s dtype policy to int8 (after its tables were built)."""
    layer._is_quantized = True
    policy = layer.dtype_policy
    name = getattr(policy, "name", None) or keras.config.dtype_policy().name
    layer.dtype_policy = keras.dtype_policies.get(f"int8_from_{name}")


def add_int8_table(layer, name, shape, scale_shape):
    """An int8 variable `name` and its float32 `<name>_scale`, both frozen
    (zeros and ones until assigned or loaded)."""
    table = layer.add_weight(name=name, shape=shape, initializer="zeros",
                             dtype="int8", trainable=False)
    scale = layer.add_weight(name=f"{name}_scale", shape=scale_shape,
                             initializer="ones", dtype="float32",
                             trainable=False)
    return table, scale
