"""Training on more than one device, with each backend's own engine.

- **JAX**: `keras.distribution`. Data parallelism is `DataParallel` (every
  device holds all weights and takes an equal part of each batch); model
  parallelism is `ModelParallel` over a (batch, model) `DeviceMesh` with the
  `LayoutMap` of `layout_map` (Megatron-style sharding, see `layout_rules`).
  XLA's SPMD partitioner inserts the communication; `fit()` is unchanged.
- **TensorFlow**: `tf.distribute.MirroredStrategy` for data parallelism.
  Model parallelism is refused: Keras 3.15's TensorFlow distribution backend
  is an unfinished DTensor prototype (its module is headed "DO NOT USE"),
  and MirroredStrategy replicates every variable.
- **PyTorch**: refused. Keras 3.15 implements `keras.distribution` for JAX
  only; torch `DistributedDataParallel` needs one process per device, each
  wrapping an `nn.Module` whose `backward()` all-reduces gradients, which
  Keras' one-process torch trainer (`fit()`) cannot drive.

Everything a request can get wrong (backend, mesh, heads, d_mlp, batch,
device count) is checked before anything is computed. Weights trained
sharded are ordinary Keras variables: `model.save`/`save_weights` and
`get_weights` gather them, so the files load in a one-device process, and
`unsharded_copy` re-lays a model out on one device for generation or export.

What is split and the checks of a mesh against a model are in
`keras_gpt.sharding`.
"""

import contextlib

from keras_gpt.sharding import (BATCH_AXIS, MODEL_AXIS, check_layout,
                                layout_map, require_counts)

def check_backend(backend, data_parallel=1, model_parallel=1):
    """Refuse, with the reason, what `backend` cannot distribute."""
    if data_parallel == 1 and model_parallel == 1:
        return
    if backend == "torch":
        raise ValueError(
            f"Data or model parallelism (data_parallel={data_parallel}, "
            f"model_parallel={model_parallel}) is not available on the torch "
            "backend: Keras 3.15's keras.distribution supports JAX only, and "
            "Keras' fit() cannot drive torch DistributedDataParallel. Use "
            "KERAS_BACKEND=jax (data and model parallel) or tensorflow (data "
            "parallel).")
    if backend == "tensorflow" and model_parallel > 1:
        raise ValueError(
            f"model_parallel={model_parallel} needs KERAS_BACKEND=jax: on "
            "TensorFlow, tf.distribute.MirroredStrategy only replicates the "
            "weights, and Keras 3.15's TensorFlow keras.distribution backend "
            "is an unfinished prototype. Data parallelism works on both.")
    if backend not in ("jax", "tensorflow"):
        raise ValueError(f"Parallel training is not supported on the "
                         f"{backend!r} backend; use jax or tensorflow.")


def _jax_devices(count):
    import keras

    found = keras.distribution.list_devices()
    if len(found) < count:
        kinds = sorted({d.split(":")[0] for d in found})
        raise ValueError(
            f"This layout needs {count} devices, but JAX sees {len(found)} "
            f"({'/'.join(kinds)}). On a machine without accelerators, set "
            f"JAX_NUM_CPU_DEVICES={count} in the environment before starting "
            f"to split the CPU into {count} devices (to try a layout; it is "
            "not faster).")
    return found[:count]


def _tensorflow_devices(count):
    """GPUs if there are any, else logical CPUs (the CPU is split into
    `count` logical devices if TensorFlow has not started yet)."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        found = [d.name for d in tf.config.list_logical_devices("GPU")]
        kind = "GPU"
    else:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            if len(tf.config.get_logical_device_configuration(cpu) or ()) \
                    < count:
                tf.config.set_logical_device_configuration(
                    cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:
            pass  # already started: whatever it has must do
        found = [d.name for d in tf.config.list_logical_devices("CPU")]
        kind = "CPU"
    if len(found) < count:
        why = "" if kind == "GPU" else (
            " and has already started, so the CPU can no longer be split "
            "into logical devices: ask for parallelism before anything else "
            "runs TensorFlow")
        raise ValueError(f"Data parallelism over {count} devices needs "
                         f"{count} {kind} devices, but TensorFlow has "
                         f"{len(found)}{why}.")
    return found[:count]


_STRATEGIES = {}


def _mirrored_strategy(devices):
    """One MirroredStrategy per device set and process: a second one would
    reuse the first one's collective instance keys, and TensorFlow then
    mixes up the two models' all-reduces ("Shape mismatch in the collective
    instance")."""
    import tensorflow as tf

    if devices not in _STRATEGIES:
        _STRATEGIES[devices] = tf.distribute.MirroredStrategy(list(devices))
    return _STRATEGIES[devices]


