import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Under pytest-xdist each worker gets its share of the cores, before Keras
# loads torch: PyTorch's OpenMP threads spin while they wait, and with two
# workers each holding a pool as large as the machine the torch pass of
# tests/interpret took 411 s instead of 73 s (2 cores, other jobs running).
# JAX and TensorFlow showed no difference (169 s either way).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(
        1, len(os.sched_getaffinity(0))
        // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The start of a script run where keras, keras_gpt, jax, torch and KerasHub
# cannot be imported (as in TF Serving): what loads a SavedModel there.
KERAS_FREE = """
import importlib.abc, importlib.machinery, sys
BLOCKED = ("keras", "keras_gpt", "jax", "torch", "tf_keras", "keras_hub",
           "keras_nlp")

class Blocked(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        raise ImportError(f"{spec.name} cannot be imported here")

    def exec_module(self, module):
        pass

sys.meta_path.insert(0, Blocked())
"""


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Warns if `--dist loadgroup` did not group the tests: each
    xdist_group's module fixtures are then built on every worker (pytest
    9.2 ignores the `_nodeid` that pytest-xdist 3.8 sets; see
    tools/requirements-test.txt)."""
    if not getattr(config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in items
            if item.get_closest_marker("xdist_group")
            and "@" not in item.nodeid.rsplit("]", 1)[-1]]
    if lost:
        import warnings

        warnings.warn(pytest.PytestWarning(
            f"--dist loadgroup did not group {len(lost)} tests ({lost[0]}, "
            f"...): pytest {pytest.__version__} with this pytest-xdist "
            "ignores xdist_group; install tools/requirements-test.txt."))


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
