import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


def load_tool(name):
    """tools/<name>.py imported as a module, to run in this process."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "tools", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def gradients(fn, inputs):
    """Gradients of the scalar `fn(*inputs)` with respect to each input, as
    NumPy arrays, on the current backend (inputs: NumPy arrays)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [np.asarray(g) for g in jax.grad(
            fn, argnums=tuple(range(len(inputs))))(*inputs)]
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(x) for x in inputs]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        return [g.numpy() for g in tape.gradient(value, tensors)]
    import torch

    tensors = [torch.tensor(x, requires_grad=True) for x in inputs]
    fn(*tensors).backward()
    return [t.grad.numpy() for t in tensors]