class Parallelism:
    """How a run spreads over `data_parallel` x `model_parallel` devices.

    Construction refuses what the backend cannot do; `check` checks a
    model and batch against the layout, then finds the devices (on
    TensorFlow without GPUs it splits the CPU into logical devices, which
    must happen before TensorFlow starts); `scope` is where the model is
    built, compiled and fitted.

    Args:
        data_parallel: Devices that each take an equal part of every batch.
        model_parallel: Devices each weight matrix is split over (JAX only).
        backend: Defaults to `keras.backend.backend()`.

    Example:

    ```python
    parallel = Parallelism(data_parallel=2, model_parallel=4)  # 8 devices
    parallel.check(config, batch_size=16)
    with parallel.scope(config):
        model = GPT(config)
        compile_for_pretraining(model, total_steps=1000)
        parallel.prepare(model)
        model.fit(dataset, ...)
    ```
    """

    def __init__(self, data_parallel=1, model_parallel=1, backend=None):
        import keras

        self.backend = backend or keras.backend.backend()
        require_counts(data_parallel, model_parallel)
        check_backend(self.backend, data_parallel, model_parallel)
        self.data_parallel = data_parallel
        self.model_parallel = model_parallel
        self.devices = None
        self._engine = None

    @property
    def size(self):
        return self.data_parallel * self.model_parallel

    @property
    def engine(self):
        """The name of what distributes the run (None on one device)."""
        if self.size == 1:
            return None
        if self.backend == "tensorflow":
            return "tf.distribute.MirroredStrategy"
        if self.model_parallel > 1:
            return "keras.distribution.ModelParallel"
        return "keras.distribution.DataParallel"

    def find_devices(self):
        """The devices to use; raises clearly if there are too few."""
        if self.devices is None and self.size > 1:
            find = (_jax_devices if self.backend == "jax"
                    else _tensorflow_devices)
            self.devices = find(self.size)
        return self.devices

    def check(self, config, batch_size=None):
        """Check the model and batch against the layout, and the devices."""
        check_layout(config, self.data_parallel, self.model_parallel,
                     batch_size)
        self.find_devices()

    @contextlib.contextmanager
    def scope(self, config):
        """Build, compile, load and fit the model inside this scope."""
        self.check(config)
        if self.size == 1:
            yield self
            return
        if self.backend == "tensorflow":
            self._engine = _mirrored_strategy(tuple(self.devices))
            with self._engine.scope():
                yield self
            return
        import keras

        if self.model_parallel == 1:
            self._engine = keras.distribution.DataParallel(
                devices=self.devices)
        else:
            mesh = keras.distribution.DeviceMesh(
                (self.data_parallel, self.model_parallel),
                (BATCH_AXIS, MODEL_AXIS), devices=self.devices)
            self._engine = keras.distribution.ModelParallel(
                layout_map=layout_map(config, mesh), batch_dim_name=BATCH_AXIS)
        with self._engine.scope():
            yield self

    def prepare(self, model):
        """Call after `compile`, inside `scope`, before `fit`.

        Works around Keras 3.15 under MirroredStrategy: before the first
        step it averages a distributed input batch ("MEAN") to build the
        loss symbolically, which turns int32 token ids into float32, and
        the embedding rightly refuses them. Building the compiled loss here,
        on one token, skips that path. No-op elsewhere.
        """
        if self.backend != "tensorflow" or self.size == 1:
            return
        import numpy as np

        ids = np.zeros((1, 1), "int32")
        model.compute_loss(x=ids, y=ids, y_pred=model(ids))

    def describe(self, model):
        """What the run directory records: engine, mesh, devices and the
        layout (mesh axes per dimension) of every model variable."""
        variables = {}
        for v in model.weights:
            axes = (None,) * len(v.shape)
            value = getattr(v, "value", None)
            spec = getattr(getattr(value, "sharding", None), "spec", None)
            if spec is not None:
                axes = tuple(spec) + (None,) * (len(v.shape) - len(spec))
            variables[v.path] = list(axes)
        return {"backend": self.backend, "engine": self.engine,
                "data_parallel": self.data_parallel,
                "model_parallel": self.model_parallel,
                "mesh": {BATCH_AXIS: self.data_parallel,
                         MODEL_AXIS: self.model_parallel},
                "devices": list(self.devices or []),
                "variables": variables}


def unsharded_copy(model):
    """The same GPT, weights gathered onto one device, outside any
    distribution: for generation, export or saving after sharded training.

    Args:
        model: A `keras_gpt.GPT`, sharded or not.

    Returns:
        A new `GPT` with equal weights, built with no `keras.distribution`
        active. (On TensorFlow, call it outside a `tf.distribute` scope.)
    """
    import keras

    from keras_gpt.model import GPT

    weights = model.get_weights()  # gathers every shard to the host
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        copy = GPT.from_config(model.get_config())
    finally:
        keras.distribution.set_distribution(previous)
    copy.set_weights(weights)
    return copy
