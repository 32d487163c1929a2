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
"""

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
    quiet_native_stderr()


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
