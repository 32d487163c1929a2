"""JAX on a CPU: each training step's buffers stay mapped (glibc's malloc).

XLA's CPU runtime allocates a step's temporary buffer (its intermediate
activations and gradients: 45 MiB for nanoGPT's baby config, 718 MiB for
the benchmark model) with `malloc` at every execution and frees it after.
glibc serves blocks above its mmap threshold (32 MiB at most) with a fresh
`mmap` and returns them with `munmap`, so the kernel maps and zero-fills
every page again at every step: 12,332 page faults and 33 ms of system CPU
in a 58 ms baby step, 192,163 and 335 ms in a 1.3 s step of the benchmark
model (2026-12-07, 2-core AMD EPYC, `tools/jax_memory.py`; `strace` showed
one 45 MiB mmap/munmap pair per step). TensorFlow's XLA allocates through
TensorFlow's allocator and PyTorch through its own: neither pays it.

`keep_step_memory` asks glibc (`mallopt`) to serve large blocks from its
heaps (`M_MMAP_MAX` 0) and never to give freed heap memory back
(`M_TRIM_THRESHOLD` -1), and asks JAX to run CPU computations in the
calling thread (`jax_cpu_enable_async_dispatch` off). A thread other than
the main one allocates from a glibc heap of at most 64 MiB and gets larger
blocks mapped afresh whatever the settings; the main thread's heap holds
any size. JAX reads the dispatch setting when it starts its CPU client (at
its first computation), so the `keras-gpt` training commands call this
first thing; `GPT.compile` calls it too, where the model exists and the
glibc part alone applies: enough for steps whose buffer fits 64 MiB (the
baby config), not for larger ones. In a script, call it before building
the model. The process keeps its peak memory after a step instead of
returning it, which a training loop reuses at the next step.
"""

import ctypes
import os
import platform

import keras

# Set to 0 to leave glibc and JAX's dispatch as they are.
ENV = "KERAS_GPT_KEEP_MEMORY"
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied = False


def keep_step_memory():
    """On JAX on a CPU with glibc (Linux), keeps freed memory for the next
    step (see the module docstring); elsewhere, or with the environment
    variable KERAS_GPT_KEEP_MEMORY=0, does nothing. Once per process.

    Returns:
        Whether the settings are on.
    """
    global _applied
    if _applied or not _applies():
        return _applied
    import jax

    # Before anything below starts JAX's CPU client, if nothing has yet.
    dispatch = "jax_cpu_enable_async_dispatch"
    was_async = jax.config.read(dispatch)
    jax.config.update(dispatch, False)
    libc = ctypes.CDLL("libc.so.6")
    if (jax.default_backend() != "cpu"
            or libc.mallopt(_M_MMAP_MAX, 0) != 1
            or libc.mallopt(_M_TRIM_THRESHOLD, -1) != 1):
        jax.config.update(dispatch, was_async)
        return False
    _applied = True
    return True


def _applies():
    return (keras.backend.backend() == "jax" and os.environ.get(ENV) != "0"
            and platform.system() == "Linux"
            and platform.libc_ver()[0] == "glibc")
