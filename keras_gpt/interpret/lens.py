"""The logit lens: each layer's residual stream read as if it were the last.

The residual stream before block i (and after the last block) goes through
the final LayerNorm and W_U, giving the distribution the model "would"
predict if it stopped there. How far that is from the real output (KL
divergence) and which tokens lead show where in depth a prediction forms
(nostalgebraist 2020; TransformerLens' `accumulated_resid`).
"""

import dataclasses

import numpy as np
from keras import ops

from keras_gpt import activations


@dataclasses.dataclass
class LensReading:
    """What a lens reads at each depth (rows) for each token.

    Attributes:
        names: The residual stream each row reads: `blocks.{i}.resid_pre`
            for every block, then the last block's `resid_post` (whose
            reading is the model's output).
        logits: float32 (rows, batch, seq, vocab).
        kl: float64 (rows, batch, seq): KL(final || row) in nats; 0 on the
            last row.
        top_ids: int (rows, batch, seq, k): the k most likely next tokens.
        top_probs: float (rows, batch, seq, k): their probabilities.
    """

    names: list
    logits: np.ndarray
    kl: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray

    @classmethod
    def from_logits(cls, names, logits, top_k):
        logits = np.asarray(logits, dtype=np.float32)
        log_probs = _log_softmax(logits.astype(np.float64))
        final = log_probs[-1]
        kl = np.sum(np.exp(final) * (final - log_probs), axis=-1)
        k = min(top_k, logits.shape[-1])
        top_ids = np.argsort(-logits, axis=-1, kind="stable")[..., :k]
        top_probs = np.take_along_axis(np.exp(log_probs), top_ids, axis=-1)
        return cls(list(names), logits, np.maximum(kl, 0.0), top_ids,
                   top_probs)


def stream_names(model):
    """The residual streams a lens reads, shallow to deep (n_layers + 1)."""
    last = model.config.n_layers - 1
    return ([f"blocks.{i}.resid_pre" for i in range(model.config.n_layers)]
            + [f"blocks.{last}.resid_post"])


def residual_streams(model, token_ids):
    """The model's logits and the streams of `stream_names`, stacked
    (n_layers + 1, batch, seq, d_model), from one compiled pass that keeps
    only them."""
    names = stream_names(model)
    logits, cache = model.run_with_cache(token_ids, names=names)
    return logits, ops.stack([cache[name] for name in names])


def _read_out(model, streams):
    return model.unembed(streams)


def logit_lens(model, token_ids, top_k=5):
    """Each layer's residual stream through the final LayerNorm and W_U.

    Args:
        model: A `GPT`.
        token_ids: int (batch, seq) ids.
        top_k: How many leading tokens to report per row and position.

    Returns:
        A `LensReading` with n_layers + 1 rows; the last row's logits are
        the model's.

    Example:

    ```python
    reading = logit_lens(model, ids)
    reading.kl[:, 0, -1]          # KL to the output, by depth, last token
    reading.top_ids[:, 0, -1, 0]  # the leading guess at each depth
    ```
    """
    check_top_k(top_k)
    _, streams = residual_streams(model, token_ids)
    logits = activations.compiled(model, _read_out)(streams)
    return LensReading.from_logits(stream_names(model),
                                   ops.convert_to_numpy(logits), top_k)


def check_top_k(top_k):
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k={top_k!r} must be a positive integer.")


def _log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
