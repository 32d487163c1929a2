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

import json
from pathlib import Path

from keras_gpt.tokenizers.base import CONFIG_FILE, EOT_TOKEN, Tokenizer
from keras_gpt.tokenizers.bpe import BPETokenizer
from keras_gpt.tokenizers.gpt2 import GPT2Tokenizer
from keras_gpt.tokenizers.simple import ByteTokenizer, CharTokenizer

__all__ = [
    "CONFIG_FILE",
    "EOT_TOKEN",
    "TOKENIZER_KINDS",
    "BPETokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "GPT2Tokenizer",
    "Tokenizer",
    "load_tokenizer",
    "make_tokenizer",
]

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
