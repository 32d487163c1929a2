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
