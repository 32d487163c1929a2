"""The pretraining loss: cross-entropy of the next token, from logits.

It sits beside the model (below training) because a compiled GPT saved
with it names it in its compile config: `import keras_gpt` registers it,
so `keras.models.load_model` finds it.
"""

import keras
from keras import ops

from keras_gpt.backend import check_token_ids, token_cross_entropy


@keras.saving.register_keras_serializable(package="keras_gpt")
class NextTokenLoss(keras.losses.Loss):
    """Cross-entropy of the next token: logsumexp(logits) - logits[target].

    The value of `keras.losses.SparseCategoricalCrossentropy(from_logits=
    True)` (and the same gradient, softmax - one-hot), computed without a
    one-hot of the targets (`keras_gpt.backend.token_cross_entropy`: on
    JAX and TensorFlow without a log-softmax of the whole (batch, seq,
    vocab) tensor; on PyTorch with a fused log-softmax; on TensorFlow and
    PyTorch, the gradient written out). Whole training step against Keras'
    loss (6 layers, d_model 384, vocab 8192, batch 8 x 256;
    `tools/ab_speed.py loss`): JAX 1.04x (AVX-512 EPYC); PyTorch 1.18x,
    TensorFlow with XLA 1.01x (AVX2 EPYC).

    Args:
        name: The loss's name.
        reduction: As for any Keras loss (default: mean over tokens).

    Call arguments:
        y_true: int next-token ids (batch, seq), in [0, vocab_size): an id
            outside raises `ValueError` naming it and the limit when its
            value is known (eager calls); inside a compiled step its
            token's loss is NaN (`nan_where_out_of_range`).
        y_pred: logits (batch, seq, vocab_size).

    Example:

    ```python
    model.compile(optimizer="adamw", loss=NextTokenLoss())
    ```
    """

    def __init__(self, name="next_token_loss",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        if len(y_true.shape) == len(logits.shape) and y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, -1)  # (..., 1) ids, as Keras takes
        # Keras hands the loss float targets; see `check_token_ids`.
        targets = check_token_ids(ops.cast(y_true, "int32"),
                                  ops.shape(logits)[-1])
        return token_cross_entropy(logits, targets)


def next_token_loss():
    """Cross-entropy between the logits and the next token ids."""
    return NextTokenLoss()


def same_computation(loss):
    """A `NextTokenLoss` that computes what `loss` computes, or None.

    `loss` qualifies when it is exactly
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)` (not a
    subclass), or its serialized dict, with `ignore_class=None`, `axis=-1`
    and the default float32 dtype; its name and reduction are kept (every
    reduction Keras has; sample weights are applied by `Loss.__call__`,
    which both classes share). Anything else (strings, which Keras maps to
    the probabilities form, `from_logits=False`; functions; other losses;
    lists and dicts of losses) gives None.

    Example:

    ```python
    same_computation(keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="sum"))     # NextTokenLoss, "sum"
    same_computation("mse")                      # None
    ```
    """
    if isinstance(loss, dict) and "class_name" in loss:
        try:
            loss = keras.losses.get(loss)
        except (TypeError, ValueError):
            return None
    if type(loss) is not keras.losses.SparseCategoricalCrossentropy:
        return None
    axis = getattr(loss, "_fn_kwargs", {}).get("axis", -1)
    if (loss.from_logits is not True or loss.ignore_class is not None
            or axis != -1 or loss.dtype != "float32"):
        return None
    return NextTokenLoss(name=loss.name, reduction=loss.reduction)
