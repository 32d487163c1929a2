"""Embedding geometry (the seed's §5): directions in W_E that mean something.

"woman - man ≈ queen - king": every token is a row of W_E, a point in
d_model dimensions, and differences of rows are directions. These tools ask
a model's own embeddings: which tokens lie nearest a vector (cosine),
`analogy` (b - a + c), and how far each token lies along a direction.

Tokens are given as text or ids and must be exactly one token of the
model's tokenizer (any kind: BPE, byte, char, GPT-2); anything else is an
error that names it. The arithmetic is NumPy on the weights (one pass over
the vocabulary), so it is the same on every backend.
"""

from collections import namedtuple

import numpy as np
from keras import ops

Scored = namedtuple("Scored", ["id", "token", "score"])
Scored.__doc__ = """A token with a score: a cosine, or a projection length.

Attributes:
    id: The token id.
    token: Its text (`tokenizer.decode([id])`), or None without a tokenizer.
    score: The cosine to the query (nearest tokens, analogies) or the
        length of the token's vector along the direction (projections).
"""


def embedding_matrix(model, space="embed"):
    """The model's token vectors as a NumPy array (vocab_size, d_model).

    Args:
        model: A `keras_gpt.GPT`.
        space: "embed" for the rows of W_E (the input embedding) or
            "unembed" for the columns of W_U (the output side; the same
            matrix when the model ties them).
    """
    if space == "embed" or (space == "unembed" and model.config.tie_embeddings):
        matrix = model.token_embedding.embeddings
        return np.asarray(ops.convert_to_numpy(matrix), np.float32)
    if space == "unembed":
        return np.asarray(ops.convert_to_numpy(model.unembedding.kernel),
                          np.float32).T
    raise ValueError(f"space must be 'embed' or 'unembed'; got {space!r}.")


def token_id(tokenizer, token, vocab_size=None):
    """The one id of `token` (text or id) in `tokenizer`.

    Args:
        tokenizer: Any `keras_gpt.tokenizers.Tokenizer` (or None for ids).
        token: A string that encodes to exactly one id, or an int id.
        vocab_size: The model's vocabulary, which the id must also fit.

    Raises:
        ValueError: the tokenizer does not have `token`, or it is several
            tokens, or the id is out of range. The message names the token,
            what it encodes to and the vocabulary size.
    """
    limits = [n for n in (getattr(tokenizer, "vocab_size", None), vocab_size)
              if n is not None]
    limit = min(limits) if limits else None
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
        if limit is None and token < 0:
            raise ValueError(f"Token id {token} is out of range: ids are >= 0.")
        if token < 0 or (limit is not None and token >= limit):
            raise ValueError(f"Token id {token} is out of range: ids run from "
                             f"0 to {limit - 1} (vocab_size={limit}).")
        return int(token)
    if not isinstance(token, str):
        raise TypeError(f"A token is a string or an int id; got {token!r}.")
    if tokenizer is None:
        raise ValueError(f"Token {token!r} is text: pass the tokenizer "
                         "(or give the id).")
    kind = tokenizer.kind
    try:
        ids = tokenizer.encode(token)
    except ValueError as error:  # e.g. a character a char tokenizer lacks
        raise ValueError(f"The {kind!r} tokenizer does not have token "
                         f"{token!r}: {error}") from None
    unknown = getattr(tokenizer, "unknown", None) == "replace" and \
        tokenizer.vocab_size - 1 in ids
    if unknown:
        raise ValueError(f"The {kind!r} tokenizer does not have token "
                         f"{token!r}: it encodes to the unknown id "
                         f"{tokenizer.vocab_size - 1}.")
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise ValueError(
            f"Token {token!r} is {len(ids)} tokens in this {kind!r} "
            f"tokenizer (ids {ids}, pieces {pieces}), not one"
            f"{_spacing_hint(tokenizer, token)}.")
    return token_id(None, ids[0], limit)


def _spacing_hint(tokenizer, token):
    """' (try ' king')' when the token with (or without) its leading space
    is one token: subword tokenizers usually keep a word's leading space in
    its token."""
    other = token[1:] if token.startswith(" ") else " " + token
    try:
        if other.strip() and len(tokenizer.encode(other)) == 1:
            return f" (try {other!r})"
    except ValueError:  # a char tokenizer without the space character
        pass
    return ""


def _vector(tokenizer, query, matrix):
    """A query (a token, or a vector of width d_model) -> (vector, ids)."""
    if isinstance(query, (str, int, np.integer)):
        i = token_id(tokenizer, query, len(matrix))
        return matrix[i], [i]
    if not isinstance(query, (np.ndarray, list, tuple)):
        query = ops.convert_to_numpy(query)  # a tensor or a Keras variable
    vector = np.asarray(query, np.float32)
    if vector.shape != (matrix.shape[1],):
        raise ValueError(f"A vector must have shape ({matrix.shape[1]},) "
                         f"(d_model); got {vector.shape}.")
    return vector, []


