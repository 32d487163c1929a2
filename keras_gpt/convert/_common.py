"""Helpers shared by the converters: errors, weight tables, atomic folders."""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


class ConversionError(ValueError):
    """A checkpoint that cannot be converted faithfully.

    The message names the file (and the tensor, where one is at fault) and
    what is wrong with it. A `ValueError`, so the command line prints it as
    one line.
    """


def model_weights(model):
    """`{path without the model's name: variable}` of a `GPT`.

    Example:

    ```python
    model_weights(GPT("tiny"))["block_0/attention/qkv/kernel"].shape
    # (64, 192)
    ```
    """
    return {v.path.split("/", 1)[1]: v for v in model.weights}


def to_numpy(variable):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


def check_shape(source, name, array, expected):
    """Raises `ConversionError` naming `source` and `name` on a mismatch."""
    if tuple(array.shape) != tuple(expected):
        raise ConversionError(
            f"{source}: tensor {name!r} has shape {tuple(array.shape)}, but "
            f"the config implies {tuple(expected)}.")


def assign_all(model, arrays):
    """Assigns `{path: array}` (every weight of `model`, nothing else)."""
    variables = model_weights(model)
    missing = sorted(set(variables) - set(arrays))
    extra = sorted(set(arrays) - set(variables))
    if missing or extra:  # a bug in a mapping table, not a user error
        raise AssertionError(f"weights missing {missing}, unexpected {extra}")
    for path, variable in variables.items():
        check_shape("model", path, arrays[path], variable.shape)
        variable.assign(np.asarray(arrays[path], dtype=np.float32))


def write_folder_atomically(path, write):
    """Calls `write(tmp_dir)`, then renames `tmp_dir` to `path`.

    `path` must not exist or be an empty folder. If `write` raises, nothing
    is left at `path` and the temporary folder is removed.

    Example:

    ```python
    write_folder_atomically("out", lambda d: (d / "a.txt").write_text("a"))
    ```
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConversionError(f"{path} already exists and is not an empty "
                              "folder; choose another output path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write(tmp)
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
