"""Tokenizers: text <-> token ids, in Python and inside a TensorFlow graph.

Every tokenizer has the same small interface (`Tokenizer`): `encode` / `decode`
in Python, `tokenize_graph` / `detokenize_graph` with TensorFlow ops only (for
`tf.data` and SavedModels), `vocab_size`, `eot_id`, `save` and
`load_tokenizer`. The Python and graph sides give identical ids.

Kinds:
    "bpe":  `BPETokenizer`, SentencePiece BPE with byte fallback, trained here.
    "byte": `ByteTokenizer`, the 256 UTF-8 bytes plus end-of-text.
    "char": `CharTokenizer`, the characters of a training corpus.
    "gpt2": `GPT2Tokenizer`, GPT-2's published byte-level BPE.

The end-of-text marker `EOT_TOKEN` ("<|endoftext|>") is one token in every kind:
`encode` turns the literal text "<|endoftext|>" into `eot_id`, and `decode`
renders `eot_id` as that text, so `decode(encode(text)) == text`.

TensorFlow is imported only when a graph method is first used.
"""

import hashlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np

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


def _atomic_write(path, data):
    """Writes `data` (bytes) to `path` through a temporary file and os.replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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
            _atomic_write(directory / name, data)
        meta = {
            "kind": self.kind,
            "config": self._config(),
            "files": sorted(files),
            "vocab_size": self.vocab_size,
            "eot_id": self.eot_id,
        }
        _atomic_write(directory / CONFIG_FILE, json.dumps(meta, indent=2).encode())
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


# SentencePiece's meta symbol for a space ("▁").
_SPACE_SYMBOL = "\u2581"


class BPETokenizer(Tokenizer):
    """SentencePiece BPE with byte fallback; whitespace is kept exactly.

    Trained by `BPETokenizer.train` with identity normalization, no dummy
    prefix, no whitespace folding, split digits, whitespace-only pieces
    allowed, byte fallback (so nothing is unknown), and "<|endoftext|>" as a
    user-defined piece (id 1). Python encodes with `sentencepiece`, the graph
    with `tensorflow_text.SentencepieceTokenizer`; the ids are identical.

    Two details keep `decode(encode(text)) == text` for any text:
    SentencePiece shows spaces as U+2581 ("▁"), so a literal U+2581 is encoded
    as its three byte pieces; and undecodable bytes (lone surrogates) become
    U+FFFD before encoding. Lines are encoded separately and joined with the
    newline piece, which gives the same ids as encoding the whole text (no
    piece contains a newline) and is ~4x faster on long texts.

    Args:
        model_proto: the serialized SentencePiece `ModelProto` (bytes).

    Example:
    >>> from keras_gpt.corpus import default_documents
    >>> tok = BPETokenizer.train(default_documents(), 1024)
    >>> tok.decode(tok.encode("x =  1\\n\\tü")) == "x =  1\\n\\tü"
    True
    """

    kind = "bpe"

    def __init__(self, model_proto):
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        unk = self._sp.unk_id()
        self.vocab_size = self._sp.get_piece_size()
        self.eot_id = self._sp.piece_to_id(EOT_TOKEN)
        byte_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in _SPACE_SYMBOL.encode()]
        if self.eot_id == unk or unk in byte_ids:
            raise ValueError(
                f"The SentencePiece model needs byte_fallback=True and a "
                f"{EOT_TOKEN!r} piece; train it with BPETokenizer.train."
            )
        self._sep_ids = {_SPACE_SYMBOL: byte_ids, "\n": self._sp.encode("\n")}
        pieces = (self._sp.id_to_piece(i) for i in range(self.vocab_size))
        lines_are_safe = not any("\n" in p for p in pieces)
        self._sep_re = re.compile("(\n|\u2581)" if lines_are_safe else "(\u2581)")

    @classmethod
    def train(cls, texts, vocab_size, *, character_coverage=0.9995,
              max_sentences=2_000_000, seed=0, num_threads=2):
        """Trains a BPE model on an iterable of texts.

        Texts are fed line by line (SentencePiece trains on lines; newlines
        are then encoded by their byte piece). At most `max_sentences` lines,
        sampled, are used: seconds for a few MB.

        Args:
            texts: iterable of strings.
            vocab_size: total number of ids, at least 256 byte pieces +
                "<unk>" + "<|endoftext|>" + every character kept by
                `character_coverage`.
            character_coverage: fraction of characters given their own piece;
                the rarest rest are encoded as bytes.
            max_sentences: cap on the number of training lines.
            seed: random seed for the line sampling.
            num_threads: trainer threads.

        Raises:
            ValueError: no text, or `vocab_size` too small or too large for
                the corpus (the message names the value and the limit).
        """
        import sentencepiece as spm

        vocab_size = int(vocab_size)
        if vocab_size < 259:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: a BPE vocabulary needs at "
                "least 259 ids (256 byte pieces, <unk>, <|endoftext|>, characters)."
            )
        count = [0]

        def lines():
            for text in texts:
                for line in _valid_unicode(text).split("\n"):
                    if line:
                        count[0] += 1
                        yield line

        spm.set_random_generator_seed(seed)
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=lines(), model_writer=model, model_type="bpe",
                vocab_size=vocab_size, character_coverage=character_coverage,
                normalization_rule_name="identity", remove_extra_whitespaces=False,
                add_dummy_prefix=False, split_digits=True,
                allow_whitespace_only_pieces=True, byte_fallback=True,
                user_defined_symbols=[EOT_TOKEN], unk_id=0, bos_id=-1, eos_id=-1,
                input_sentence_size=max_sentences, shuffle_input_sentence=True,
                max_sentence_length=1 << 16, train_extremely_large_corpus=False,
                num_threads=num_threads, minloglevel=2,
            )
        except RuntimeError as error:
            raise _training_error(error, vocab_size, count[0]) from error
        return cls(model.getvalue())

    def encode(self, text):
        segments = self._sep_re.split(_valid_unicode(text))
        encoded = self._sp.encode(segments[0::2])
        ids = list(encoded[0])
        for sep, seg_ids in zip(segments[1::2], encoded[1:]):
            ids.extend(self._sep_ids[sep])
            ids.extend(seg_ids)
        return ids

    def decode(self, ids):
        return self._sp.decode(self._check_ids(ids).tolist())

    def _files(self):
        return {"sentencepiece.model": self.model_proto}

    @classmethod
    def _from_files(cls, config, files):
        return cls(files["sentencepiece.model"])

    def _sentencepiece_op(self):
        # A new op per call, on purpose: tensorflow_text's model resource is
        # owned by the op's kernel, which TensorFlow drops when it clears its
        # eager caches (as `tf.random.set_seed` does), so a long-lived
        # `SentencepieceTokenizer` can fail later with "Resource ... does not
        # exist". Made inside a traced function, the op (and the model bytes)
        # is part of that graph and needs no tracking in a SavedModel.
        import tensorflow_text as tf_text

        return tf_text.SentencepieceTokenizer(model=self.model_proto, out_type=_tf().int32)

    def _tokenize_graph(self, strings):
        byte_ids = self._sep_ids[_SPACE_SYMBOL]
        tokenize = self._sentencepiece_op().tokenize
        return _graph_split_join(strings, _SPACE_SYMBOL, byte_ids, tokenize)

    def _detokenize_graph(self, ids):
        return self._sentencepiece_op().detokenize(ids)


def _training_error(error, vocab_size, num_lines):
    """A clear ValueError for SentencePiece's training errors."""
    message = str(error)
    if num_lines == 0:
        return ValueError("Cannot train a BPE tokenizer: the texts have no non-empty line.")
    small = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if small:
        return ValueError(
            f"vocab_size={vocab_size} is too small for this corpus: it needs at "
            f"least {small.group(1)} (256 byte pieces, 2 special pieces and the "
            "corpus's characters); raise vocab_size or lower character_coverage."
        )
    large = re.search(r"too high \(\d+\)\. Please set it to a value <= (\d+)", message)
    if large:
        return ValueError(
            f"vocab_size={vocab_size} is larger than this corpus supports: at most "
            f"{large.group(1)}; lower vocab_size or train on more text."
        )
    return ValueError(f"SentencePiece training failed: {message}")


