"""Sparse autoencoders on a GPT's activations: train, measure, look.

- `train_sae(model, data, hook, d_sae, k=... or l1=...)`: activations are
  streamed from `model` at a named hook (`GPT.run_with_cache` names, e.g.
  "blocks.1.resid_post"), a buffer of token windows at a time, shuffled, and
  a `SparseAutoencoder` is trained on them with `fit()`.
- `evaluate_sae`: SAELens' metrics: L0, explained variance, MSE, the
  CE-loss score (CE_zero_ablation - CE_with_sae) / (CE_zero_ablation -
  CE_clean) with the reconstruction spliced into the forward pass, and the
  fraction of features that never fire (dead).
- `top_activating_contexts`: where in the data a feature fires hardest.
"""

import functools
from collections import namedtuple

import keras
import numpy as np
from keras import ops

from keras_gpt import activations
from keras_gpt.interpret.sae import (ReconstructionLoss, SparseAutoencoder,
                                     check_sae_args, decode, encode)

_MODEL_WIDE = ("embed", "pos_embed", "resid_pre", "attn_out", "resid_mid",
               "mlp_out", "resid_post", "ln_final")
_HEADS = ("attn.q", "attn.k", "attn.v", "attn.z")


def hook_width(model, hook):
    """The width an SAE at `hook` reads: d_model, d_mlp (mlp.pre/post) or
    n_heads * d_head (attn.q/k/v/z, heads concatenated as SAELens'
    "hook_z" reshape).

    Raises:
        ValueError: an unknown name (listing the valid ones), or a name
            that is not a per-token vector (attention scores, patterns,
            per-head results).
    """
    activations.check_name(model, hook)
    c = model.config
    point = hook.split(".", 2)[-1] if hook.startswith("blocks.") else hook
    if point in _MODEL_WIDE:
        return c.d_model
    if point in ("mlp.pre", "mlp.post"):
        return c.d_mlp
    if point in _HEADS:
        return c.n_heads * c.d_head
    raise ValueError(f"{hook!r} is not a per-token vector an SAE can read; "
                     f"use one of {', '.join(_MODEL_WIDE + _HEADS)}, mlp.pre, "
                     "mlp.post.")


def check_width(sae, model, hook):
    """ValueError unless `sae.d_in` is the width of `hook` in `model`."""
    width = hook_width(model, hook)
    if sae.d_in != width:
        raise ValueError(f"The SAE reads width d_in={sae.d_in}, but {hook!r} "
                         f"has width {width} in this model: use an SAE "
                         f"trained on {hook!r} (d_in={width}).")


def _flat(x, width):
    return ops.reshape(ops.cast(x, "float32"), (-1, width))


def activations_at(model, token_ids, hook):
    """`model`'s activations at `hook` for `token_ids` (batch, seq), as
    float32 rows (batch * seq, width) (a tensor), computed by the compiled
    `run_with_cache` pass that keeps only this name."""
    _, cache = model.run_with_cache(token_ids, names=[hook])
    return _flat(cache[hook], hook_width(model, hook))


def _windows(data, batch_windows):
    """Batches of token windows (int arrays (n, seq)) from an array or an
    iterable of arrays or (x, y) pairs (e.g. a tf.data dataset)."""
    if hasattr(data, "shape") and len(data.shape) == 2:
        data = np.asarray(data)
        for start in range(0, len(data), batch_windows):
            yield data[start:start + batch_windows]
        return
    for batch in data:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        batch = np.asarray(ops.convert_to_numpy(batch))
        if batch.ndim != 2:
            raise ValueError("Token windows must be 2-D (batch, seq); got "
                             f"shape {batch.shape}.")
        yield batch


def _rows(model, data, hook, windows, batch_windows):
    """Buffers of activation rows (NumPy), `windows` windows per buffer."""
    buffer, held = [], 0
    for ids in _windows(data, batch_windows):
        buffer.append(ops.convert_to_numpy(activations_at(model, ids, hook)))
        held += len(ids)
        if held >= windows:
            yield np.concatenate(buffer)
            buffer, held = [], 0
    if buffer:
        yield np.concatenate(buffer)


