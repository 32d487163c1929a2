"""The `Tokenizer` base class, `EOT_TOKEN`, `CONFIG_FILE` and shared helpers."""

import hashlib
import json
from pathlib import Path

import numpy as np

from keras_gpt.files import atomic_write

EOT_TOKEN = "<|endoftext|>"
CONFIG_FILE = "tokenizer.json"


def _tf():
    import tensorflow as tf

    return tf


def _utf8_bytes(text):
    """UTF-8 bytes of `text`; surrogate escapes become the bytes they stand for."""
    try:
        return text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="surrogatepass")


def _valid_unicode(text):
    """`text` with undecodable bytes (lone surrogates) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _utf8_bytes(text).decode("utf-8", errors="replace")


def _split_join(text, sep, sep_ids, encode_part):
    """Encodes the parts of `text` between `sep` and joins them with `sep_ids`."""
    ids, offset = [], 0
    for n, part in enumerate(text.split(sep)):
        if n:
            ids.extend(sep_ids)
        ids.extend(encode_part(part, offset))
        offset += len(part) + len(sep)
    return ids


def _graph_split_join(strings, sep, sep_ids, encode_parts):
    """Graph version of `_split_join` for a 1-D string tensor."""
    tf = _tf()
    parts = tf.strings.split(strings, sep=sep)  # [batch, (parts)]
    ids = encode_parts(parts.flat_values)  # [parts, (tokens)]
    sep_row = tf.constant([sep_ids], tf.int32)
    seps = tf.RaggedTensor.from_tensor(tf.repeat(sep_row, ids.nrows(), axis=0))
    seps = seps.with_row_splits_dtype(ids.row_splits.dtype)
    joined = parts.with_flat_values(tf.concat([ids, seps], axis=1))
    return joined.merge_dims(1, 2)[:, : -len(sep_ids)]


class Tokenizer:
    """Base class: one interface for every kind of tokenizer.

    Subclasses set `kind`, `vocab_size` and `eot_id`, and implement `encode`,
    `decode`, `_tokenize_graph(strings_1d) -> RaggedTensor`,
    `_detokenize_graph(ragged_ids) -> strings`, optionally `_build_graph`,
    and, to be saved, `_files` / `_config` / `_from_files`.

    Attributes:
        kind: "bpe", "byte", "char" or "gpt2".
        vocab_size: number of ids; every id is in `[0, vocab_size)`.
        eot_id: the id of the end-of-text token.
    """

    kind = None
    vocab_size = None
    eot_id = None

    def encode(self, text):
        """Encodes a string to a list of int ids."""
        raise NotImplementedError

    def decode(self, ids):
        """Decodes a sequence of int ids (list, 1-D array) to a string."""
        raise NotImplementedError

    def _check_ids(self, ids):
        """Returns `ids` as a 1-D int64 array; ValueError for ids out of range."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        bad = np.flatnonzero((ids < 0) | (ids >= self.vocab_size))
        if bad.size:
            raise ValueError(
                f"Token id {ids[bad[0]]} at position {bad[0]} is out of range for "
                f"this {self.kind!r} tokenizer (vocab_size={self.vocab_size})."
            )
        return ids

    @property
    def graph_module(self):
        """A `tf.Module` that owns this tokenizer's TensorFlow resources.

        Track it in a SavedModel that calls `tokenize_graph` or
        `detokenize_graph` (e.g. `export_archive.track(tok.graph_module)`, or
        set it as an attribute of the exported `tf.Module`).
        """
        if getattr(self, "_graph_module", None) is None:
            module = _tf().Module(name=f"{self.kind}_tokenizer")
            self._build_graph(module)
            self._graph_module = module
        return self._graph_module

    def _build_graph(self, module):
        """Creates the TensorFlow resources on `module` (none by default)."""

    def tokenize_graph(self, strings):
        """Tokenizes strings with TensorFlow ops only (tf.data / SavedModel safe).

        Args:
            strings: a `tf.string` tensor: 1-D, or a scalar.

        Returns:
            A `tf.RaggedTensor` of int32 ids, shape `(batch, None)`, for 1-D
            input; a 1-D int32 `tf.Tensor` for a scalar.
        """
        tf = _tf()
        strings = tf.convert_to_tensor(strings, tf.string)
        if strings.shape.rank == 0:
            return self.tokenize_graph(strings[None])[0]
        self.graph_module  # noqa: B018 - builds resources outside of any trace
        return self._tokenize_graph(strings)

    def detokenize_graph(self, ids):
        """Turns ids back into strings with TensorFlow ops only.

        Args:
            ids: int ids, a `tf.RaggedTensor` or dense tensor of shape
                `(batch, length)`, or a 1-D tensor for one sequence.

        Returns:
            A 1-D `tf.string` tensor (`(batch,)`), or a scalar for 1-D input.
        """
        tf = _tf()
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.convert_to_tensor(ids)
            if ids.shape.rank == 1:
                return self.detokenize_graph(ids[None])[0]
            ids = tf.RaggedTensor.from_tensor(ids)
        self.graph_module  # noqa: B018
        return self._detokenize_graph(tf.cast(ids, tf.int32))

    def _files(self):
        """The kind's own files: a dict of file name -> bytes."""
        return {}

    def _config(self):
        """JSON-serializable constructor arguments other than the files."""
        return {}

    @classmethod
    def _from_files(cls, config, files):
        return cls(**config)

    def save(self, directory):
        """Saves the tokenizer into `directory` (created if needed).

        Writes the kind's own files, then `tokenizer.json` (kind, config, file
        names), each through a temporary file and `os.replace`.

        Returns:
            The directory as a `Path`.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = self._files()
        for name, data in files.items():
            atomic_write(directory / name, data)
        meta = {
            "kind": self.kind,
            "config": self._config(),
            "files": sorted(files),
            "vocab_size": self.vocab_size,
            "eot_id": self.eot_id,
        }
        atomic_write(directory / CONFIG_FILE, json.dumps(meta, indent=2).encode())
        return directory

    @property
    def fingerprint(self):
        """A hex digest that changes whenever the tokenizer's ids could change."""
        digest = hashlib.sha256()
        head = {"kind": self.kind, "config": self._config()}
        digest.update(json.dumps(head, sort_keys=True).encode())
        for name, data in sorted(self._files().items()):
            digest.update(f"\0{name}\0{len(data)}\0".encode())
            digest.update(data)
        return digest.hexdigest()

    def __repr__(self):
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, eot_id={self.eot_id})"
