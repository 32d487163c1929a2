"""The tuned lens: the logit lens with one learned affine map per layer.

A middle layer's residual stream need not speak the last layer's "language";
the tuned lens (Belrose et al. 2023) learns, for each block i, an affine map
A_i h + b_i (initialised to the identity, so it starts as the logit lens)
that makes the readout of the stream before block i as close as possible
to the model's final distribution, in KL divergence. It is a Keras model
trained with `fit()` and saved and loaded like any other.
"""

import keras
import numpy as np
from keras import ops

from keras_gpt.interpret.lens import (LensReading, check_top_k,
                                      residual_streams, stream_names)


@keras.saving.register_keras_serializable(package="keras_gpt")
class TunedLens(keras.Model):
    """One affine map per block, applied to the stream entering it.

    Args:
        n_layers: Blocks of the model the lens reads.
        d_model: Its residual stream width.

    Call arguments:
        streams: (batch, n_layers, seq, d_model): the stream before each
            block (`blocks.{i}.resid_pre`).

    Returns:
        The mapped streams, same shape: stream_i @ A_i + b_i.

    Example:

    ```python
    lens = train_tuned_lens(model, ids, epochs=3)
    reading = tuned_lens(model, lens, ids[:1])
    lens.save("lens.keras")                     # keras.models.load_model
    ```
    """

    def __init__(self, n_layers, d_model, **kwargs):
        super().__init__(**kwargs)
        self.n_layers = n_layers
        self.d_model = d_model
        self._unembedding = None
        self.build((None, n_layers, None, d_model))

    def build(self, input_shape=None):
        if self.built:
            return
        eye = np.broadcast_to(np.eye(self.d_model, dtype="float32"),
                              (self.n_layers, self.d_model, self.d_model))
        self.maps = self.add_weight(
            name="maps", shape=(self.n_layers, self.d_model, self.d_model),
            initializer=lambda shape, dtype=None: ops.convert_to_tensor(
                eye, dtype=dtype))
        self.biases = self.add_weight(
            name="biases", shape=(self.n_layers, self.d_model),
            initializer="zeros")
        self.built = True

    def call(self, streams):
        _check_streams(streams, self.n_layers, self.d_model)
        return (ops.einsum("blsd,lde->blse", streams, self.maps)
                + self.biases[None, :, None, :])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        """Mean KL(final || lens) over layers and tokens: `y` holds the
        model's final logits (batch, seq, vocab)."""
        if self._unembedding is None:
            raise ValueError("Train a TunedLens with train_tuned_lens(model, "
                             "...): the loss needs the model's unembedding.")
        gamma, beta, epsilon, w_u = (
            ops.convert_to_tensor(c) for c in self._unembedding)
        mean = ops.mean(y_pred, axis=-1, keepdims=True)
        variance = ops.var(y_pred, axis=-1, keepdims=True)
        normed = (y_pred - mean) / ops.sqrt(variance + epsilon) * gamma + beta
        log_q = ops.log_softmax(ops.matmul(normed, w_u), axis=-1)
        log_p = ops.log_softmax(ops.cast(y, "float32"), axis=-1)[:, None]
        kl = ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)
        return ops.mean(kl)

    def get_config(self):
        base = keras.layers.Layer.get_config(self)
        return {**base, "n_layers": self.n_layers, "d_model": self.d_model}


def _check_streams(streams, n_layers, d_model):
    shape = tuple(streams.shape)
    if len(shape) != 4 or shape[1] != n_layers or shape[3] != d_model:
        raise ValueError(
            f"A TunedLens for {n_layers} layers of width {d_model} reads "
            f"streams of shape (batch, {n_layers}, seq, {d_model}); got "
            f"{shape}.")


def _check_fits(lens, model):
    c = model.config
    if (lens.n_layers, lens.d_model) != (c.n_layers, c.d_model):
        raise ValueError(
            f"The lens is for {lens.n_layers} layers of width "
            f"{lens.d_model}; the model has {c.n_layers} of width "
            f"{c.d_model}.")


def _unembedding_constants(model):
    """The final LayerNorm's gamma, beta, epsilon and W_U, as constants:
    training the lens reads them but never updates or differentiates them."""
    norm = model.final_norm
    w_u = (ops.transpose(model.token_embedding.embeddings)
           if model.config.tie_embeddings else model.unembedding.kernel)
    return (ops.convert_to_numpy(norm.gamma), ops.convert_to_numpy(norm.beta),
            float(norm.epsilon), ops.convert_to_numpy(w_u))


def _streams_and_targets(model, token_ids, batch_size):
    """(streams before each block (N, n_layers, seq, d), final logits
    (N, seq, vocab)) as NumPy, computed batch by batch."""
    streams, targets = [], []
    for start in range(0, len(token_ids), batch_size):
        logits, stacked = residual_streams(
            model, token_ids[start:start + batch_size])
        streams.append(np.moveaxis(ops.convert_to_numpy(stacked)[:-1], 0, 1))
        targets.append(ops.convert_to_numpy(logits))
    return np.concatenate(streams), np.concatenate(targets)


def train_tuned_lens(model, token_ids, lens=None, epochs=5, batch_size=8,
                     learning_rate=1e-3, verbose=0):
    """Fits a `TunedLens` to `model` on `token_ids` with `fit()`.

    Args:
        model: A `GPT`.
        token_ids: int (N, seq) windows of text the model knows.
        lens: A `TunedLens` to continue training (default: a new one, at
            the identity).
        epochs, batch_size, verbose: Passed to `fit`.
        learning_rate: Adam's.

    Returns:
        The trained `TunedLens` (its `history` is fit's).
    """
    token_ids = np.asarray(token_ids)
    if token_ids.ndim != 2 or not len(token_ids):
        raise ValueError("token_ids must be (N, seq) windows with N >= 1; "
                         f"got shape {token_ids.shape}.")
    c = model.config
    lens = TunedLens(c.n_layers, c.d_model) if lens is None else lens
    _check_fits(lens, model)
    streams, targets = _streams_and_targets(model, token_ids, batch_size)
    object.__setattr__(lens, "_unembedding", _unembedding_constants(model))
    lens.compile(optimizer=keras.optimizers.Adam(learning_rate))
    lens.fit(streams, targets, epochs=epochs, batch_size=batch_size,
             verbose=verbose)
    return lens


def _read_through(model, lens, streams):
    """Logits of every row: mapped streams for the blocks, the output last."""
    mapped = ops.moveaxis(lens(ops.moveaxis(streams[:-1], 0, 1)), 1, 0)
    return model.unembed(ops.concatenate([mapped, streams[-1:]], axis=0))


def tuned_lens(model, lens, token_ids, top_k=5):
    """Reads `model` on `token_ids` through a trained `TunedLens`.

    Returns:
        A `LensReading` (as `logit_lens`): n_layers mapped rows and the
        model's output last.
    """
    check_top_k(top_k)
    _check_fits(lens, model)
    # Eager: the lens' weights may change between calls.
    _, streams = residual_streams(model, token_ids)
    logits = _read_through(model, lens, streams)
    return LensReading.from_logits(stream_names(model),
                                   ops.convert_to_numpy(logits), top_k)
