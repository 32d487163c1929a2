"""Compiled programs kept on disk, so a second run does not compile again.

A small model's run spends more of its start-up compiling than training
at first: nanoGPT's CPU "baby" config under JAX compiled for 4.7 s while
building the model (one program per initializer shape), 4-6 s for the
first training step and 3 s for the first sampled continuations
(`tools/train_overhead.py`, 2 shared cores). With XLA's programs kept on
disk, the same run started again took 26.0 s instead of 44.1 s for 200
steps.
"""

import os

import keras

# Bytes the JAX cache may hold; the least recently used programs go first.
JAX_CACHE_BYTES = 2 ** 30
_TF_FLAG = "--tf_xla_persistent_cache_directory"


def use_compilation_cache(directory):
    """Keep XLA-compiled programs in `directory` across processes.

    - jax: JAX's persistent compilation cache (every program, however
      quick to compile; at most `JAX_CACHE_BYTES`, least recently used
      first out), unless a cache directory is already set (by you, with
      `JAX_COMPILATION_CACHE_DIR` or `jax.config`), which then stands.
    - tensorflow: TensorFlow's persistent XLA cache
      (`TF_XLA_FLAGS=--tf_xla_persistent_cache_directory`), unless
      `TF_XLA_FLAGS` already names one. TensorFlow reads the flag once, at
      its first XLA compilation: call this before it.
    - torch: nothing (it does not compile unless asked to).

    A cache is trusted code: keep it in a folder only you can write.

    Args:
        directory: A folder (created when the first program is written).

    Returns:
        The directory in use, or None (PyTorch).
    """
    directory = os.fspath(directory)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if not jax.config.jax_compilation_cache_dir:
            jax.config.update("jax_compilation_cache_dir", directory)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
            if jax.config.jax_compilation_cache_max_size == -1:
                jax.config.update("jax_compilation_cache_max_size",
                                  JAX_CACHE_BYTES)
        return jax.config.jax_compilation_cache_dir
    if backend == "tensorflow":
        flags = os.environ.get("TF_XLA_FLAGS", "")
        if _TF_FLAG not in flags:
            os.environ["TF_XLA_FLAGS"] = f"{flags} {_TF_FLAG}={directory}"\
                .strip()
            return directory
        return flags.split(_TF_FLAG + "=", 1)[1].split()[0]
    return None
