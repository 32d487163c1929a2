"""Activation patching: which activation carries the difference between two
prompts.

Run the corrupted prompt, but put back one activation — the residual stream
at one layer and position, an attention or MLP output there, or one head's
output at every position — from the clean prompt, and measure the output
with `metric`. Where the metric comes back to its clean value, that
activation carries what the model needs (TransformerLens'
`patching.get_act_patch_*`, Meng et al.'s causal tracing).

All the runs share one compiled program: the layer, the position or head,
and the clean activations are passed to it as tensors.
"""

import functools

import numpy as np
from keras import ops

from keras_gpt import activations

PATCH_OVER = ("resid_pre", "attn_out", "mlp_out", "head")


def activation_patching(model, clean, corrupted, metric, over="resid_pre"):
    """The metric with each activation patched from `clean` into `corrupted`.

    Args:
        model: A `GPT`.
        clean: int (batch, seq) or (seq,) ids of the prompt to copy from.
        corrupted: ids of the same shape, the prompt that is run.
        metric: `metric(logits) -> float` on NumPy logits (batch, seq,
            vocab), e.g. the answer's logit minus a wrong answer's at the
            last position.
        over: `"resid_pre"`, `"attn_out"` or `"mlp_out"` (per layer and
            position: `blocks.{i}.<over>` at that position), or `"head"`
            (per layer and head: `blocks.{i}.attn.z` of that head at every
            position).

    Returns:
        float64 (n_layers, seq), or (n_layers, n_heads) for `"head"`.

    Example:

    ```python
    def metric(logits):
        return logits[0, -1, answer] - logits[0, -1, wrong]
    effect = activation_patching(model, clean, corrupted, metric, "head")
    ```
    """
    if over not in PATCH_OVER:
        raise ValueError(f"over={over!r} is not one of {PATCH_OVER}.")
    if not callable(metric):
        raise ValueError("metric must be a function logits -> float; got "
                         f"{type(metric).__name__}.")
    clean, corrupted = np.asarray(clean), np.asarray(corrupted)
    if clean.ndim == 1:
        clean, corrupted = clean[None], corrupted[None]
    if clean.shape != corrupted.shape or clean.ndim != 2:
        raise ValueError(
            "clean and corrupted must be token ids of one shape, (batch, "
            f"seq) or (seq,); got {clean.shape} and {corrupted.shape}.")
    c = model.config
    point = "attn.z" if over == "head" else over
    names = [f"blocks.{i}.{point}" for i in range(c.n_layers)]
    _, cache = model.run_with_cache(clean, names=names)
    clean_values = tuple(cache[name] for name in names)
    hooks = _patch_hooks(c.n_layers, point)
    columns = c.n_heads if over == "head" else clean.shape[1]
    effects = np.zeros((c.n_layers, columns))
    for layer in range(c.n_layers):
        for column in range(columns):
            args = (ops.convert_to_tensor(np.int32(layer)),
                    ops.convert_to_tensor(np.int32(column)), clean_values)
            logits, _ = activations.run(model, corrupted, hooks=hooks,
                                        hook_args=args)
            effects[layer, column] = float(
                metric(ops.convert_to_numpy(logits)))
    return effects


@functools.lru_cache(maxsize=32)
def _patch_hooks(n_layers, point):
    """One hook per layer at `point` that, when the run's layer is its own,
    swaps in the clean value at the run's position (or head). Cached, so
    every call with the same shape reuses one compiled program."""
    axis = 2 if point == "attn.z" else 1

    def hook_for(layer):
        def patch(value, args):
            run_layer, index, clean = args
            size = value.shape[axis]
            hit = ops.logical_and(run_layer == layer,
                                  ops.arange(size, dtype="int32") == index)
            shape = [1] * len(value.shape)
            shape[axis] = size
            return ops.where(ops.reshape(hit, shape), clean[layer], value)

        return patch

    return {f"blocks.{i}.{point}": hook_for(i) for i in range(n_layers)}
