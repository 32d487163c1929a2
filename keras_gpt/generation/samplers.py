"""Samplers: next-token logits -> one token id per row, inside compiled loops.

The seed's recipe: divide the logits by a temperature, softmax them into a
distribution, optionally keep only the k most likely tokens (top-k) or the
smallest set whose probability reaches p (nucleus, top-p), then draw. With
temperature 0 the draw becomes the argmax (greedy decoding).

Draws use the Gumbel-max trick, `argmax(logits / T + g)` with g standard
Gumbel noise, which samples exactly from `softmax(logits / T)`. The noise is a
counter-based hash of (row seed, position, candidate), written in integer
`keras.ops`, so it needs no random state in the loop, is the same on every
backend, and makes each row's draws depend only on its own seed and position:
never on its batch-mates, on padding, or on how many steps ran before.
"""

import dataclasses
import math

import numpy as np
from keras import ops

from keras_gpt.backend import argmax

# lowbias32 (C. Wellons' integer hash) multipliers, as signed int32.
_MUL1 = 0x7FEB352D
_MUL2 = 0x846CA68B - (1 << 32)
GOLDEN = 0x9E3779B9 - (1 << 32)  # also used by serving.py (same noise)


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """How the next token is chosen from the logits.

    Args:
        temperature: Divides the logits before the softmax; 0 is greedy
            (argmax). Must be >= 0.
        top_k: Keep only the k most likely tokens (ties at the k-th value
            are kept), in [0, vocab_size]; 0 (or None) is off, as in
            Hugging Face and the SavedModel signatures.
        top_p: Keep the smallest set of most likely tokens whose probability
            reaches p, in (0, 1]; 1 keeps all.
        min_p: Keep tokens whose probability is at least `min_p` times the
            most likely token's, in [0, 1].
        repetition_penalty: CTRL's penalty (> 0; 1 is none): logits of tokens
            already in the row (prompt included) are divided by it when
            positive and multiplied by it when negative.

    Example:

    ```python
    settings = SamplerSettings(temperature=0.8, top_k=40)
    settings.validate(vocab_size=50257)
    ```
    """

    temperature: float = 1.0
    top_k: int = None
    top_p: float = None
    min_p: float = None
    repetition_penalty: float = None

    def validate(self, vocab_size):
        """Raises ValueError naming the bad value and its limit."""
        t = self.temperature
        if not _is_real(t) or not t >= 0 or math.isinf(t):
            raise ValueError(f"temperature={t!r} is invalid: it must be a "
                             "finite number >= 0 (0 is greedy).")
        k = self.top_k
        if k is not None and (not is_int(k) or not 0 <= k <= vocab_size):
            raise ValueError(f"top_k={k!r} is out of range: it must be an "
                             f"integer in [0, vocab_size={vocab_size}] (0 is "
                             "off).")
        p = self.top_p
        if p is not None and (not _is_real(p) or not 0 < p <= 1):
            raise ValueError(f"top_p={p!r} is out of range: it must be in "
                             "(0, 1].")
        m = self.min_p
        if m is not None and (not _is_real(m) or not 0 <= m <= 1):
            raise ValueError(f"min_p={m!r} is out of range: it must be in "
                             "[0, 1].")
        r = self.repetition_penalty
        if r is not None and (not _is_real(r) or not 0 < r < math.inf):
            raise ValueError(f"repetition_penalty={r!r} is invalid: it must "
                             "be a finite number > 0 (1 is no penalty).")
        return self

    @property
    def greedy(self):
        return self.temperature == 0 or self.top_k == 1

    @property
    def key(self):
        """What fixes the traced program (the rest are runtime values)."""
        sampled = not self.greedy
        return (self.greedy,
                (self.top_k or None) if sampled else None,
                sampled and self.top_p is not None and self.top_p < 1,
                sampled and bool(self.min_p),
                self.repetition_penalty not in (None, 1))

    def values(self):
        """The runtime scalars, float32: [temperature, top_p, min_p, penalty]."""
        return np.array([self.temperature or 1.0, self.top_p or 1.0,
                         self.min_p or 0.0, self.repetition_penalty or 1.0],
                        "float32")


