"""Token id checks that hold on every backend: clear errors where values are
known, NaN where a compiled step can only flag them."""

import keras
from keras import ops

from keras_gpt.backend.values import assert_on_device, concrete_value


def check_token_ids(token_ids, vocab_size):
    """Raise clearly on ids that are not integers in [0, vocab_size).

    Values are checked whenever they are known (eager calls on every backend);
    under `jit` only the dtype can be checked, and out-of-range ids are mapped
    to `vocab_size` (not the silent wrap-around of negative indices): pass
    what is gathered with them through `nan_where_out_of_range`.
    """
    dtype = keras.backend.standardize_dtype(token_ids.dtype)
    if "int" not in dtype:
        raise TypeError(f"Token ids must be integers; got dtype {dtype}. "
                        "Cast them with keras.ops.cast(ids, 'int32').")
    values = concrete_value(token_ids)
    if values is not None and values.size:
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"Token id {bad} is out of range: ids must be in "
                             f"[0, {vocab_size}) for vocab_size={vocab_size}.")
        return token_ids
    in_range = ops.logical_and(token_ids >= 0, token_ids < vocab_size)
    assert_on_device(ops.all(in_range),
                     f"token ids out of range [0, {vocab_size})")
    return ops.where(in_range, token_ids, vocab_size)


def nan_where_out_of_range(gathered, token_ids, vocab_size):
    """`gathered` (indexed like `token_ids`, maybe with trailing axes) with
    NaN wherever `check_token_ids` mapped an id to `vocab_size`.

    A compiled gather does not fail on such an id: JAX's returns NaN, but
    TensorFlow's XLA gather clamps it to the last row, which would train
    silently on a wrong embedding or target. NaN makes it visible as a NaN
    loss on every backend. Ids whose values were checked pass unchanged.
    """
    if concrete_value(token_ids) is not None:
        return gathered
    invalid = token_ids >= vocab_size
    while len(invalid.shape) < len(gathered.shape):
        invalid = ops.expand_dims(invalid, -1)
    return ops.where(invalid, float("nan"), gathered)
