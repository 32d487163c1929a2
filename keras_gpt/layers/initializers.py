"""GPT-2's N(mean, stddev) weights, drawn on the host.

`HostRandomNormal` is `keras.initializers.RandomNormal` whose values come
from NumPy's generator keyed on the initializer's integer seed (which an
unseeded Keras initializer draws from Python's `random` when it is made, so
`keras.utils.set_random_seed` fixes it). Why: under JAX every Keras random
draw is a compiled XLA program per shape, each 0.15-0.2 s to compile on a
CPU: building nanoGPT's "baby" GPT with an empty compilation cache took 1.73
s with `RandomNormal` and 0.30 s with this (`tools/train_overhead.py`), and
`keras.models.load_model` pays it too (its build draws values the load then
replaces). NumPy draws them in milliseconds, with no program, and the same
values on every backend for a seed.
"""

import keras
import numpy as np

from keras_gpt.backend import concrete_value


@keras.saving.register_keras_serializable(package="keras_gpt")
class HostRandomNormal(keras.initializers.RandomNormal):
    """`keras.initializers.RandomNormal`, drawn by NumPy on the host.

    Same arguments, config and seed semantics: an integer (or unseeded)
    initializer gives the same values on every call, and the same values on
    JAX, TensorFlow and PyTorch. A `keras.random.SeedGenerator` seed, a
    tensor mean/stddev, or a call inside a traced function (Keras' sharded
    initialization of a large variable under a JAX distribution, where
    NumPy's values would be one constant in the program) takes
    `RandomNormal`'s own path.

    Example:

    ```python
    keras.utils.set_random_seed(0)
    w = HostRandomNormal(stddev=0.02)((768, 2304))
    ```
    """

    def __call__(self, shape, dtype=None):
        dtype = keras.backend.standardize_dtype(dtype)
        plain = (isinstance(self.seed, int)
                 and all(isinstance(v, (int, float))
                         for v in (self.mean, self.stddev))
                 and dtype in ("float16", "bfloat16", "float32", "float64")
                 and concrete_value(keras.ops.zeros(())) is not None)
        if not plain:
            return super().__call__(shape, dtype=dtype)
        drawn = np.float64 if dtype == "float64" else np.float32
        values = np.random.default_rng(self.seed).standard_normal(
            tuple(shape), dtype=drawn)
        values = values * drawn(self.stddev) + drawn(self.mean)
        if dtype in ("float32", "float64"):
            return values
        return keras.ops.cast(values, dtype)  # float16, bfloat16
