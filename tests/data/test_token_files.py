"""Tests for keras_gpt.data and keras_gpt.data.corpus: files and the token cache."""

import json

import numpy as np
import pytest

from keras_gpt import data
from keras_gpt.data.corpus import default_corpus, default_documents
from keras_gpt.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, Tokenizer

pytestmark = pytest.mark.backend_independent


def test_default_corpus():
    docs = default_documents()
    text = default_corpus()
    assert len(docs) > 50 and text == "\n\n".join(docs)
    assert 300_000 < len(text.encode()) < 1_000_000
    assert 'The "if" statement' in text


def test_find_text_files(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub" / "b.MD").write_text("beta")
    (tmp_path / "sub" / "deeper" / "c.py").write_text("gamma")
    (tmp_path / "sub" / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".git" / "d.txt").write_text("hidden")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "notes.data").write_text("named explicitly")

    found = data.find_text_files(tmp_path)
    assert found == [tmp_path / "a.txt", tmp_path / "sub" / "b.MD",
                     tmp_path / "sub" / "deeper" / "c.py"]
    by_glob = data.find_text_files([str(tmp_path / "**" / "*.py"), tmp_path / "notes.data"])
    assert by_glob == [tmp_path / "sub" / "deeper" / "c.py", tmp_path / "notes.data"]
    assert data.find_text_files([tmp_path / "a.txt", tmp_path]) == found  # no duplicates

    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        data.find_text_files([tmp_path / "a.txt", tmp_path / "nothere.txt"])
    with pytest.raises(FileNotFoundError, match=r"\*\.zzz"):
        data.find_text_files(str(tmp_path / "*.zzz"))
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match="No text files .* found in .*bare"):
        data.find_text_files(tmp_path / "bare")
    with pytest.raises(ValueError, match="All 1 text files .* are empty"):
        data.find_text_files(tmp_path / "empty.txt")


def test_token_file_joins_documents_with_end_of_text(tmp_path):
    tok = ByteTokenizer()
    path = data.build_token_file(["ab", "", "c", "dé"], tok, tmp_path)
    tokens = data.load_tokens(path)
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    assert tokens.tolist() == [97, 98, 256, 99, 256, 100, 0xC3, 0xA9]
    assert not tokens.flags.writeable
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["num_tokens"] == 8 and meta["num_documents"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def test_token_file_reads_files_exactly(tmp_path):
    raw = b"line one\r\nbad byte \xff here\n"
    (tmp_path / "a.txt").write_bytes(raw)
    (tmp_path / "b.txt").write_bytes(b"second")
    files = data.find_text_files(tmp_path)
    tokens = data.load_tokens(data.build_token_file(files, ByteTokenizer(), tmp_path / "cache"))
    assert tokens.tolist() == list(raw) + [256] + list(b"second")

    char = CharTokenizer.train(["line one bad byte here second\r\n"])
    with pytest.raises(ValueError, match=r"file .*a\.txt .*U\+DCFF\) at position 19"):
        data.build_token_file(files, char, tmp_path / "cache")


def test_token_file_cache_hit_does_not_tokenize(tmp_path, monkeypatch):
    tok = ByteTokenizer()
    first = data.build_token_file(["hello", "world"], tok, tmp_path)

    def fail(text):
        raise AssertionError("encode called on a cache hit")

    monkeypatch.setattr(tok, "encode", fail)
    assert data.build_token_file(["hello", "world"], tok, tmp_path) == first
    with pytest.raises(AssertionError, match="cache hit"):
        data.build_token_file(["hello", "world!"], tok, tmp_path)  # new content
    monkeypatch.undo()
    other = CharTokenizer.train(["helowrd"])
    assert data.build_token_file(["hello", "world"], other, tmp_path) != first


def test_token_file_chunks_give_the_same_ids(tmp_path):
    docs = default_documents()[:3]
    tok = BPETokenizer.train(docs, 400)
    path = data.build_token_file(docs, tok, tmp_path, chunk_chars=97)
    expected = tok.encode(docs[0]) + [tok.eot_id] + tok.encode(docs[1])
    expected += [tok.eot_id] + tok.encode(docs[2])
    assert data.load_tokens(path).tolist() == expected


class _WideTokenizer(Tokenizer):
    """A stub with ids above 65535."""

    kind = "wide"
    vocab_size = 70_000
    eot_id = 69_999

    def encode(self, text):
        return [65_536 + ord(c) % 100 for c in text]


def test_token_dtype_follows_vocab_size(tmp_path):
    assert data.token_dtype(65_536) == np.uint16
    assert data.token_dtype(65_537) == np.uint32
    tokens = data.load_tokens(data.build_token_file(["ab", "c"], _WideTokenizer(), tmp_path))
    assert tokens.dtype == np.uint32
    assert tokens.tolist() == [65_633, 65_634, 69_999, 65_635]


def test_empty_corpus_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="all 2 documents are empty"):
        data.build_token_file(["", ""], ByteTokenizer(), tmp_path)
    assert not list(tmp_path.iterdir())


def test_split_tokens_keeps_the_last_fraction_for_validation():
    tokens = np.arange(1000)
    train, val = data.split_tokens(tokens)
    assert train.tolist() == list(range(900)) and val.tolist() == list(range(900, 1000))
    train, val = data.split_tokens(tokens, 0.0)
    assert len(train) == 1000 and len(val) == 0
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"val_fraction must be in \[0, 1\), got {bad}"):
            data.split_tokens(tokens, bad)
