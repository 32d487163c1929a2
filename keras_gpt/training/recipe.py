"""The standard pretraining recipe, in Keras' own parts.

AdamW (weight decay on matrices only), linear warmup then cosine decay,
global-norm gradient clipping, and next-token cross-entropy on logits.
"""

import keras

from keras_gpt.backend import training_jit_compile
from keras_gpt.losses import next_token_loss

# Short variable names (what AdamW's exclusion matches): biases, LayerNorm
# scales/offsets, and embedding tables are not decayed by default.
NO_DECAY = ("bias", "gamma", "beta")
EMBEDDINGS = ("embeddings",)


def make_optimizer(total_steps, learning_rate=6e-4, warmup_steps=None,
                   min_learning_rate_ratio=0.1, weight_decay=0.1, beta_1=0.9,
                   beta_2=0.95, clipnorm=1.0, decay_embeddings=False):
    """AdamW with warmup + cosine decay and clipping, as GPT-2/3 trained.

    Args:
        total_steps: Optimizer steps in the whole run (warmup included).
        learning_rate: Peak learning rate, reached after warmup.
        warmup_steps: Linear warmup from 0; default 10% of `total_steps`.
        min_learning_rate_ratio: Final learning rate as a fraction of the
            peak, reached at `total_steps`.
        weight_decay: Decoupled weight decay on matrices.
        beta_1, beta_2: Adam moments (GPT-3: 0.9, 0.95).
        clipnorm: Global gradient-norm clipping threshold (None to disable).
        decay_embeddings: Also decay W_E and position embeddings.

    Returns:
        A `keras.optimizers.AdamW`, not yet built.

    Example:

    ```python
    model.compile(optimizer=make_optimizer(total_steps=2000),
                  loss=next_token_loss())
    ```
    """
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be >= 1.")
    if warmup_steps is None:
        warmup_steps = total_steps // 10
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must be in "
                         f"[0, total_steps={total_steps}).")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate={learning_rate} must be > 0.")
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=total_steps - warmup_steps,
        alpha=min_learning_rate_ratio,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps)
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=weight_decay, beta_1=beta_1,
        beta_2=beta_2, global_clipnorm=clipnorm)
    excluded = NO_DECAY + (() if decay_embeddings else EMBEDDINGS)
    optimizer.exclude_from_weight_decay(var_names=list(excluded))
    return optimizer


def compile_for_pretraining(model, total_steps, jit_compile="auto",
                            **optimizer_kwargs):
    """`model.compile` with `make_optimizer` and `next_token_loss`.

    Args:
        model: A `GPT`.
        total_steps: See `make_optimizer`.
        jit_compile: Passed to `compile`; "auto" also compiles with XLA
            on TensorFlow without GPUs (faster here: see
            `keras_gpt.backend.training_jit_compile`).
        **optimizer_kwargs: Any other `make_optimizer` argument.

    Returns:
        The model, compiled.
    """
    model.compile(optimizer=make_optimizer(total_steps, **optimizer_kwargs),
                  loss=next_token_loss(),
                  jit_compile=training_jit_compile(jit_compile))
    return model
