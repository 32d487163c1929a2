"""Writing files so that a crash or a kill never leaves one half-written."""

import os
from pathlib import Path


def replace_atomically(path, write):
    """Call `write(tmp)` on a temporary path beside `path`, then rename it.

    The temporary name ends with `path`'s own name, so writers that read the
    suffix (`.keras`, `.weights.h5`, `.png`) work; on failure it is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path, data):
    """Write `data` (str as UTF-8, or bytes) to `path` atomically."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    replace_atomically(path, lambda tmp: Path(tmp).write_bytes(data))


def run_model_file(run_dir):
    """RUN_DIR/model.keras, checked: a missing directory or model is a
    FileNotFoundError that says which and where."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run directory {run_dir} does not exist.")
    model_file = run_dir / "model.keras"
    if not model_file.is_file() and (run_dir / "run.json").is_file():
        raise FileNotFoundError(
            f"No model.keras in {run_dir} yet: its run stopped before its "
            f"first checkpoint; `keras-gpt train --out {run_dir} --resume` "
            "trains it (from step 0).")
    if not model_file.is_file():
        raise FileNotFoundError(
            f"No model.keras in {run_dir}: train one with `keras-gpt train "
            f"--out {run_dir}` (or pass the run directory that holds it).")
    return model_file


def run_tokenizer_dir(run_dir):
    """Where a run's tokenizer is saved: RUN_DIR/tokenizer, else RUN_DIR."""
    run_dir = Path(run_dir)
    for directory in (run_dir / "tokenizer", run_dir):
        if (directory / "tokenizer.json").is_file():
            return directory
    raise FileNotFoundError(
        f"No tokenizer in {run_dir / 'tokenizer'} or {run_dir}: a run "
        "directory holds the tokenizer it was trained with.")
