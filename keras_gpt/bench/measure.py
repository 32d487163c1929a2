"""What the benchmark measures with: timers, memory probes, matmul peak.

Kept apart from the implementations being timed so that every one of them
is measured the same way.
"""

import os
import threading

import numpy as np

from keras_gpt.backend.timing import interleaved_best, time_call  # noqa: F401


def _rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MemoryProbe:
    """Peak memory added while a block runs.

    On CPU: the process' resident set, sampled every 2 ms by a thread,
    minus its size when the block started (what building and the first
    steps of one implementation add). On a GPU: the framework's own peak
    counter of the device ('device' tells which one).

    Example:

    ```python
    with MemoryProbe("torch", "cuda") as probe:
        train_one_step()
    probe.peak_bytes
    ```
    """

    def __init__(self, framework, device="cpu"):
        self.framework = framework
        self.device = device
        self.peak_bytes = None
        self.kind = "rss" if device == "cpu" else f"{framework} device peak"

    def __enter__(self):
        if self.device != "cpu":
            self._device_reset()
            return self
        self._base = _rss_bytes()
        self._peak = self._base
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.002):
                self._peak = max(self._peak, _rss_bytes())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device != "cpu":
            self.peak_bytes = self._device_peak()
            return False
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self._peak, _rss_bytes()) - self._base
        return False

    def _device_reset(self):
        if self.framework == "torch":
            import torch

            torch.cuda.reset_peak_memory_stats()
        elif self.framework == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")
        else:  # jax: the peak cannot be reset; report its growth
            self._base = self._device_peak()

    def _device_peak(self):
        if self.framework == "torch":
            import torch

            return torch.cuda.max_memory_allocated()
        if self.framework == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"]
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use", 0)
        return peak - getattr(self, "_base", 0)


def matmul_peak(backend, accelerator, dtype="float32", size=2048, repeats=5):
    """Best matmul GFLOP/s of NumPy and of `backend` (size^3, best of runs).

    On CPU both count (NumPy's BLAS and the backend's own: XLA, oneDNN or
    MKL may differ by 2x; on torch both its matmul (MKL) and the oneDNN
    product `keras_gpt.backend.linear` uses); on an accelerator only the
    backend's own, in `dtype` (float32 or bfloat16), on the device.

    Returns:
        dict: GFLOP/s per source and "best".
    """
    flops = 2.0 * size ** 3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    results = {}
    if not accelerator:
        results["numpy"] = flops / _best(lambda: a @ b, repeats) / 1e9
    results[backend] = flops / _best(_backend_matmul(backend, a, b, dtype),
                                     repeats) / 1e9
    onednn = _torch_onednn_matmul(backend, accelerator, dtype, a, b)
    if onednn is not None:  # what keras_gpt's projections use on torch CPU
        results["torch_onednn"] = flops / _best(onednn, repeats) / 1e9
    results["best"] = max(results.values())
    return results


def _backend_matmul(backend, a, b, dtype):
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        x, y = (jnp.asarray(m, dtype=dtype) for m in (a, b))
        f = jax.jit(jnp.matmul)
        return lambda: f(x, y).block_until_ready()
    if backend == "tensorflow":
        import tensorflow as tf

        x, y = (tf.cast(tf.constant(m), dtype) for m in (a, b))
        f = tf.function(tf.linalg.matmul)
        return lambda: f(x, y).numpy()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, y = (torch.from_numpy(m).to(device, getattr(torch, dtype))
            for m in (a, b))

    def run():
        out = x @ y
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def _torch_onednn_matmul(backend, accelerator, dtype, a, b):
    from keras_gpt import backend as backend_lib
    from keras_gpt.backend import pytorch

    if backend != "torch" or accelerator or dtype != "float32" or \
            not pytorch.onednn_linear_available():
        return None
    import torch

    x, y = torch.from_numpy(a), torch.from_numpy(b)
    return lambda: backend_lib.linear(x, y)


def _best(fn, repeats):
    fn()
    return min(time_call(fn)[0] for _ in range(repeats))


def machine():
    """A short description of where the benchmark ran."""
    import platform

    described = {"processor": _cpu_name(), "cpus": os.cpu_count(),
                 "python": platform.python_version()}
    gpu = accelerator_name()
    if gpu:
        described["accelerator"] = gpu
    return described


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def accelerator_name():
    """The GPU the Keras backend sees, or None on CPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return None if device.platform == "cpu" else device.device_kind
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        return tf.config.experimental.get_device_details(gpus[0]).get(
            "device_name", "GPU")
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