def is_int(x):
    """A Python or NumPy integer (not a bool)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_real(x):
    return isinstance(x, (int, float, np.integer, np.floating)) \
        and not isinstance(x, bool)


# Counter-based noise ----------------------------------------------------------

def _shift_right(x, n):
    """Logical right shift of int32 (the ops shift is arithmetic)."""
    return ops.right_shift(x, n) & ((1 << (32 - n)) - 1)


# The hash is written with Python's ^, & and * where every backend's
# tensors have them (TensorFlow's have no >>): the same ops inside XLA, and
# on PyTorch, which samples eagerly once per token, torch's own — the
# noise of one token is some 60 integer ops, and a Keras op there costs
# ~10 us more than torch's.
def mix(x):
    """A bijective 32-bit hash of an int32 tensor (wrapping arithmetic)."""
    x = x ^ _shift_right(x, 16)
    x = x * _MUL1
    x = x ^ _shift_right(x, 15)
    x = x * _MUL2
    return x ^ _shift_right(x, 16)


def _mix_np(x):
    x = np.asarray(x, np.uint64).astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(_MUL1)
    x ^= x >> np.uint32(15)
    x *= np.uint32(_MUL2 + (1 << 32))
    x ^= x >> np.uint32(16)
    return x


def row_keys(seed, rows):
    """int32 keys, one per row index in `rows`, from an integer seed."""
    seed = int(seed)
    low, high = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
    rows = np.asarray(rows, np.uint64)
    with np.errstate(over="ignore"):
        key = _mix_np(_mix_np(low) ^ np.uint32(high))
        keys = _mix_np(key ^ _mix_np(rows + np.uint64(0x9E3779B9)))
    return keys.view(np.int32)


def uniform_noise(keys, positions, n):
    """Uniform floats in (0, 1), shape (batch, n), from (key, position, j).

    Args:
        keys: int32 (batch,), one per row (see `row_keys`).
        positions: int32 (batch,), the position being sampled in each row.
        n: Number of values per row.
    """
    keys = ops.cast(keys, "int32")
    positions = ops.cast(positions, "int32")
    first = mix(keys ^ mix(positions * GOLDEN))
    second = mix(first + GOLDEN)
    j = ops.arange(n, dtype="int32")[None, :]
    bits = mix(mix(j ^ first[:, None]) ^ second[:, None])
    return (ops.cast(_shift_right(bits, 8), "float32") + 0.5) * (2.0 ** -24)


def gumbel_noise(keys, positions, n):
    """Standard Gumbel noise, shape (batch, n); see `uniform_noise`."""
    return -ops.log(-ops.log(uniform_noise(keys, positions, n)))


# Filtering and drawing --------------------------------------------------------

def filter_candidates(logits, top_k=None, top_p=None, min_p=None):
    """The tokens top-k, top-p and min-p keep, with their logits.

    Filters apply in that order, on (tempered) logits; a dropped candidate's
    value becomes -inf. The most likely token is always kept.

    Args:
        logits: float (batch, vocab).
        top_k: Python int, or None or 0 for off (fixes the shape).
        top_p: None, or a float / scalar tensor in (0, 1].
        min_p: None, or a float / scalar tensor in [0, 1].

    Returns:
        `(values, indices)`: (batch, n) candidate logits and their token ids,
        sorted by decreasing logit when `top_k` or `top_p` is given;
        `indices` is None when the candidates are the whole vocabulary in
        order (no sorting was needed).

    Example:

    ```python
    values, indices = filter_candidates(logits, top_k=50, top_p=0.9)
    ```
    """
    vocab = logits.shape[-1]
    indices = None
    values = logits
    if top_k and top_k < vocab:
        values, indices = ops.top_k(logits, top_k)
    elif top_p is not None:
        values, indices = ops.top_k(logits, vocab)
    if top_p is not None:
        probs = ops.softmax(values, axis=-1)
        before = ops.cumsum(probs, axis=-1) - probs
        # The most likely token always stays: its `before` is 0 < top_p.
        values = ops.where(before < top_p, values, float("-inf"))
    if min_p is not None:
        top = ops.max(values, axis=-1, keepdims=True)
        floor = top + ops.log(ops.maximum(ops.cast(min_p, "float32"), 1e-30))
        values = ops.where(values >= floor, values, float("-inf"))
    return values, indices


def penalize_repeats(logits, presence, penalty):
    """CTRL repetition penalty on the logits of tokens in `presence` (bool)."""
    penalized = ops.where(logits > 0, logits / penalty, logits * penalty)
    return ops.where(presence, penalized, logits)


def next_tokens(logits, key, values, keys, positions, presence=None):
    """One token id per row, int32 (batch,).

    Args:
        logits: float32 (batch, vocab), the next-token logits.
        key: `SamplerSettings.key` (static: what the program does).
        values: `SamplerSettings.values()` as a tensor (runtime scalars).
        keys: int32 (batch,) row keys; positions: int32 (batch,) positions
            being sampled (the noise depends on both, nothing else).
        presence: bool (batch, vocab) tokens already in each row, when the
            repetition penalty is on.
    """
    greedy, top_k, use_top_p, use_min_p, use_penalty = key
    logits = ops.cast(logits, "float32")
    if use_penalty:
        logits = penalize_repeats(logits, presence, values[3])
    if greedy:
        return argmax(logits)
    logits = logits / values[0]
    candidates, indices = filter_candidates(
        logits, top_k=top_k, top_p=values[1] if use_top_p else None,
        min_p=values[2] if use_min_p else None)
    noise = gumbel_noise(keys, positions, ops.shape(candidates)[-1])
    choice = argmax(candidates + noise)
    if indices is None:
        return choice
    chosen = ops.take_along_axis(indices, choice[:, None], axis=-1)
    return ops.cast(chosen[:, 0], "int32")
