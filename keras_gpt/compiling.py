"""`GPT.compile`: Keras' `compile`, choosing the fastest way where the user
did not (a mixin of `keras_gpt.GPT`; see `CompileMethods.compile`)."""

import keras

from keras_gpt.backend import (keep_step_memory,
                               traced_once_with_built_optimizer,
                               training_jit_compile, use_fused_optimizer)
# Also registers NextTokenLoss, which a saved GPT's compile config may name.
from keras_gpt.losses import same_computation


class CompileMethods:
    """`compile` and `compile_from_config` of `keras_gpt.GPT` (a mixin
    placed before `keras.Model`)."""

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None,
                metrics=None, weighted_metrics=None, run_eagerly=False,
                steps_per_execution=1, jit_compile="auto",
                auto_scale_loss=True):
        """`keras.Model.compile`, choosing the fastest way where you did not.

        Same arguments and meaning as Keras' `compile`. Four choices differ
        from Keras' own, all in speed only:

        - `jit_compile="auto"` means what `compile_for_pretraining` uses
          (`keras_gpt.backend.training_jit_compile`): XLA on TensorFlow
          on CPU too, where Keras' "auto" turns it off (1.24x faster for
          this model); on JAX and PyTorch, Keras' own choice. An explicit
          `True` or `False` (and `run_eagerly=True`) is kept.
        - `loss=keras.losses.SparseCategoricalCrossentropy(from_logits=
          True)` (any reduction; `ignore_class=None`, `axis=-1`) runs as
          `NextTokenLoss`: the same values and gradients, computed without
          a one-hot of the targets (`keras_gpt.losses.same_computation`).
          Any other loss is used as given.
        - On PyTorch, a Keras `Adam` or `AdamW` takes its steps on torch's
          fused CPU kernel (`keras_gpt.backend.torch_adam`): the same
          arithmetic, the same optimizer class and config.
        - On JAX on a CPU (Linux), glibc keeps the memory each step frees
          and JAX runs computations in the calling thread
          (`keras_gpt.backend.jax_memory`): XLA allocates every step's
          temporary buffer afresh, and glibc mapped and zero-filled it again
          each time (a 1.1-1.4x faster step). The process keeps its peak
          memory; `KERAS_GPT_KEEP_MEMORY=0` leaves both settings alone.

        `model.loss` and the compile config (`get_compile_config`, saved in
        a `.keras` file) keep what you passed, "auto" included, so a saved
        model reloads with your loss and compiles through this method again,
        on whichever backend loads it.

        On TensorFlow (outside a `tf.distribute` strategy, where Keras does
        it itself) the optimizer's variables are created here, as
        `compile_from_config` does: otherwise the first `fit` creates them
        while tracing its step, which TensorFlow must then trace again (2.2
        of 10.6 CPU seconds of the baby config's first step). Configure the
        optimizer (e.g. `exclude_from_weight_decay`) before `compile`.

        Example:

        ```python
        model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))   # fit runs NextTokenLoss
        model.compile(optimizer="adamw", loss=..., jit_compile=False)
        ```
        """
        fast_loss = same_computation(loss)
        super().compile(
            optimizer=optimizer,
            loss=loss if fast_loss is None else fast_loss,
            loss_weights=loss_weights, metrics=metrics,
            weighted_metrics=weighted_metrics, run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution,
            jit_compile=(jit_compile if run_eagerly
                         else training_jit_compile(jit_compile)),
            auto_scale_loss=auto_scale_loss)
        if loss is not None:
            self.loss = loss
        self._compile_config.config.update(loss=loss, jit_compile=jit_compile)
        if traced_once_with_built_optimizer(self.optimizer):
            self.optimizer.build(self.trainable_variables)
        use_fused_optimizer(self.optimizer)
        keep_step_memory()

    def compile_from_config(self, config):
        """Compiles from `get_compile_config()`'s dict (as `load_model`
        does): through `compile` above, then builds the optimizer so that
        its saved state can be loaded. Keras' own version skips models
        that define `compile`."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and self.built and not optimizer.built:
            optimizer.build(self.trainable_variables)
