"""Head finders: which heads attend like a previous-token, duplicate-token
or induction head.

TransformerLens' `head_detector` definitions: a kind is a 0/1 pattern over
(query, key) pairs — the previous position; earlier positions holding the
same token; the position just after an earlier copy of the current token
(an induction head completes `... A B ... A` with `B`) — and a head's score
is the share of its attention that falls on that pattern. We average it
over the query positions where the pattern has a target (TransformerLens
divides by every query position, which caps an induction head on a
sequence repeated twice at about one half), so a perfect head scores 1
and the scores lie in [0, 1]. Measured on random token sequences repeated
twice, as in TransformerLens' induction-head demos.
"""

import numpy as np
from keras import ops

HEAD_KINDS = ("previous_token", "duplicate_token", "induction")


def repeated_random_tokens(vocab_size, half, n_sequences=8, seed=0):
    """`n_sequences` rows of `half` random ids followed by the same ids.

    Ids within a half do not repeat when the vocabulary allows it, so the
    only duplicates are the copies.
    """
    rng = np.random.default_rng(seed)
    if vocab_size >= half:
        first = np.stack([rng.permutation(vocab_size)[:half]
                          for _ in range(n_sequences)])
    else:
        first = rng.integers(0, vocab_size, (n_sequences, half))
    return np.concatenate([first, first], axis=1).astype("int32")


def detection_pattern(tokens, kind):
    """The (seq, seq) 0/1 lower-triangular pattern a `kind` head follows on
    one row of `tokens`."""
    if kind not in HEAD_KINDS:
        raise ValueError(f"Unknown head kind {kind!r}; expected one of "
                         f"{HEAD_KINDS}.")
    tokens = np.asarray(tokens)
    length = len(tokens)
    if kind == "previous_token":
        return np.eye(length, k=-1)
    same = np.tril(tokens[:, None] == tokens[None, :], k=-1).astype(float)
    if kind == "duplicate_token":
        return same
    after_copy = np.zeros_like(same)
    after_copy[:, 1:] = same[:, :-1]
    return np.tril(after_copy)


def head_scores(patterns, tokens, kind):
    """Scores (n_layers, n_heads) from attention patterns.

    Args:
        patterns: (n_layers, batch, n_heads, seq, seq) NumPy attention.
        tokens: (batch, seq) ids the patterns were computed on.
        kind: One of `HEAD_KINDS`.
    """
    masks = np.stack([detection_pattern(row, kind) for row in tokens])
    rows = masks.any(axis=-1)  # (batch, query): queries with a target
    if not rows.any():
        raise ValueError(
            f"The tokens hold nothing a {kind} head could attend to (no "
            "token repeats an earlier one); use repeated tokens.")
    on_target = np.einsum("lbhqk,bqk->lbhq", patterns, masks)
    per_row = np.where(rows[None, :, None], on_target, 0.0).sum(-1)
    return per_row.sum(1) / rows.sum()


def detect_heads(model, kind, token_ids=None, half=None, n_sequences=8,
                 seed=0):
    """How much each head behaves like a `kind` head, in [0, 1].

    Args:
        model: A `GPT`.
        kind: `"previous_token"`, `"duplicate_token"` or `"induction"`.
        token_ids: Optional (batch, seq) ids to measure on; default
            `repeated_random_tokens` of `half` ids each.
        half: Length of the random half (default: half the context, at
            most 64).
        n_sequences: Random sequences averaged over.
        seed: Seed of the random sequences.

    Returns:
        float64 (n_layers, n_heads).

    Example:

    ```python
    scores = detect_heads(model, "induction")
    layer, head = np.unravel_index(scores.argmax(), scores.shape)
    ```
    """
    if kind not in HEAD_KINDS:
        raise ValueError(f"Unknown head kind {kind!r}; expected one of "
                         f"{HEAD_KINDS}.")
    c = model.config
    if token_ids is None:
        most = c.context_length // 2
        half = min(most, 64) if half is None else half
        if isinstance(half, bool) or not isinstance(half, int) \
                or not 2 <= half <= most:
            raise ValueError(
                f"half={half!r} is out of range: twice it must fit the "
                f"context ({c.context_length}), so 2 <= half <= {most}.")
        token_ids = repeated_random_tokens(c.vocab_size, half, n_sequences,
                                           seed)
    token_ids = np.asarray(token_ids)
    if token_ids.ndim == 1:
        token_ids = token_ids[None]
    return head_scores(attention_patterns(model, token_ids), token_ids, kind)


def attention_patterns(model, token_ids):
    """Every layer's pattern, float64 (n_layers, batch, n_heads, seq, seq),
    from one pass that keeps nothing else."""
    names = [f"blocks.{i}.attn.pattern" for i in range(model.config.n_layers)]
    _, cache = model.run_with_cache(token_ids, names=names)
    return np.stack([ops.convert_to_numpy(cache[name]) for name in names]
                    ).astype(np.float64)
