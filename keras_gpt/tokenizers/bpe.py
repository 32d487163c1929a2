"""`BPETokenizer`: SentencePiece BPE with byte fallback, trained here."""

import io
import re

from keras_gpt.tokenizers.base import (
    EOT_TOKEN,
    Tokenizer,
    _graph_split_join,
    _tf,
    _valid_unicode,
)

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
    >>> from keras_gpt.data.corpus import default_documents
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
