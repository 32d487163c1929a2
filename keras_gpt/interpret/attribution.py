"""Direct logit attribution: how much each head and MLP writes the answer.

The final residual stream is a sum: token and position embeddings, every
head's output (`attn.result`), every attention bias, every MLP's output.
The final LayerNorm is linear once its scale (the stream's standard
deviation at that position) is fixed, so the answer's logit — or the
difference between the answer's and a wrong answer's — splits exactly into
one number per component (TransformerLens' `decompose_resid` +
`logit_attrs`).
"""

import dataclasses

import numpy as np
from keras import ops


@dataclasses.dataclass
class Attribution:
    """Direct effects on `logit[answer] - logit[wrong]` at one position.

    Attributes:
        heads: (n_layers, n_heads): each head's direct effect.
        mlp: (n_layers,): each MLP's.
        embed: The token and position embeddings'.
        rest: What no head or MLP writes: attention output biases and the
            final LayerNorm's shift.
        total: The model's logit difference; `heads.sum() + mlp.sum() +
            embed + rest == total`.
    """

    heads: np.ndarray
    mlp: np.ndarray
    embed: float
    rest: float
    total: float

    def top_heads(self, n=10):
        """[(layer, head, effect)] of the n largest |effects|."""
        order = np.argsort(-np.abs(self.heads), axis=None, kind="stable")[:n]
        n_heads = self.heads.shape[1]
        return [(int(i // n_heads), int(i % n_heads),
                 float(self.heads.flat[i])) for i in order]


def _check_token(name, token, vocab_size):
    if isinstance(token, bool) or not isinstance(token, (int, np.integer)) \
            or not 0 <= token < vocab_size:
        raise ValueError(f"{name}={token!r} is out of range: token ids must "
                         f"be integers in [0, {vocab_size}).")


def direct_logit_attribution(model, token_ids, answer, wrong=None,
                             position=-1):
    """Splits the answer's logit (minus a wrong answer's) over components.

    Args:
        model: A `GPT`.
        token_ids: One prompt: int (seq,) or (1, seq).
        answer: The token id whose logit is explained.
        wrong: Optional token id: explain `logit[answer] - logit[wrong]`.
        position: The position whose next-token logits are explained
            (default the last).

    Returns:
        An `Attribution`.

    Example:

    ```python
    attribution = direct_logit_attribution(model, ids, answer=42, wrong=7)
    attribution.top_heads(3)  # [(layer, head, effect), ...]
    ```
    """
    c = model.config
    token_ids = np.asarray(token_ids)
    if token_ids.ndim == 1:
        token_ids = token_ids[None]
    if token_ids.ndim != 2 or token_ids.shape[0] != 1:
        raise ValueError("direct_logit_attribution explains one prompt: "
                         f"token ids (seq,) or (1, seq); got shape "
                         f"{token_ids.shape}.")
    length = token_ids.shape[1]
    if isinstance(position, bool) or not -length <= position < length:
        raise ValueError(f"position={position!r} is out of range for a "
                         f"prompt of {length} tokens: [-{length}, "
                         f"{length - 1}].")
    _check_token("answer", answer, c.vocab_size)
    if wrong is not None:
        _check_token("wrong", wrong, c.vocab_size)
    last = c.n_layers - 1
    names = ["embed", "pos_embed",
             *(f"blocks.{i}.attn.result" for i in range(c.n_layers)),
             *(f"blocks.{i}.mlp_out" for i in range(c.n_layers)),
             f"blocks.{last}.resid_post"]
    names = [n for n in names if n in model.hook_names()]
    logits, cache = model.run_with_cache(token_ids, names=names)
    at = {name: ops.convert_to_numpy(value)[0, position].astype(np.float64)
          for name, value in cache.items()}

    w_u = ops.convert_to_numpy(
        ops.transpose(model.token_embedding.embeddings)
        if c.tie_embeddings else model.unembedding.kernel).astype(np.float64)
    direction = w_u[:, answer] - (0.0 if wrong is None else w_u[:, wrong])
    norm = model.final_norm
    gamma = ops.convert_to_numpy(norm.gamma).astype(np.float64)
    beta = ops.convert_to_numpy(norm.beta).astype(np.float64)
    stream = at[f"blocks.{last}.resid_post"]
    scale = np.sqrt(stream.var() + norm.epsilon)

    def effect(vectors):  # (..., d_model) -> (...)
        centred = vectors - vectors.mean(axis=-1, keepdims=True)
        return centred / scale @ (gamma * direction)

    heads = np.stack([effect(at[f"blocks.{i}.attn.result"])
                      for i in range(c.n_layers)])
    mlp = np.array([effect(at[f"blocks.{i}.mlp_out"])
                    for i in range(c.n_layers)])
    embed = effect(at["embed"] + at.get("pos_embed", 0.0))
    biases = sum(ops.convert_to_numpy(block.attention.out.bias)
                 .astype(np.float64) for block in model.blocks
                 if block.attention.out.bias is not None)
    rest = float(effect(biases + np.zeros_like(stream))
                 + beta @ direction)
    row = ops.convert_to_numpy(logits)[0, position]
    total = float(row[answer] - (0.0 if wrong is None else row[wrong]))
    return Attribution(heads, mlp, float(embed), rest, total)
