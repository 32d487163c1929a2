"""What a tensor holds right now, and device-side assertions, per backend."""

import keras
import numpy as np


def concrete_value(x):
    """`x` as a NumPy array when it holds values now (eager), else `None`.

    Inside `jax.jit`, `tf.function` or `torch.compile`, or for a symbolic
    `KerasTensor`, values are not known yet and `None` is returned.
    """
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, keras.KerasTensor):
        return None
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if isinstance(x, tf.Tensor) and not tf.executing_eagerly():
            return None
        if hasattr(x, "numpy") and not _is_tf_symbolic(x):
            return x.numpy()
        return None
    if backend == "jax":
        import jax

        if isinstance(x, jax.core.Tracer):
            return None
        return np.asarray(x)
    if backend == "torch":
        import torch

        if torch.compiler.is_compiling():
            return None
        if x.device.type != "cpu":
            # A device-to-host copy per step would stall an accelerator;
            # `check_token_ids` asserts on the device instead.
            return None
        return x.detach().numpy()
    return np.asarray(x)


def _is_tf_symbolic(x):
    import tensorflow as tf

    return isinstance(x, tf.Tensor) and not hasattr(x, "_numpy")


def assert_on_device(condition, message):
    """Fail asynchronously on an accelerator (torch only); else no-op."""
    if keras.backend.backend() == "torch":
        import torch

        if (isinstance(condition, torch.Tensor) and condition.device.type != "cpu"
                and not torch.compiler.is_compiling()):
            torch._assert_async(condition, message)
