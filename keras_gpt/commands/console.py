"""What the `keras-gpt` process sets up before Keras and TensorFlow load.

`import keras_gpt` loads Keras (so that every keras_gpt class is
registered for `keras.models.load_model`), so `prepare_process` runs
first, from the package's `__init__`, and does something only in the
`keras-gpt` process (a Python program that imports keras_gpt keeps its
environment and stderr as they are):

- `keras-gpt export` builds its TensorFlow graph in this process, so it
  runs under Keras' TensorFlow backend whatever KERAS_BACKEND says (the
  weights are backend-neutral).
- TensorFlow 2.21 writes its start-up lines ("All log messages before
  absl::InitializeLog() is called...", the oneDNN notice, "Could not find
  cuda drivers", "failed call to cuInit") from C++ straight to the
  stderr file descriptor, before `TF_CPP_MIN_LOG_LEVEL` is read; a
  command line that prints one line per error hides them
  (`quiet_native_stderr`).
- Threads sized to the cores this process may use (`size_threads`).
"""

import math

import os
import sys
from pathlib import Path

VERBOSE_FLAG = "--verbose"
_MODULE = "keras_gpt.commands"


def is_command_line():
    """Whether this process runs `keras-gpt` (the console script or
    `python -m keras_gpt.commands`)."""
    if Path(sys.argv[0]).stem == "keras-gpt":
        return True
    argv = list(getattr(sys, "orig_argv", []))
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] == _MODULE


def prepare_process():
    """The command line's process settings (see the module docstring);
    nothing outside the `keras-gpt` process."""
    if not is_command_line():
        return
    words = [w for w in sys.argv[1:] if not w.startswith("-")]
    if words[:1] == ["export"]:
        os.environ["KERAS_BACKEND"] = "tensorflow"
    size_threads()
    quiet_native_stderr()


def usable_cores(cgroup="/sys/fs/cgroup"):
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU
    quota (a container's `--cpus`), which the frameworks do not read."""
    cores = len(os.sched_getaffinity(0)) if hasattr(
        os, "sched_getaffinity") else os.cpu_count() or 1
    for name, parse in (("cpu.max", lambda t: t.split()),  # cgroup v2
                        ("cpu/cpu.cfs_quota_us", None)):   # cgroup v1
        try:
            text = (Path(cgroup) / name).read_text()
            if parse:
                quota, period = parse(text)[:2]
            else:
                quota = text.strip()
                period = (Path(cgroup) / "cpu/cpu.cfs_period_us").read_text()
            if quota not in ("max", "-1"):
                cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
            break
        except (OSError, ValueError):
            continue
    return cores


def size_threads(environ=None, cores=None):
    """Thread settings for TensorFlow, XLA and PyTorch (environment
    variables they read when they load); any you set yourself stand.

    Intra-op threads = `usable_cores()` when a cgroup quota leaves fewer
    cores than the affinity mask (the frameworks size their pools by the
    mask: 64 threads for 2 cores in a container on a big host).

    PyTorch's OpenMP threads keep libgomp's default wait (they spin a
    while before they sleep). Sleeping at once (`OMP_WAIT_POLICY=PASSIVE`)
    helps only where other jobs share the cores, and costs a quiet machine
    dearly: on a quiet 2-core AVX2 EPYC (2026-12-06) nanoGPT's baby config
    trained at 6,546 tokens/s passive against 11,065 spinning
    (`tools/contention.py`), and the bench model decoded at 120-132
    against 203 tokens/s at batch 1 (float32 rows of `keras-gpt bench
    --quantize int8`); with one competing busy process, the baby config
    trained at 6,633 tokens/s passive against 3,499 spinning. On shared
    cores, set it yourself.

    Returns the variables it set.
    """
    environ = os.environ if environ is None else environ
    cores = usable_cores() if cores is None else cores
    settings = {}
    affinity = len(os.sched_getaffinity(0)) if hasattr(
        os, "sched_getaffinity") else os.cpu_count() or 1
    if cores < affinity:
        for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            if name not in environ:
                settings[name] = str(cores)
    environ.update(settings)
    return settings


def quiet_native_stderr():
    """Unless `--verbose` is given or `TF_CPP_MIN_LOG_LEVEL` is set: send what native code writes to the
    stderr descriptor to the null device, and keep Python's `sys.stderr`
    (errors, warnings, tracebacks) on the real one.

    Returns whether it did.
    """
    if VERBOSE_FLAG in sys.argv[1:] or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # for TF's later log lines
    sys.stderr.flush()
    real = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    sys.stderr = os.fdopen(real, "w", buffering=1,
                           encoding=sys.stderr.encoding,
                           errors="backslashreplace")
    return True
