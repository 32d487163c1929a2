"""The standard pretraining recipe, in Keras' own parts.

AdamW (weight decay on matrices only), linear warmup then cosine decay,
global-norm gradient clipping, and next-token cross-entropy on logits.
"""

import math

import keras
from keras import ops

from keras_gpt.backend import training_jit_compile
from keras_gpt.losses import next_token_loss

# Short variable names (what AdamW's exclusion matches): biases, LayerNorm
# scales/offsets, and embedding tables are not decayed by default.
NO_DECAY = ("bias", "gamma", "beta")
EMBEDDINGS = ("embeddings",)


def make_optimizer(total_steps, learning_rate=6e-4, warmup_steps=None,
                   min_learning_rate_ratio=0.1, weight_decay=0.1, beta_1=0.9,
                   beta_2=0.95, clipnorm=1.0, decay_embeddings=False,
                   replans=()):
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
        replans: `(from_step, new_total_steps)` pairs, in order: from each
            `from_step` the schedule is re-planned to end at
            `new_total_steps` (`ReplannedCosine`), as `keras-gpt train
            --resume --steps N` does when N differs from the plan.

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
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate={learning_rate} must be a finite "
                         "number > 0.")
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=total_steps - warmup_steps,
        alpha=min_learning_rate_ratio,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps)
    final = learning_rate * min_learning_rate_ratio
    for from_step, new_total in replans:
        schedule = ReplannedCosine(schedule, from_step, new_total, final)
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=weight_decay, beta_1=beta_1,
        beta_2=beta_2, global_clipnorm=clipnorm)
    excluded = NO_DECAY + (() if decay_embeddings else EMBEDDINGS)
    optimizer.exclude_from_weight_decay(var_names=list(excluded))
    return optimizer


@keras.saving.register_keras_serializable(package="keras_gpt")
class ReplannedCosine(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule re-planned at a step: `schedule` before `from_step`, then
    a half cosine from the rate `schedule` gives at `from_step` to
    `final_learning_rate` at `total_steps`, and that rate after.

    So a run extended after it finished (its rate already at the final
    10% of the peak) goes on at that rate; a run whose steps change before
    the end decays from where it is to the final rate at the new end. The
    rate is continuous at `from_step`, and steps before it are unchanged, so
    a checkpoint resumes exactly.

    Args:
        schedule: The `LearningRateSchedule` until `from_step`.
        from_step: The step of the re-plan (the checkpoint's step).
        total_steps: The new last step (> `from_step`).
        final_learning_rate: The rate at `total_steps`.

    Example:

    ```python
    first = keras.optimizers.schedules.CosineDecay(0.0, 900, alpha=0.1,
                                                  warmup_target=2e-3,
                                                  warmup_steps=100)
    longer = ReplannedCosine(first, from_step=1000, total_steps=2000,
                             final_learning_rate=2e-4)
    ```
    """

    def __init__(self, schedule, from_step, total_steps,
                 final_learning_rate):
        if not 0 <= from_step < total_steps:
            raise ValueError(f"total_steps={total_steps} must be more than "
                             f"from_step={from_step} (>= 0).")
        self.schedule = schedule
        self.from_step = int(from_step)
        self.total_steps = int(total_steps)
        self.final_learning_rate = float(final_learning_rate)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        start = ops.cast(self.schedule(self.from_step), "float32")
        progress = ops.clip((step - self.from_step)
                            / (self.total_steps - self.from_step), 0.0, 1.0)
        final = self.final_learning_rate
        cosine = final + (start - final) * 0.5 * (1.0 + ops.cos(
            math.pi * progress))
        before = ops.cast(self.schedule(step), "float32")
        return ops.where(step < self.from_step, before, cosine)

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(
                    self.schedule),
                "from_step": self.from_step, "total_steps": self.total_steps,
                "final_learning_rate": self.final_learning_rate}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(
            config["schedule"])
        return cls(**config)


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
