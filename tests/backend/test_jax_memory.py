"""`keras_gpt.backend.jax_memory`: on JAX on a CPU, an XLA program's large
temporary buffer is no longer mapped afresh (page faults) at every run."""

import json
import os
import platform
import subprocess
import sys

import keras
import pytest

# Runs one program whose product (4096 x 4096 float32, 64 MiB), read twice,
# is a temporary buffer, twice, then three more times, and prints the fewest
# page faults of those three (this project's machines page out memory they see
# idle, DAMON's "pageout" scheme: on a loaded machine a kept buffer can be
# paged out between two runs, and one run then faults it in again); with
# "keep", calls keep_step_memory() first, as the training commands do.
SCRIPT = """
import json, resource, sys
import keras
from keras_gpt.backend import jax_memory
kept = jax_memory.keep_step_memory() if sys.argv[1] == "keep" else False
import jax, jax.numpy as jnp
a = jnp.ones((4096, 128), "float32")
f = jax.jit(lambda a: (lambda y: y.sum() + y.max())(jnp.dot(a, a.T)))
for _ in range(2):
    f(a).block_until_ready()
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    total = float(f(a))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
faults = min(faults)
print(json.dumps({"kept": kept, "faults": faults, "total": total,
                  "async": jax.config.read("jax_cpu_enable_async_dispatch")}))
"""


def _jax_cpu_glibc_only():
    if keras.backend.backend() != "jax":
        pytest.skip("the setting is for JAX (XLA:CPU allocates each run's "
                    "buffer with malloc); runs in its own processes, once")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt: Linux with glibc only")


def _run(mode, **env):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
        timeout=300, env={**{k: v for k, v in os.environ.items()
                             if k != "KERAS_GPT_KEEP_MEMORY"},
                          "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                          **env})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_large_buffer_stays_mapped():
    _jax_cpu_glibc_only()
    default = _run("default")
    kept = _run("keep")
    # 64 MiB is 16,384 pages: mapped afresh by default, kept with it.
    assert not default["kept"] and default["faults"] > 8000, default
    assert kept["kept"] and kept["faults"] < 1000, kept
    assert not kept["async"] and default["async"]
    assert kept["total"] == default["total"] > 0


def test_environment_variable_opts_out():
    _jax_cpu_glibc_only()
    row = _run("keep", KERAS_GPT_KEEP_MEMORY="0")
    assert not row["kept"] and row["async"] and row["faults"] > 8000, row


def test_gpt_compile_applies_it(monkeypatch):
    _jax_cpu_glibc_only()
    from keras_gpt.backend import jax_memory

    monkeypatch.delenv(jax_memory.ENV, raising=False)
    monkeypatch.setattr(jax_memory, "_applied", False)
    from keras_gpt.config import GPTConfig
    from keras_gpt.model import GPT

    model = GPT(GPTConfig(n_layers=1, n_heads=2, d_model=8, vocab_size=16,
                          context_length=4))
    model.compile(optimizer="adam", loss=keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True))
    assert jax_memory._applied
