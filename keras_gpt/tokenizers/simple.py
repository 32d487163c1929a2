"""`ByteTokenizer` (UTF-8 bytes) and `CharTokenizer` (a corpus's characters)."""

import json

import numpy as np

from keras_gpt.tokenizers.base import (
    EOT_TOKEN,
    Tokenizer,
    _graph_split_join,
    _split_join,
    _tf,
    _utf8_bytes,
)


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: ids 0..255 are bytes, 256 is end-of-text; vocab_size 257.

    Nothing is ever unknown: undecodable bytes read with
    `errors="surrogateescape"` are encoded as the raw bytes they stand for.
    `decode` of byte sequences that are not valid UTF-8 uses
    `errors="replace"` (U+FFFD), and so does `detokenize_graph`.

    Example:
    >>> tok = ByteTokenizer()
    >>> tok.encode("hé<|endoftext|>")
    [104, 195, 169, 256]
    """

    kind = "byte"
    vocab_size = 257
    eot_id = 256

    def encode(self, text):
        return _split_join(text, EOT_TOKEN, [256], lambda part, _: _utf8_bytes(part))

    def decode(self, ids):
        ids = self._check_ids(ids)
        parts = np.split(ids, np.flatnonzero(ids == 256))
        texts = [p[p != 256].astype(np.uint8).tobytes() for p in parts]
        return EOT_TOKEN.join(t.decode("utf-8", errors="replace") for t in texts)

    def _tokenize_graph(self, strings):
        tf = _tf()
        # Latin-1 maps every byte to the code point of the same value.
        to_bytes = lambda s: tf.strings.unicode_decode(s, "ISO-8859-1")  # noqa: E731
        return _graph_split_join(strings, EOT_TOKEN, [256], to_bytes)

    def _detokenize_graph(self, ids):
        tf = _tf()
        table = tf.constant([bytes([i]) for i in range(256)] + [EOT_TOKEN.encode()])
        joined = tf.strings.reduce_join(tf.gather(table, ids), axis=-1)
        return tf.strings.unicode_transcode(joined, "UTF-8", "UTF-8", errors="replace")


class CharTokenizer(Tokenizer):
    """Characters (Unicode code points) of a training corpus, sorted.

    Ids `0..len(chars)-1` are the characters, `len(chars)` is end-of-text and,
    with `unknown="replace"`, `len(chars) + 1` stands for any other character
    (decoded as U+FFFD). With `unknown="error"` (the default), encoding a
    character outside the vocabulary raises a ValueError naming the character
    and its position; `tokenize_graph` raises `InvalidArgumentError`.
    Undecodable bytes (lone surrogates) are never put in the vocabulary.

    Args:
        chars: the vocabulary characters (distinct, single code points).
        unknown: "error" or "replace".

    Example:
    >>> tok = CharTokenizer.train(["hello"])
    >>> tok.encode("hole")
    [1, 3, 2, 0]
    """

    kind = "char"

    def __init__(self, chars, unknown="error"):
        chars = list(chars)
        if unknown not in ("error", "replace"):
            raise ValueError(f"unknown must be 'error' or 'replace', got {unknown!r}.")
        if not chars:
            raise ValueError("CharTokenizer needs at least one character.")
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct single characters.")
        self.chars = chars
        self.unknown = unknown
        self._index = {c: i for i, c in enumerate(chars)}
        self._pieces = chars + [EOT_TOKEN] + (["\ufffd"] if unknown == "replace" else [])
        self.vocab_size = len(self._pieces)
        self.eot_id = len(chars)

    @classmethod
    def train(cls, texts, unknown="error"):
        """Builds the vocabulary from the characters of an iterable of texts."""
        seen = set()
        for text in texts:
            seen.update(text)
        chars = sorted(c for c in seen if not 0xD800 <= ord(c) <= 0xDFFF)
        if not chars:
            raise ValueError("Cannot train a CharTokenizer: the texts have no characters.")
        return cls(chars, unknown=unknown)

    def _encode_part(self, part, offset):
        try:
            return [self._index[c] for c in part]
        except KeyError:
            if self.unknown == "replace":
                unk = self.vocab_size - 1
                return [self._index.get(c, unk) for c in part]
            pos = next(i for i, c in enumerate(part) if c not in self._index)
            char = part[pos]
            raise ValueError(
                f"Character {char!r} (U+{ord(char):04X}) at position {offset + pos} "
                f"is not in the CharTokenizer vocabulary of {len(self.chars)} "
                "characters; train on text that contains it, or use "
                "unknown='replace'."
            ) from None

    def encode(self, text):
        return _split_join(text, EOT_TOKEN, [self.eot_id], self._encode_part)

    def decode(self, ids):
        return "".join(self._pieces[i] for i in self._check_ids(ids))

    def _config(self):
        return {"unknown": self.unknown}

    def _files(self):
        return {"chars.json": json.dumps(self.chars).encode()}

    @classmethod
    def _from_files(cls, config, files):
        return cls(json.loads(files["chars.json"]), **config)

    def _build_graph(self, module):
        tf = _tf()
        codes = tf.constant([ord(c) for c in self.chars], tf.int32)
        values = tf.range(len(self.chars), dtype=tf.int32)
        default = self.vocab_size - 1 if self.unknown == "replace" else -1
        init = tf.lookup.KeyValueTensorInitializer(codes, values)
        module.table = tf.lookup.StaticHashTable(init, default_value=default)

    def _encode_parts(self, strings):
        tf = _tf()
        codes = tf.strings.unicode_decode(
            strings, "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        ids = tf.ragged.map_flat_values(self.graph_module.table.lookup, codes)
        if self.unknown == "error":
            bad = tf.boolean_mask(codes.flat_values, ids.flat_values < 0)
            message = "CharTokenizer: code points not in the vocabulary:"
            tf.debugging.Assert(tf.size(bad) == 0, [message, bad])
        return ids

    def _tokenize_graph(self, strings):
        return _graph_split_join(strings, EOT_TOKEN, [self.eot_id], self._encode_parts)

    def _detokenize_graph(self, ids):
        tf = _tf()
        table = tf.constant(self._pieces)
        return tf.strings.reduce_join(tf.gather(table, ids), axis=-1)
