"""Token files: a corpus tokenized once into a flat file of ids on disk,
cached by content and tokenizer, memory-mapped, split for validation."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from keras_gpt.data.corpus import _as_items

FORMAT_VERSION = 1

def _text_blocks(item, chunk_chars):
    """Yields the text of a document (str) or file (Path) in blocks."""
    if isinstance(item, str):
        for start in range(0, len(item), chunk_chars):
            yield item[start : start + chunk_chars]
        return
    with open(item, encoding="utf-8", errors="surrogateescape", newline="") as f:
        yield from iter(lambda: f.read(chunk_chars), "")


def _safe_cut(text):
    """Index after the last newline with non-whitespace on both sides, or 0.

    Encoding the two sides of such a newline apart gives the same ids as
    encoding them together, for every tokenizer here (no BPE piece contains
    a newline, and GPT-2's pre-tokenizer splits there too).
    """
    i = text.rfind("\n", 0, len(text) - 1)
    while i > 0:
        if not text[i - 1].isspace() and not text[i + 1].isspace():
            return i + 1
        i = text.rfind("\n", 0, i)
    return 0


def _text_chunks(item, chunk_chars):
    """Yields about `chunk_chars` characters at a time, cut at safe newlines."""
    pending = ""
    for block in _text_blocks(item, chunk_chars):
        pending += block
        cut = _safe_cut(pending)
        if cut:
            yield pending[:cut]
            pending = pending[cut:]
    if pending:
        yield pending


def _source_hash(items):
    """sha256 over the bytes of every document, in order."""
    digest = hashlib.sha256()
    for item in items:
        if isinstance(item, str):
            data = item.encode("utf-8", errors="surrogateescape")
            digest.update(f"\0doc\0{len(data)}\0".encode())
            digest.update(data)
            continue
        digest.update(f"\0file\0{os.path.getsize(item)}\0".encode())
        with open(item, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def token_dtype(vocab_size):
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


def build_token_file(source, tokenizer, cache_dir, chunk_chars=1 << 20):
    """Tokenizes documents once into a flat file of ids, cached on disk.

    Documents are joined with `tokenizer.eot_id` between them (empty documents
    are skipped). Ids are stored as `token_dtype(tokenizer.vocab_size)`, next
    to a JSON file with the dtype and counts. The file name is a hash of the
    documents' bytes and of the tokenizer's kind and files, so a second call
    with the same inputs returns at once without tokenizing. Documents are
    read and encoded about `chunk_chars` characters at a time, cut at
    newlines where that cannot change the ids, and written as they come; the
    file is written under a temporary name and then `os.replace`d.

    Args:
        source: documents: a list whose `str` items are document texts and
            whose `Path` (os.PathLike) items are files to read; or one of them.
            Files are read twice (hash, then tokens) but never held whole, so
            pass paths for corpora larger than memory.
        tokenizer: a `keras_gpt.tokenizers.Tokenizer`.
        cache_dir: folder for token files (created if needed).
        chunk_chars: characters per encode call.

    Returns:
        The `Path` of the token file; open it with `load_tokens`.

    Raises:
        ValueError: the documents give no tokens.
    """
    items = _as_items(source)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(
        f"{FORMAT_VERSION}\0{tokenizer.kind}\0{tokenizer.fingerprint}\0"
        f"{_source_hash(items)}".encode()
    ).hexdigest()[:32]
    path = cache_dir / f"tokens-{tokenizer.kind}-{key}.bin"
    meta_path = path.with_suffix(".json")
    if meta_path.is_file() and path.is_file():
        return path

    dtype = token_dtype(tokenizer.vocab_size)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    num_tokens = num_documents = 0
    try:
        with open(tmp, "wb") as f:
            for number, item in enumerate(items):
                started = False  # this document has given tokens
                start = 0
                for chunk in _text_chunks(item, chunk_chars):
                    ids = _encode(tokenizer, chunk, dtype, number, item, start)
                    start += len(chunk)
                    if ids.size and not started:
                        if num_documents:
                            ids = np.concatenate([[tokenizer.eot_id], ids]).astype(dtype)
                        started = True
                    ids.tofile(f)
                    num_tokens += ids.size
                num_documents += started
        if num_tokens == 0:
            raise ValueError(f"No tokens: all {len(items)} documents are empty.")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {
        "format": FORMAT_VERSION, "dtype": dtype.name, "num_tokens": num_tokens,
        "num_documents": num_documents, "eot_id": tokenizer.eot_id,
        "vocab_size": tokenizer.vocab_size, "tokenizer_kind": tokenizer.kind,
        "tokenizer_fingerprint": tokenizer.fingerprint,
    }
    tmp_meta = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2))
    os.replace(tmp_meta, meta_path)
    return path


def _encode(tokenizer, text, dtype, number, item, start):
    """`tokenizer.encode(text)` as an array; errors name the document."""
    try:
        return np.asarray(tokenizer.encode(text), dtype=dtype)
    except ValueError as error:
        where = f"document {number}" if isinstance(item, str) else f"file {item}"
        raise ValueError(
            f"Cannot tokenize {where} (text from character {start}): {error}"
        ) from error


def load_tokens(path):
    """Memory-maps a token file written by `build_token_file` (read-only).

    Returns:
        A 1-D `np.memmap` of the file's dtype (see its `.json` metadata).
    """
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"No metadata {meta_path} for token file {path}.")
    meta = json.loads(meta_path.read_text())
    return np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")


def split_tokens(tokens, val_fraction=0.1):
    """Splits a token stream into (train, val): the LAST fraction is validation.

    Args:
        tokens: a 1-D array (e.g. from `load_tokens`); views are returned.
        val_fraction: in [0, 1); `int(len(tokens) * val_fraction)` tokens go
            to validation (0 gives an empty validation array).

    Raises:
        ValueError: `val_fraction` outside [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    split = len(tokens) - int(len(tokens) * val_fraction)
    return tokens[:split], tokens[split:]
