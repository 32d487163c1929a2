"""Reading a `.keras` checkpoint, with one clear error for a bad file.

A `.keras` file is a zip archive of `config.json` (what to build),
`metadata.json` and `model.weights.h5`. Keras' own errors for a damaged
one are a traceback ending in `zipfile.BadZipFile: Bad CRC-32`, "File not
found" for a truncated file that exists, or a page about layers that could
not be loaded (with a "Skipping variable loading for optimizer" warning
first) for a checkpoint of another shape. Here each is a `CheckpointError`
(a ValueError) whose one-line message names the file and what is wrong,
found before anything is built:

- `read_config(path)`: the archive is whole (every member's CRC checked)
  and holds a model; returns its saved config.
- `saved_step(path)`: the training step the checkpoint holds.
- `load_model(path)`: `keras.models.load_model` after `read_config`.
- `load_weights(model, path)`: `model.load_weights` after checking that the
  file holds a model of `model`'s shape.

Keras must know the saved classes (`import keras_gpt` registers ours).
"""

import json
import warnings
import zipfile
from pathlib import Path

MEMBERS = ("config.json", "model.weights.h5")
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names it."""


def read_config(path):
    """The saved object's config (a dict) of a whole `.keras` file.

    Raises:
        FileNotFoundError: No such file.
        CheckpointError: Not a `.keras` archive, truncated, a member that
            fails its CRC check, or a member missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file {path}.")
    with open(path, "rb") as f:
        head = f.read(4)
    if not zipfile.is_zipfile(path):
        if head == _ZIP_MAGIC:
            raise CheckpointError(
                f"{path} is truncated ({path.stat().st_size:,} bytes, the end "
                "of the archive is missing): restore it or train again.")
        raise CheckpointError(
            f"{path} is not a Keras model file (a .keras file is a zip "
            f"archive; this one starts with {head!r}).")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [m for m in MEMBERS if m not in names]
            if missing:
                raise CheckpointError(
                    f"{path} is not a Keras model file: it holds no "
                    f"{' and no '.join(missing)}.")
            bad = archive.testzip()
            if bad is not None:
                raise CheckpointError(
                    f"{path} is damaged: its member {bad} fails its CRC "
                    "check (bytes were changed): restore it or train again.")
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path} is damaged: {error}.") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise CheckpointError(f"{path} is damaged: its config.json holds no "
                              "model.")
    return config


def saved_gpt_config(path):
    """The GPTConfig fields (a dict) of the GPT saved in `path`; raises
    CheckpointError if it holds another kind of model."""
    config = read_config(path)
    fields = config.get("config", {}).get("config")
    if config.get("class_name") != "GPT" or not isinstance(fields, dict):
        raise CheckpointError(
            f"{path} holds a {config.get('class_name')}, not a keras_gpt GPT.")
    return fields


def saved_step(path):
    """The optimizer step saved in `path` (its `iterations`), read without
    building anything; None when the file holds no optimizer state.

    Raises:
        CheckpointError: A bad file (see `read_config`).
    """
    import h5py

    read_config(path)
    try:
        with zipfile.ZipFile(path) as archive, \
                archive.open("model.weights.h5") as member, \
                h5py.File(member, "r") as weights:
            iterations = weights.get("optimizer/vars/0")
            if iterations is None or iterations.shape != ():
                return None
            return int(iterations[()])
    except (OSError, zipfile.BadZipFile, ValueError, TypeError) as error:
        raise CheckpointError(f"{path} is damaged: its weights cannot be "
                              f"read ({_first_line(error)}).") from None


def check_shape(path, config, expected="the model's"):
    """Raises CheckpointError unless `path` holds a GPT of `config`'s shape
    (dropout aside); the message names the fields that differ."""
    saved = saved_gpt_config(path)
    ours = config.to_dict()
    differ = [f"{k} {saved.get(k)!r}, not {v!r}" for k, v in ours.items()
              if k in saved and saved[k] != v and k != "dropout"]
    if differ:
        raise CheckpointError(f"{path} holds a model of another shape than "
                              f"{expected} ({'; '.join(differ)}): it is not "
                              "this run's checkpoint.")


def load_model(path, **kwargs):
    """`keras.models.load_model(path, **kwargs)` of a checked file."""
    import keras

    read_config(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.models.load_model(path, **kwargs)
    except Exception as error:  # Keras raises many kinds for a bad file
        raise CheckpointError(
            f"{path} cannot be loaded: {_first_line(error)}") from None


def load_weights(model, path):
    """`model.load_weights(path)` (weights and, if built, optimizer state)
    from a checked file holding a GPT of `model`'s shape.

    Raises:
        CheckpointError: A bad file (see `read_config`), a GPT of another
            shape (the message names the fields), or optimizer state that
            does not match (a checkpoint written without it).
    """
    check_shape(path, model.config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except Exception as error:
            raise CheckpointError(
                f"{path} cannot be loaded: {_first_line(error)}") from None
    skipped = [str(w.message) for w in caught
               if "Skipping variable loading" in str(w.message)]
    if skipped:
        raise CheckpointError(f"{path} does not hold this run's optimizer "
                              f"state ({_first_line(skipped[0])}).")
    return model


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