class GPT2Tokenizer(Tokenizer):
    """GPT-2's byte-level BPE, from its published `vocab.json` and `merges.txt`.

    `encode` / `decode` use Hugging Face `tokenizers`, so ids equal
    `transformers.GPT2TokenizerFast`'s ("<|endoftext|>" is one token, 50256 in
    GPT-2's vocabulary). `tokenize_graph` uses keras_hub's `BytePairTokenizer`
    (its TensorFlow path). Known limitation: when a text ENDS with a run of
    two or more whitespace characters whose last one is a space (e.g. "a  ",
    "a\\n "), keras_hub splits that run differently from the reference, so
    graph ids differ there; runs of spaces, tabs and newlines followed by more
    text match (checked on all runs of up to 4 of " ", "\\t", "\\n"). keras_hub
    called eagerly uses another (Llama-3) split pattern that differs on runs
    of spaces everywhere; `tokenize_graph` never takes that path. Tokenize
    training data with `encode`.

    Args:
        vocab: dict of byte-level token string -> id.
        merges: list of merge rules, "left right" strings, in rank order.
    """

    kind = "gpt2"

    def __init__(self, vocab, merges):
        from tokenizers import AddedToken, Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers

        if EOT_TOKEN not in vocab:
            raise ValueError(f"The GPT-2 vocabulary has no {EOT_TOKEN!r} token.")
        self.vocab = dict(vocab)
        self.vocab_size = len(self.vocab)
        self.eot_id = self.vocab[EOT_TOKEN]
        self.merges = [m for m in merges if m and not m.startswith("#version")]
        pairs = [tuple(m.split(" ")) for m in self.merges]
        hf = HFTokenizer(models.BPE(self.vocab, pairs))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        hf.add_special_tokens([AddedToken(EOT_TOKEN, special=True)])
        self._hf = hf

    @classmethod
    def from_files(cls, vocab_path, merges_path):
        """Reads GPT-2's `vocab.json` and `merges.txt`."""
        vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
        merges = Path(merges_path).read_text(encoding="utf-8").split("\n")
        return cls(vocab, merges)

    def encode(self, text):
        return self._hf.encode(_valid_unicode(text)).ids

    def decode(self, ids):
        return self._hf.decode(self._check_ids(ids).tolist(), skip_special_tokens=False)

    def _files(self):
        merges = "#version: 0.2\n" + "\n".join(self.merges) + "\n"
        vocab = json.dumps(self.vocab, ensure_ascii=False)
        return {"vocab.json": vocab.encode(), "merges.txt": merges.encode()}

    @classmethod
    def _from_files(cls, config, files):
        merges = files["merges.txt"].decode("utf-8").split("\n")
        return cls(json.loads(files["vocab.json"]), merges)

    def _build_graph(self, module):
        import keras_hub

        tf = _tf()
        layer = keras_hub.tokenizers.BytePairTokenizer(
            vocabulary=self.vocab, merges=self.merges, unsplittable_tokens=[EOT_TOKEN]
        )
        # Outside the TensorFlow backend a Keras layer is not a tf.Module, so
        # its lookup tables are tracked here for SavedModels.
        resource = tf.saved_model.experimental.TrackableResource
        module.tables = [
            value
            for owner in (layer, layer.cache)
            for value in vars(owner).values()
            if isinstance(value, resource)
        ]
        # Called eagerly, keras_hub switches to a Python path with another
        # split pattern; inside a tf.function it runs the TensorFlow path.
        module.tokenize = tf.function(layer.tokenize, autograph=False)
        module.detokenize = tf.function(layer.detokenize, autograph=False)

    def _tokenize_graph(self, strings):
        return self.graph_module.tokenize(strings)

    def _detokenize_graph(self, ids):
        return self.graph_module.detokenize(ids)