def _scored(tokenizer, ids, scores):
    return [Scored(int(i), tokenizer.decode([int(i)]) if tokenizer else None,
                   float(s)) for i, s in zip(ids, scores)]


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}.")


def nearest_tokens(model, query, tokenizer=None, k=10, exclude=(),
                   space="embed"):
    """The `k` tokens whose vectors have the largest cosine to `query`.

    Args:
        model: A `keras_gpt.GPT`.
        query: A vector (d_model,) or a token (text or id), which is then
            left out of the answer.
        tokenizer: Decodes the answer and encodes text tokens.
        k: How many tokens.
        exclude: Tokens (text or ids) to leave out.
        space: "embed" (W_E) or "unembed" (W_U).

    Returns:
        A list of `Scored(id, token, cosine)`, largest cosine first.

    Example:

    ```python
    nearest_tokens(model, " king", tokenizer, k=5)
    ```
    """
    _check_k(k)
    matrix = embedding_matrix(model, space)
    vector, own = _vector(tokenizer, query, matrix)
    skip = own + [token_id(tokenizer, t, len(matrix)) for t in exclude]
    length = np.linalg.norm(vector)
    if not np.isfinite(length) or length == 0:
        raise ValueError("The query vector has length 0 (or is not finite): "
                         "it has no direction.")
    norms = np.linalg.norm(matrix, axis=1)
    cosines = matrix @ vector / np.maximum(norms * length, 1e-12)
    cosines[skip] = -np.inf
    k = min(k, len(matrix) - len(set(skip)))
    best = np.argsort(-cosines, kind="stable")[:k]
    return _scored(tokenizer, best, cosines[best])


def direction(model, tokenizer, a, b, space="embed"):
    """E[b] - E[a]: the direction from token `a` to token `b`
    (`direction(model, tok, " man", " woman")` is "woman - man")."""
    matrix = embedding_matrix(model, space)
    ia, ib = (token_id(tokenizer, t, len(matrix)) for t in (a, b))
    return matrix[ib] - matrix[ia]


def analogy(model, tokenizer, a, b, c, k=5, space="embed"):
    """a is to b as c is to ?: the tokens nearest E[b] - E[a] + E[c].

    The inputs a, b and c are left out of the answer (as is usual: the
    nearest vector to b - a + c is often c itself).

    Args:
        model: A `keras_gpt.GPT`.
        tokenizer: The model's tokenizer.
        a, b, c: Tokens (text or ids), each exactly one token.
        k: How many answers.
        space: "embed" (W_E) or "unembed" (W_U).

    Returns:
        A list of `Scored(id, token, cosine)`, best first.

    Example:

    ```python
    analogy(model, tokenizer, " man", " king", " woman")  # " queen"?
    ```
    """
    matrix = embedding_matrix(model, space)
    ia, ib, ic = (token_id(tokenizer, t, len(matrix)) for t in (a, b, c))
    target = matrix[ib] - matrix[ia] + matrix[ic]
    return nearest_tokens(model, target, tokenizer, k=k,
                          exclude=(ia, ib, ic), space=space)


def project(model, tokenizer, along, tokens=None, k=10, space="embed"):
    """How far tokens lie along a direction: E[t] · u, u = along / |along|.

    Args:
        model: A `keras_gpt.GPT`.
        tokenizer: The model's tokenizer (or None with ids and vectors).
        along: A vector (d_model,), or a pair of tokens (a, b) meaning
            E[b] - E[a] (e.g. (" man", " woman")).
        tokens: The tokens to place (text or ids). None: the whole
            vocabulary, of which the `k` highest and `k` lowest are returned.
        k: With `tokens=None`, how many from each end.
        space: "embed" (W_E) or "unembed" (W_U).

    Returns:
        A list of `Scored(id, token, projection)`, highest first.

    Example:

    ```python
    project(model, tokenizer, (" man", " woman"), [" king", " queen"])
    ```
    """
    matrix = embedding_matrix(model, space)
    if isinstance(along, tuple) and len(along) == 2 and all(
            isinstance(t, (str, int, np.integer)) for t in along):
        vector = direction(model, tokenizer, *along, space=space)
    else:
        vector, _ = _vector(tokenizer, along, matrix)
    length = np.linalg.norm(vector)
    if not np.isfinite(length) or length == 0:
        raise ValueError("The direction has length 0 (or is not finite): "
                         "it points nowhere (two tokens with one vector?).")
    values = matrix @ (vector / length)
    if tokens is not None:
        ids = np.array([token_id(tokenizer, t, len(matrix)) for t in tokens],
                       np.int64)
        order = ids[np.argsort(-values[ids], kind="stable")]
    else:
        _check_k(k)
        ranked = np.argsort(-values, kind="stable")
        order = ranked if 2 * k >= len(ranked) else \
            np.concatenate([ranked[:k], ranked[-k:]])
    return _scored(tokenizer, order, values[order])
