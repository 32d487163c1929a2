"""GPT-2's N(mean, stddev) weights, drawn on the host under JAX.

`HostRandomNormal` is `keras.initializers.RandomNormal` whose values, on
JAX, come from NumPy's generator keyed on the initializer's integer seed
(which an unseeded Keras initializer draws from Python's `random` when it
is made, so `keras.utils.set_random_seed` fixes it). Why: under JAX every
Keras random draw is a compiled XLA program per shape: building nanoGPT's
"baby" GPT with an empty compilation cache took 1.73 s with `RandomNormal`
and 0.30 s with this (`tools/train_overhead.py`), and
`keras.models.load_model` pays it too (its build draws values the load then
replaces). TensorFlow and PyTorch keep Keras' own draw
(`keras_gpt.backend.draws_weights_on_host` says why).
"""

import keras
import numpy as np

from keras_gpt.backend import concrete_value, draws_weights_on_host


@keras.saving.register_keras_serializable(package="keras_gpt")
class HostRandomNormal(keras.initializers.RandomNormal):
    """`keras.initializers.RandomNormal`, drawn by NumPy on JAX.

    Same arguments, config and seed semantics: an integer (or unseeded)
    initializer gives the same values on every call. Keras' own draw serves
    TensorFlow and PyTorch, a `keras.random.SeedGenerator` seed, a tensor
    mean/stddev, and a call inside a traced function (Keras' sharded
    initialization of a large variable under a JAX distribution, where
    NumPy's values would be one constant in the program).

    Example:

    ```python
    keras.utils.set_random_seed(0)
    w = HostRandomNormal(stddev=0.02)((768, 2304))
    ```
    """

    def __call__(self, shape, dtype=None):
        dtype = keras.backend.standardize_dtype(dtype)
        plain = (draws_weights_on_host() and isinstance(self.seed, int)
                 and all(isinstance(v, (int, float))
                         for v in (self.mean, self.stddev))
                 and dtype in ("float16", "bfloat16", "float32", "float64")
                 and concrete_value(keras.ops.zeros(())) is not None)
        if not plain:
            return super().__call__(shape, dtype=dtype)
        drawn = np.float64 if dtype == "float64" else np.float32
        values = np.random.default_rng(self.seed).standard_normal(
            tuple(shape), dtype=drawn)
        values *= drawn(self.stddev)  # in place: no second array
        values += drawn(self.mean)
        if dtype in ("float32", "float64"):
            return values
        return keras.ops.cast(values, dtype)  # float16, bfloat16