TOKENIZER_KINDS = {
    cls.kind: cls for cls in (BPETokenizer, ByteTokenizer, CharTokenizer, GPT2Tokenizer)
}


def load_tokenizer(directory):
    """Loads a tokenizer of any kind saved by `Tokenizer.save`.

    Raises:
        FileNotFoundError: no `tokenizer.json` in `directory`.
        ValueError: an unknown kind.
    """
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"No {CONFIG_FILE} in {directory}: not a saved tokenizer.")
    meta = json.loads(config_path.read_text(encoding="utf-8"))
    cls = TOKENIZER_KINDS.get(meta.get("kind"))
    if cls is None:
        raise ValueError(
            f"{config_path} has unknown tokenizer kind {meta.get('kind')!r}; "
            f"expected one of {sorted(TOKENIZER_KINDS)}."
        )
    files = {name: (directory / name).read_bytes() for name in meta.get("files", [])}
    return cls._from_files(meta.get("config", {}), files)


def make_tokenizer(kind, texts=None, vocab_size=None, **kwargs):
    """Builds a trainable tokenizer: "bpe", "byte" or "char".

    Args:
        kind: "bpe" (needs `texts` and `vocab_size`), "byte" (needs nothing)
            or "char" (needs `texts`).
        texts: iterable of training strings.
        vocab_size: the BPE vocabulary size; ignored by "byte" and "char",
            whose size is fixed by their alphabet.
        **kwargs: passed to `BPETokenizer.train` / `CharTokenizer.train`.

    Raises:
        ValueError: an unknown kind, or a missing argument.
    """
    if kind == "byte":
        return ByteTokenizer()
    if kind not in ("bpe", "char"):
        raise ValueError(
            f"Unknown tokenizer kind {kind!r}; expected one of 'bpe', 'byte', 'char' "
            "('gpt2' is built with GPT2Tokenizer.from_files)."
        )
    if texts is None:
        raise ValueError(f"Tokenizer kind {kind!r} needs training texts.")
    if kind == "char":
        return CharTokenizer.train(texts, **kwargs)
    if vocab_size is None:
        raise ValueError("Tokenizer kind 'bpe' needs a vocab_size.")
    return BPETokenizer.train(texts, vocab_size, **kwargs)