def train_sae(model, data, hook, d_sae, k=None, l1=None, *, epochs=1,
              batch_size=1024, buffer_windows=256, batch_windows=32,
              learning_rate=1e-3, aux_k=None, aux_coefficient=1.0,
              dead_steps=1000, seed=0, sae=None, verbose=0):
    """Trains a `SparseAutoencoder` on `model`'s activations at `hook`.

    Activations are computed as they are needed (a buffer of
    `buffer_windows` token windows at a time, rows shuffled) and the SAE
    is trained on each buffer with `fit()` (Adam; the optimizer state
    carries over). The decoder bias starts at the first buffer's mean.

    Args:
        model: A `keras_gpt.GPT`.
        data: Token windows: an int array (n, seq) or an iterable of such
            batches or of (x, y) pairs (a tf.data dataset of windows).
        hook: An activation name (`model.hook_names()`), e.g.
            "blocks.0.resid_post" or "blocks.1.mlp.post".
        d_sae: Number of features.
        k: TopK: features kept per token, in [1, d_sae].
        l1: ReLU: the L1 coefficient (>= 0). Exactly one of k and l1.
        epochs: Passes over `data` (an array; an iterable is read once per
            pass, so it must be re-iterable).
        batch_size: Activation rows per optimizer step.
        buffer_windows, batch_windows: Windows per shuffled buffer, and per
            forward pass of `model`.
        learning_rate: Adam's learning rate.
        aux_k, aux_coefficient, dead_steps: See `SparseAutoencoder`.
        seed: Seeds the SAE's initial weights and the shuffles.
        sae: Continue training this SAE instead of a new one (its d_in
            must be the hook's width; `d_sae`, `k`, `l1` are then ignored).
        verbose: `fit()`'s progress bar.

    Returns:
        The trained `SparseAutoencoder` (its `hook` set).

    Example:

    ```python
    sae = train_sae(model, windows, "blocks.0.resid_post", d_sae=512, k=16)
    print(evaluate_sae(sae, model, val_windows))
    ```
    """
    width = hook_width(model, hook)
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("buffer_windows", buffer_windows),
                        ("batch_windows", batch_windows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
    if sae is None:
        check_sae_args(width, d_sae, k, l1)
        sae = SparseAutoencoder(width, d_sae, k=k, l1=l1, aux_k=aux_k,
                                aux_coefficient=aux_coefficient,
                                dead_steps=dead_steps, hook=hook, seed=seed)
        fresh = True
    else:
        check_width(sae, model, hook)
        sae.hook, fresh = hook, False
    if not sae.compiled:
        sae.compile(optimizer=keras.optimizers.Adam(learning_rate),
                    loss=ReconstructionLoss())
    rng = np.random.default_rng(seed)
    seen = 0
    for _ in range(epochs):
        for rows in _rows(model, data, hook, buffer_windows, batch_windows):
            seen += len(rows)
            if fresh:
                sae.b_dec.assign(rows.mean(axis=0))
                fresh = False
            rows = rows[rng.permutation(len(rows))]
            sae.fit(rows, rows, batch_size=batch_size, epochs=1,
                    shuffle=False, verbose=verbose)
    if not seen:
        raise ValueError("train_sae got no token windows (empty data).")
    return sae


@functools.lru_cache(maxsize=None)
def _splice(k, width):
    """The hook that replaces an activation by its SAE reconstruction
    (one function per k and width, so a compiled pass is reused)."""

    def splice(value, w):
        x = _flat(value, width)
        z = encode(x, w["W_enc"], w["b_enc"], w["b_dec"], k)[0]
        return ops.reshape(decode(z, w["W_dec"], w["b_dec"]), ops.shape(value))

    return splice


def _zero(value):
    return ops.zeros_like(value)


def _token_losses(logits, ids):
    """Next-token cross-entropy per position (batch, seq - 1), NumPy."""
    log_p = ops.log_softmax(ops.cast(logits[:, :-1], "float32"), axis=-1)
    targets = ops.convert_to_tensor(ids[:, 1:, None].astype("int32"))
    picked = ops.take_along_axis(log_p, targets, axis=-1)
    return -ops.convert_to_numpy(picked)[..., 0]


def evaluate_sae(sae, model, data, hook=None, batch_windows=32):
    """SAELens' metrics of `sae` at `hook` on the token windows `data`.

    Args:
        sae: A `SparseAutoencoder`.
        model: The `keras_gpt.GPT` it reads.
        data: Token windows (see `train_sae`); at least 2 tokens each.
        hook: Default `sae.hook`.
        batch_windows: Windows per forward pass.

    Returns:
        A dict: `l0` (mean non-zero features per token),
        `explained_variance` (1 - Σ||x - x̂||² / Σ||x - mean x||²), `mse`
        (mean squared error per element), `ce_loss_clean`,
        `ce_loss_with_sae` (the reconstruction spliced in at `hook`),
        `ce_loss_with_ablation` (zeros there), `ce_loss_score`,
        `dead_fraction` (features that never fired on `data`),
        `feature_density` (per feature, the fraction of tokens it fires on,
        a NumPy array) and `n_tokens`.
    """
    hook = hook or sae.hook
    if hook is None:
        raise ValueError("Which activation? Pass hook= (the SAE has none).")
    check_width(sae, model, hook)
    weights = {name: ops.convert_to_tensor(getattr(sae, name))
               for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    splice = {hook: _splice(sae.k, sae.d_in)}
    n = 0
    sums = dict(x=0.0, x2=0.0, err=0.0, l0=0.0, clean=0.0, sae=0.0, zero=0.0)
    fired = np.zeros(sae.d_sae)
    ce_tokens = 0
    for ids in _windows(data, batch_windows):
        if ids.shape[1] < 2:
            raise ValueError("evaluate_sae needs windows of at least 2 "
                             f"tokens; got shape {ids.shape}.")
        logits, cache = model.run_with_cache(ids, names=[hook])
        x = _flat(cache[hook], sae.d_in)
        z = sae.encode(x)
        x_hat = sae.decode(z)
        x, z, x_hat = (ops.convert_to_numpy(t).astype(np.float64)
                       for t in (x, z, x_hat))
        n += len(x)
        sums["x"] = sums["x"] + x.sum(axis=0)
        sums["x2"] += float(np.sum(x ** 2))
        sums["err"] += float(np.sum((x - x_hat) ** 2))
        active = z > 0
        sums["l0"] += float(active.sum())
        fired += active.sum(axis=0)
        with_sae = activations.run(model, ids, hooks=splice,
                                   hook_args=weights)[0]
        ablated = activations.run(model, ids, hooks={hook: _zero})[0]
        for key, out in (("clean", logits), ("sae", with_sae),
                         ("zero", ablated)):
            sums[key] += float(_token_losses(out, ids).sum())
        ce_tokens += ids.shape[0] * (ids.shape[1] - 1)
    if n == 0:
        raise ValueError("evaluate_sae got no token windows.")
    mean = sums["x"] / n
    variance = sums["x2"] - n * float(mean @ mean)
    clean, with_sae, zero = (sums[key] / ce_tokens
                             for key in ("clean", "sae", "zero"))
    return {
        "l0": sums["l0"] / n,
        "explained_variance": 1.0 - sums["err"] / variance,
        "mse": sums["err"] / (n * sae.d_in),
        "ce_loss_clean": clean, "ce_loss_with_sae": with_sae,
        "ce_loss_with_ablation": zero,
        "ce_loss_score": (zero - with_sae) / (zero - clean),
        "dead_fraction": float(np.mean(fired == 0)),
        "feature_density": fired / n, "n_tokens": n,
    }


Context = namedtuple("Context", ["activation", "window", "position", "ids",
                                 "text"])
Context.__doc__ = """Where a feature fired: `activation` at token `position`
of window `window`; `ids` the tokens around it (up to that token and a few
after); `text` them decoded with the token marked «like this» (None without
a tokenizer)."""


def top_activating_contexts(sae, model, data, feature, hook=None, k=10,
                            before=10, after=3, tokenizer=None,
                            batch_windows=32):
    """The `k` token positions in `data` where `feature` fires hardest.

    Args:
        sae: A `SparseAutoencoder`.
        model: The `keras_gpt.GPT` it reads.
        data: Token windows (see `train_sae`).
        feature: Feature index in [0, d_sae).
        hook: Default `sae.hook`.
        k: How many contexts.
        before, after: Tokens shown before and after the firing token.
        tokenizer: Renders `text`.

    Returns:
        A list of `Context`, strongest first (only positions where the
        feature fired at all).
    """
    hook = hook or sae.hook
    if hook is None:
        raise ValueError("Which activation? Pass hook= (the SAE has none).")
    check_width(sae, model, hook)
    if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)) \
            or not 0 <= feature < sae.d_sae:
        raise ValueError(f"feature must be an integer in [0, {sae.d_sae - 1}] "
                         f"(d_sae={sae.d_sae}); got {feature!r}.")
    best = np.zeros((0, 3))  # activation, window, position
    stored, offset = [], 0
    for ids in _windows(data, batch_windows):
        z = sae.encode(activations_at(model, ids, hook))
        values = ops.convert_to_numpy(z[:, feature]).reshape(ids.shape)
        rows, cols = np.nonzero(values > 0)
        found = np.stack([values[rows, cols], rows + offset, cols], axis=1)
        best = np.concatenate([best, found])
        best = best[np.argsort(-best[:, 0], kind="stable")[:k]]
        stored.append(ids)
        offset += len(ids)
    windows = np.concatenate(stored) if stored else np.zeros((0, 0), int)
    contexts = []
    for value, window, position in best:
        window, position = int(window), int(position)
        start = max(0, position - before)
        ids = windows[window, start:position + after + 1].tolist()
        text = None
        if tokenizer is not None:
            pieces = [tokenizer.decode([i]) for i in ids]
            pieces[position - start] = f"«{pieces[position - start]}»"
            text = "".join(pieces)
        contexts.append(Context(float(value), window, position, ids, text))
    return contexts
