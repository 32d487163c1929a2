"""Megatron-style model parallelism as data: which axis of each GPT
variable is split over the model axis of a (batch, model) device mesh
(`layout_rules`), the checks that a mesh fits a model and batch
(`check_layout`), and the `keras.distribution.LayoutMap` built from them
(`layout_map`). `keras_gpt.parallel.distribution` runs training with it.

This module imports Keras lazily, so `keras_gpt.parallel.plan` can use
`layout_rules` without starting a backend.
"""

import re

BATCH_AXIS = "batch"
MODEL_AXIS = "model"


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def _names(values):
    return ", ".join(str(v) for v in values)


def require_counts(data_parallel, model_parallel):
    for name, value in (("data_parallel", data_parallel),
                        ("model_parallel", model_parallel)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer.")


def layout_rules(config, model_parallel, model_dim=MODEL_AXIS):
    """Which axis of each GPT variable is split over the model axis.

    Megatron-LM's tensor parallelism (Shoeybi et al., 2019), written as
    Keras layouts (each split dimension is cut in `model_parallel` contiguous
    slices):

    - W_QKV (d_model, 3 * d_attn): columns ("column-parallel"), with its
      bias. The fused columns are [Q heads | K heads | V heads], so a slice
      is a run of whole heads only within Q, K or V; XLA moves the q, k, v
      activations onto their heads' devices after the projection.
    - W_O (d_attn, d_model): rows, i.e. by heads ("row-parallel"); its bias
      is replicated, being added after the partial sums are reduced.
    - MLP up-projection (d_model, d_mlp): columns, with its bias; down-
      projection (d_mlp, d_model): rows (bias replicated). So the GELU runs
      on each device's own slice.
    - W_E (vocab, d_model): vocabulary rows when `model_parallel` divides
      vocab_size (Megatron's vocab-parallel embedding), else d_model columns
      when it divides d_model, else replicated. An untied W_U (d_model,
      vocab) likewise: vocabulary columns, else d_model rows.
    - Position embeddings, LayerNorms: replicated (small).

    Pure Python (no Keras), so the memory planner counts exactly what a
    device holds.

    Args:
        config: A `GPTConfig`, or None (W_E by vocabulary rows; see
            `embedding_rules`).
        model_parallel: Devices on the model axis.
        model_dim: Name of that mesh axis.

    Returns:
        A list of `(path_regex, axes)`; a path matching none is replicated.
    """
    m, c = model_parallel, config
    prefix = r"(?:.*/)?"
    rules = [
        (prefix + r"attention/qkv/kernel", (None, model_dim)),
        (prefix + r"attention/qkv/bias", (model_dim,)),
        (prefix + r"attention/out/kernel", (model_dim, None)),
        (prefix + r"mlp/up/kernel", (None, model_dim)),
        (prefix + r"mlp/up/bias", (model_dim,)),
        (prefix + r"mlp/down/kernel", (model_dim, None)),
    ]
    return embedding_rules(c, m, model_dim) + rules


def embedding_rules(config, model_parallel, model_dim=MODEL_AXIS):
    """The `layout_rules` of W_E (and an untied W_U), which depend on the
    vocabulary; without a config (None), W_E is split by vocabulary rows
    until a model is built (`fit_layout_to_model`)."""
    m, c = model_parallel, config
    if c is None or c.vocab_size % m == 0:
        vocab = (model_dim, None)
    else:
        vocab = (None, model_dim) if c.d_model % m == 0 else (None, None)
    prefix = r"(?:.*/)?"
    rules = [(prefix + r"token_embedding/embeddings", vocab)]
    if c is None or not c.tie_embeddings:
        rules.append((prefix + r"unembedding/kernel", vocab[::-1]))
    return rules


def axes_for(path, rules, rank):
    """The axes of the variable at `path` under `rules` (None: not split)."""
    for pattern, axes in rules:
        if re.fullmatch(pattern, path):
            return axes
    return (None,) * rank


def check_layout(config, data_parallel=1, model_parallel=1, batch_size=None):
    """Raise a clear ValueError if the mesh does not fit the model or batch.

    Args:
        config: A `GPTConfig`.
        data_parallel: Devices on the data (batch) axis.
        model_parallel: Devices on the model axis.
        batch_size: Sequences per global batch (checked if given).
    """
    require_counts(data_parallel, model_parallel)
    m = model_parallel
    if config.n_heads % m:
        raise ValueError(
            f"A model axis of {m} devices does not divide n_heads="
            f"{config.n_heads}: attention is split by heads, so the model "
            f"axis must be one of {_names(_divisors(config.n_heads))}.")
    if config.d_mlp % m:
        raise ValueError(
            f"A model axis of {m} devices does not divide d_mlp="
            f"{config.d_mlp}: the MLP is split by columns, so the model axis "
            f"must divide {config.d_mlp} (and n_heads={config.n_heads}).")
    if batch_size is not None and batch_size % data_parallel:
        raise ValueError(
            f"A data axis of {data_parallel} devices does not divide the "
            f"batch of {batch_size} sequences: each device takes an equal "
            f"part. Use a batch that is a multiple of {data_parallel}, or a "
            f"data axis among {_names(_divisors(batch_size))}.")


def layout_map(config, device_mesh, model_dim=MODEL_AXIS,
               batch_dim=BATCH_AXIS):
    """A `keras.distribution.LayoutMap` sharding a GPT on a mesh.

    See `layout_rules` for what is split; `GPT.get_layout_map` calls this.
    The map remembers its model axis, so a GPT built in the scope of a
    `ModelParallel` holding it checks and fits it to its own config
    (`fit_layout_to_model`).

    Args:
        config: A `GPTConfig`, or None: the checks that need it (and the
            choice of W_E's split) then wait until a GPT is built.
        device_mesh: A `keras.distribution.DeviceMesh` with axes named
            `model_dim` and `batch_dim`.
        model_dim: The axis the weights are split over.
        batch_dim: The axis the data is split over; weights are replicated
            along it (as in data parallelism).

    Raises:
        ValueError: an axis is missing, or the model axis does not divide
            n_heads or d_mlp.
    """
    import keras

    names = tuple(device_mesh.axis_names)
    for role, name in (("model_dim", model_dim), ("batch_dim", batch_dim)):
        if name not in names:
            raise ValueError(f"{role}={name!r} is not an axis of the device "
                             f"mesh, whose axes are {names}.")
    if model_dim == batch_dim:
        raise ValueError(f"model_dim and batch_dim are both {model_dim!r}; "
                         "they must name two different mesh axes.")
    m = device_mesh.shape[names.index(model_dim)]
    if config is not None:
        check_layout(config, model_parallel=m)
    result = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in layout_rules(config, m, model_dim):
        result[pattern] = axes
    result.keras_gpt_model_dim = model_dim
    return result


def fit_layout_to_model(config):
    """Called as a GPT is built: in the scope of a `ModelParallel` whose map
    `layout_map` made, check that the model axis divides `config`'s heads
    and MLP (a ValueError naming them, before any variable is placed) and
    set W_E's split for its vocabulary. Anywhere else, nothing."""
    import keras

    # ModelParallel keeps its map private; only maps made here are touched.
    layout = getattr(keras.distribution.distribution(), "_layout_map", None)
    model_dim = getattr(layout, "keras_gpt_model_dim", None)
    if model_dim is None:
        return
    mesh = layout.device_mesh
    m = mesh.shape[list(mesh.axis_names).index(model_dim)]
    check_layout(config, model_parallel=m)
    for pattern, axes in embedding_rules(config, m, model_dim):
        if pattern in list(layout):  # `in layout` matches patterns as regexes
            del layout[pattern]
        layout[pattern] = axes
