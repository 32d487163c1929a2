"""Rows of arrays (fine-tuning examples) -> `tf.data` batches for `fit`.

`shuffled_batches` (training: infinite, reshuffled each epoch, resumable)
and `ordered_batches` (evaluation: each row once, in order). The arrays
are held in memory (padded examples: `keras_gpt.data.examples`).
"""

from keras_gpt.data.windows import PARALLEL_READS, PREFETCH_BATCHES, \
    without_autotune


def _rows(arrays):
    import tensorflow as tf

    sizes = {int(a.shape[0]) for a in tf.nest.flatten(arrays)}
    if len(sizes) != 1:
        raise ValueError(f"The arrays have different numbers of rows: "
                         f"{sorted(sizes)}.")
    return sizes.pop()


def shuffled_batches(arrays, batch_size, seed=0, skip_batches=0):
    """An infinite `tf.data.Dataset` of batches of rows of `arrays`.

    Epoch `e` visits the rows in a random order keyed on `(seed, e)`, in
    `rows // batch_size` full batches (the rest of that order waits for
    another epoch's draw). Batch `i` depends only on `seed` and `i`, so
    `skip_batches=n` resumes at batch `n` without reading the first ones.

    Args:
        arrays: An array, or a tuple or dict of arrays with the same
            number of rows.
        batch_size: Rows per batch (at most the number of rows).
        seed: The order's seed.
        skip_batches: Batches already consumed.

    Returns:
        A dataset whose elements have `arrays`' structure, each with
        `batch_size` rows.

    Raises:
        ValueError: `batch_size` outside [1, rows], or arrays of different
            lengths.

    Example:

    ```python
    ds = shuffled_batches((tokens, weights), batch_size=8, seed=0)
    ```
    """
    import tensorflow as tf

    rows = _rows(arrays)
    if not 1 <= batch_size <= rows:
        raise ValueError(f"--batch-size {batch_size} must be in [1, {rows}]: "
                         f"there are {rows} training examples.")
    if skip_batches < 0:
        raise ValueError(f"skip_batches must be >= 0, got {skip_batches}.")
    per_epoch = rows // batch_size
    tensors = tf.nest.map_structure(tf.constant, arrays)

    def batch(index):
        epoch, k = index // per_epoch, index % per_epoch
        keys = tf.random.stateless_uniform(
            [rows], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        order = tf.argsort(keys)[k * batch_size:(k + 1) * batch_size]
        return tf.nest.map_structure(lambda t: tf.gather(t, order), tensors)

    indices = tf.data.Dataset.counter(start=skip_batches, dtype=tf.int64)
    return without_autotune(indices.map(
        batch, num_parallel_calls=PARALLEL_READS, deterministic=True
    ).prefetch(PREFETCH_BATCHES))


def ordered_batches(arrays, batch_size, steps=None):
    """A finite dataset: the rows in order, in batches of `batch_size` (the
    last one may be smaller), at most `steps` batches.

    Raises:
        ValueError: `batch_size` or `steps` < 1.
    """
    import tensorflow as tf

    _rows(arrays)
    if batch_size < 1 or (steps is not None and steps < 1):
        raise ValueError(f"batch_size={batch_size} and steps={steps} must be "
                         ">= 1.")
    dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)
    if steps is not None:
        dataset = dataset.take(steps)
    return without_autotune(dataset.prefetch(PREFETCH_BATCHES))
