"""Tests for keras_gpt.data and keras_gpt.corpus: files, token cache, windows, fit."""

import json

import keras
import numpy as np
import pytest

from keras_gpt import data
from keras_gpt.corpus import default_corpus, default_documents
from keras_gpt.tokenizers import EOT_TOKEN, BPETokenizer, ByteTokenizer, CharTokenizer, Tokenizer


def _batches(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


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


def test_windows_are_shifted_slices_of_the_stream(tmp_path):
    tokens = np.arange(500, dtype=np.uint16)
    ctx, batch = 16, 8
    for x, y in _batches(data.make_windows_dataset(tokens, ctx, batch, seed=1), 5):
        assert x.shape == y.shape == (batch, ctx) and x.dtype == y.dtype == np.int32
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
        for row_x, row_y in zip(x, y):
            offset = row_x[0]
            assert 0 <= offset <= len(tokens) - ctx - 1
            window = tokens[offset : offset + ctx + 1]
            np.testing.assert_array_equal(row_x, window[:-1])
            np.testing.assert_array_equal(row_y, window[1:])

    # Offsets cover [0, len - ctx - 1] inclusive, from a memmap too.
    np.arange(19, dtype=np.uint16).tofile(tmp_path / "t.bin")
    (tmp_path / "t.json").write_text('{"dtype": "uint16"}')
    short = data.load_tokens(tmp_path / "t.bin")
    batches = _batches(data.make_windows_dataset(short, ctx, 16, seed=0), 4)
    assert {int(o) for x, _ in batches for o in x[:, 0]} == {0, 1, 2}


def test_windows_are_deterministic_and_resumable():
    tokens = np.random.default_rng(0).integers(0, 257, 5000).astype(np.uint16)
    first = _batches(data.make_windows_dataset(tokens, 32, 4, seed=7), 6)
    again = _batches(data.make_windows_dataset(tokens, 32, 4, seed=7), 6)
    other = _batches(data.make_windows_dataset(tokens, 32, 4, seed=8), 6)
    resumed = _batches(data.make_windows_dataset(tokens, 32, 4, seed=7, skip_batches=4), 2)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    assert len({a[0].tobytes() for a in first}) == 6  # batches differ
    for (x1, _), (x2, _) in zip(first[4:], resumed):
        np.testing.assert_array_equal(x1, x2)


def test_eval_dataset_is_finite_and_fixed():
    tokens = np.arange(3000, dtype=np.uint16)
    one = _batches(data.make_eval_dataset(tokens, 16, 4, steps=3, seed=0), 10)
    two = _batches(data.make_eval_dataset(tokens, 16, 4, steps=3, seed=0), 10)
    assert len(one) == 3
    for (x1, y1), (x2, y2) in zip(one, two):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        data.make_eval_dataset(tokens, 16, 4, steps=0)


def test_pipelines_run_without_the_autotuner():
    # An autotuned iterator's deletion waits for the autotuner's next
    # wake-up (seconds in a long run); see data.PARALLEL_READS.
    tokens = np.arange(3000, dtype=np.uint16)
    for dataset in (data.make_windows_dataset(tokens, 16, 4),
                    data.make_eval_dataset(tokens, 16, 4, steps=2)):
        assert dataset.options().autotune.enabled is False
    assert len(_batches(data.make_eval_dataset(tokens, 16, 4, steps=2), 5)) == 2


def test_too_short_corpus_is_an_error():
    with pytest.raises(ValueError, match=r"10 tokens, but context_length \+ 1 = 11"):
        data.make_windows_dataset(np.arange(10), 10, 2)
    with pytest.raises(ValueError, match=r"10 tokens, but context_length \+ 1 = 17"):
        data.make_eval_dataset(np.arange(10), 16, 2, steps=1)
    with pytest.raises(ValueError, match="skip_batches must be >= 0"):
        data.make_windows_dataset(np.arange(100), 10, 2, skip_batches=-1)


def test_toy_model_fits_on_the_windows(tmp_path):
    text = default_corpus()[:20_000]
    tok = ByteTokenizer()
    tokens = data.load_tokens(data.build_token_file([text, EOT_TOKEN.join(["a", "b"])], tok, tmp_path))
    train, val = data.split_tokens(tokens, 0.1)
    model = keras.Sequential([
        keras.Input((32,), dtype="int32"),
        keras.layers.Embedding(tok.vocab_size, 8),
        keras.layers.Dense(tok.vocab_size),
    ])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        data.make_windows_dataset(train, 32, 8, seed=0),
        steps_per_epoch=2,
        epochs=1,
        validation_data=data.make_eval_dataset(val, 32, 8, steps=2),
        verbose=0,
        shuffle=False,
    )
    losses = history.history["loss"] + history.history["val_loss"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert losses[0] < np.log(tok.vocab_size) + 0.5  # a real cross-entropy
