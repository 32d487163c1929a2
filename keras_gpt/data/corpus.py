"""Corpus: the text files a run reads, and the default corpus.

`find_text_files` lists the text files of files, folders and globs;
`iter_documents` reads them. Without files, the corpus is the Python
documentation topics: every CPython ships `pydoc_data.topics.topics`, the
text behind `help("if")`, `help("SEQUENCES")` and so on: 79 documents,
about 465 KB of English prose with code examples. It needs no download, so
examples and tests can always train on real text.
"""

import glob
import os
from pathlib import Path

# Prose and source code; files named explicitly are taken whatever their suffix.
TEXT_EXTENSIONS = (
    ".txt", ".text", ".md", ".markdown", ".rst", ".tex",
    ".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".hpp", ".java", ".js", ".ts",
    ".go", ".rs", ".sh", ".html", ".css", ".yaml", ".yml", ".toml", ".cfg", ".ini",
)


def find_text_files(paths, extensions=TEXT_EXTENSIONS):
    """Lists the non-empty text files named by files, folders and globs.

    A file is taken whatever its suffix. A folder is walked recursively,
    taking files whose suffix (any case) is in `extensions` and skipping
    hidden files and folders (names starting with "."). A pattern with
    `*`, `?` or `[` is expanded with `glob` (`**` recurses); matched files are
    taken, matched folders walked. Empty files are left out.

    Args:
        paths: a path or pattern, or a list of them (str or Path).
        extensions: suffixes taken inside folders.

    Returns:
        A list of `Path`s: in argument order, sorted within each argument,
        without duplicates.

    Raises:
        FileNotFoundError: a path that does not exist or a pattern that
            matches nothing (the message names it).
        ValueError: no text file was found, or all of them are empty.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    extensions = tuple(e.lower() for e in extensions)
    found = []
    for arg in paths:
        arg = os.fspath(arg)
        if any(c in arg for c in "*?["):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                raise FileNotFoundError(f"No file or folder matches {arg!r}.")
        elif os.path.exists(arg):
            matches = [arg]
        else:
            raise FileNotFoundError(f"No such file or folder: {arg!r}.")
        for match in matches:
            if os.path.isdir(match):
                found.extend(_walk(Path(match), extensions))
            else:
                found.append(Path(match))
    seen, unique = set(), []
    for path in found:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    if not unique:
        raise ValueError(f"No text files ({' '.join(extensions)}) found in {list(paths)}.")
    files = [p for p in unique if p.stat().st_size > 0]
    if not files:
        raise ValueError(f"All {len(unique)} text files found in {list(paths)} are empty.")
    return files


# How much of each file `check_text_files` reads, and the share of bytes
# that may be invalid UTF-8 in it (a few stray Latin-1 bytes are text).
SNIFF_BYTES = 1 << 16
MAX_INVALID_SHARE = 0.01


def check_text_files(files, sniff_bytes=SNIFF_BYTES):
    """Raises a ValueError naming the first file that is not text.

    Reads the first `sniff_bytes` of each file: a NUL byte (as in
    executables, images, archives and UTF-16 text), or more than 1% of
    bytes that are not UTF-8, marks a binary file, which would otherwise
    train silently on noise.
    """
    for path in files:
        with open(path, "rb") as f:
            head = f.read(sniff_bytes)
        nul = head.find(b"\0")
        if nul >= 0:
            raise ValueError(
                f"{path} is not a text file (a NUL byte at offset {nul:,}): "
                "--data takes UTF-8 text; leave it out or convert it.")
        text = head.decode("utf-8", errors="replace")
        if len(head) == sniff_bytes:  # a character cut at the end
            text = text.rstrip("\ufffd")
        invalid = text.count("\ufffd") - head.decode(
            "utf-8", errors="ignore").count("\ufffd")
        if invalid > MAX_INVALID_SHARE * max(len(head), 1):
            raise ValueError(
                f"{path} is not UTF-8 text ({invalid:,} of its first "
                f"{len(head):,} bytes are not valid UTF-8): --data takes "
                "UTF-8 text; leave it out or convert it.")


def _walk(folder, extensions):
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and name.lower().endswith(extensions):
                files.append(Path(root) / name)
    return files


def read_text_file(path):
    """Reads a file as UTF-8, keeping undecodable bytes and line endings."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        return f.read()


def iter_documents(source):
    """Yields the documents of `source` as strings (see `build_token_file`)."""
    for item in _as_items(source):
        yield item if isinstance(item, str) else read_text_file(item)


def _as_items(source):
    if isinstance(source, (str, os.PathLike)):
        return [source]
    return list(source)


def default_documents():
    """Returns the Python documentation topics as a list of strings.

    The documents are in sorted topic order, so the list is the same on every
    run of one Python version.

    Example:
    >>> docs = default_documents()
    >>> len(docs) > 10 and all(isinstance(d, str) for d in docs)
    True
    """
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def default_corpus():
    """Returns the Python documentation topics as one string.

    The documents of `default_documents()` joined with a blank line ("\\n\\n").
    """
    return "\n\n".join(default_documents())
