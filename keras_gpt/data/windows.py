"""Token ids -> `tf.data` windows `(x, y)` for `model.fit`.

`make_windows_dataset` (training, infinite, resumable) and
`make_eval_dataset` (a fixed, finite set) read windows of `context_length +
1` tokens at seeded random offsets of a 1-D token array, typically the
memory-map of `keras_gpt.data.load_tokens`: `x = window[:-1]`,
`y = window[1:]`.
"""

import atexit
import time

import numpy as np


class _ReadTracker:
    """Lets background `tf.data` reads settle before the interpreter exits.

    A `tf.data` thread that calls into Python while the interpreter shuts down
    waits forever for the GIL, so a script that exits right after taking a
    batch from a live iterator could hang. At exit we wait (at most
    `max_wait` s) until no window has been read for `quiet` s: by then the
    prefetch buffers are full and their threads idle.
    """

    def __init__(self, quiet=0.2, max_wait=3.0):
        self.last, self.quiet, self.max_wait, self.registered = 0.0, quiet, max_wait, False

    def register(self):
        if not self.registered:
            atexit.register(self.wait)
            self.registered = True

    def wait(self):
        deadline = time.monotonic() + self.max_wait
        while time.monotonic() < min(deadline, self.last + self.quiet):
            time.sleep(self.quiet / 4)


_READS = _ReadTracker()

# Fixed parallelism and buffers instead of tf.data's autotuner: reading a
# batch of windows is cheap, and deleting an autotuned iterator (when `fit`
# returns) waits for the autotuner's next wake-up, whose period doubles
# from 10 ms as the iterator lives: `fit` returned 5.0 s late after 5.2 s
# of steps (TF 2.21, `tools/tf_data_teardown.py`; see the README).
PARALLEL_READS = 2
PREFETCH_BATCHES = 2


def without_autotune(dataset):
    """`dataset` with tf.data's autotuner off (see `PARALLEL_READS`).

    Use fixed `num_parallel_calls` and `prefetch` sizes in such a pipeline.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _windows_dataset(tokens, context_length, batch_size, seed, batch_indices):
    """Maps batch indices to (x, y) windows at seeded random offsets."""
    import tensorflow as tf

    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}.")
    window = context_length + 1
    if len(tokens) < window:
        raise ValueError(
            f"Too few tokens for one window: {len(tokens)} tokens, but "
            f"context_length + 1 = {window} are needed."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    span = np.arange(window, dtype=np.int64)

    def read(offsets):  # NumPy: touches only the pages of a memmap it needs.
        _READS.last = time.monotonic()
        return tokens[offsets[:, None] + span].astype(np.int32)

    _READS.register()

    def make_batch(index):
        offsets = tf.random.stateless_uniform(
            [batch_size], seed=tf.stack([tf.constant(seed, tf.int64), index]),
            minval=0, maxval=len(tokens) - context_length, dtype=tf.int64,
        )
        windows = tf.numpy_function(read, [offsets], tf.int32, stateful=False)
        windows.set_shape([batch_size, window])
        return windows[:, :-1], windows[:, 1:]

    return without_autotune(batch_indices.map(
        make_batch, num_parallel_calls=PARALLEL_READS, deterministic=True
    ).prefetch(PREFETCH_BATCHES))


def make_windows_dataset(tokens, context_length, batch_size, seed=0, skip_batches=0):
    """An infinite `tf.data.Dataset` of training batches `(x, y)`.

    Batch `i` holds `batch_size` windows of `context_length + 1` tokens at
    offsets drawn uniformly from `[0, len(tokens) - context_length - 1]` by a
    stateless generator keyed on `(seed, i)`; `x = window[:-1]`,
    `y = window[1:]`, both int32 of shape `(batch_size, context_length)`. So
    the same seed gives the same stream, and `skip_batches=n` starts at batch
    `n` of that stream (resuming a run) without reading batches `0..n-1`.
    Windows are gathered by `tf.numpy_function` from `tokens`, which may be a
    memory-map: only the windows read are loaded. The dataset therefore
    holds a Python function: it feeds `model.fit` on every backend but
    cannot be serialized into a SavedModel, and an exiting interpreter waits
    (up to 3 s) for its background reads to go idle, since a `tf.data`
    thread calling Python during shutdown would hang the exit.

    Args:
        tokens: 1-D array of ids, e.g. a `load_tokens` memmap.
        context_length: tokens per example.
        batch_size: examples per batch.
        seed: integer seed of the offsets.
        skip_batches: number of batches already consumed.

    Raises:
        ValueError: fewer than `context_length + 1` tokens.
    """
    import tensorflow as tf

    if skip_batches < 0:
        raise ValueError(f"skip_batches must be >= 0, got {skip_batches}.")
    indices = tf.data.Dataset.counter(start=skip_batches, dtype=tf.int64)
    return _windows_dataset(tokens, context_length, batch_size, seed, indices)


def make_eval_dataset(tokens, context_length, batch_size, steps, seed=0):
    """A finite dataset of `steps` batches `(x, y)`, the same on every call.

    Uses the offsets of `make_windows_dataset(tokens, ..., seed)`'s first
    `steps` batches, so evaluations at different times see the same windows.

    Raises:
        ValueError: fewer than `context_length + 1` tokens, or `steps < 1`.
    """
    import tensorflow as tf

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    indices = tf.data.Dataset.range(steps)
    return _windows_dataset(tokens, context_length, batch_size, seed, indices)
