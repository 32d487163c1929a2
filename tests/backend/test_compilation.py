"""`use_compilation_cache`: compiled programs written to the folder given,
unless the user named another; run in a fresh process (the setting is
process-wide, and TensorFlow reads it at its first compilation)."""

import json
import os
import subprocess
import sys

import keras

SCRIPT = r"""
import json, os, sys
import keras
from keras_gpt.backend import use_compilation_cache

used = use_compilation_cache(sys.argv[1])
backend = keras.backend.backend()
if backend == "jax":
    import jax
    jax.jit(lambda x: x * 2 + 1)(jax.numpy.ones(3)).block_until_ready()
elif backend == "tensorflow":
    import tensorflow as tf
    tf.function(lambda x: x * 2 + 1, jit_compile=True)(tf.ones(3)).numpy()
print(json.dumps({"used": used}))
"""


def _without_cache_settings(environ):
    """`environ` less a cache folder that an in-process `keras-gpt train`
    of an earlier test on this worker set (TensorFlow's lives in
    TF_XLA_FLAGS): the child would take it for the user's choice."""
    return {k: v for k, v in environ.items()
            if k not in ("TF_XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}


def _run(folder, **env):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder)], capture_output=True,
        text=True, timeout=300,
        env={**_without_cache_settings(os.environ),
             "TF_CPP_MIN_LOG_LEVEL": "2", **env})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["used"]


def test_programs_are_kept_in_the_folder_unless_the_user_chose(tmp_path):
    from keras_gpt.backend import use_compilation_cache

    backend = keras.backend.backend()
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    if backend == "torch":  # nothing is compiled: nothing to set
        assert use_compilation_cache(ours) is None and not ours.exists()
        return
    assert _run(ours) == str(ours)
    assert any(ours.iterdir())  # the program is on disk
    user = ({"JAX_COMPILATION_CACHE_DIR": str(theirs),
             "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
            if backend == "jax" else {"TF_XLA_FLAGS":
                  f"--tf_xla_persistent_cache_directory={theirs}"})
    other = tmp_path / "unused"
    assert _run(other, **user) == str(theirs)
    assert any(theirs.iterdir()) and not other.exists()
