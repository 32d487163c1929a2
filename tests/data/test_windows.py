"""Tests for keras_gpt.data.windows: tf.data windows of a token array, and a fit on them."""

import keras
import numpy as np
import pytest

from keras_gpt.data import windows
from keras_gpt import data
from keras_gpt.data.corpus import default_corpus
from keras_gpt.tokenizers import EOT_TOKEN, ByteTokenizer


def _batches(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


@pytest.mark.backend_independent
def test_windows_are_shifted_slices_of_the_stream(tmp_path):
    tokens = np.arange(500, dtype=np.uint16)
    ctx, batch = 16, 8
    for x, y in _batches(windows.make_windows_dataset(tokens, ctx, batch, seed=1), 5):
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
    batches = _batches(windows.make_windows_dataset(short, ctx, 16, seed=0), 4)
    assert {int(o) for x, _ in batches for o in x[:, 0]} == {0, 1, 2}


@pytest.mark.backend_independent
def test_windows_are_deterministic_and_resumable():
    tokens = np.random.default_rng(0).integers(0, 257, 5000).astype(np.uint16)
    first = _batches(windows.make_windows_dataset(tokens, 32, 4, seed=7), 6)
    again = _batches(windows.make_windows_dataset(tokens, 32, 4, seed=7), 6)
    other = _batches(windows.make_windows_dataset(tokens, 32, 4, seed=8), 6)
    resumed = _batches(windows.make_windows_dataset(tokens, 32, 4, seed=7, skip_batches=4), 2)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    assert len({a[0].tobytes() for a in first}) == 6  # batches differ
    for (x1, _), (x2, _) in zip(first[4:], resumed):
        np.testing.assert_array_equal(x1, x2)


@pytest.mark.backend_independent
def test_eval_dataset_is_finite_and_fixed():
    tokens = np.arange(3000, dtype=np.uint16)
    one = _batches(windows.make_eval_dataset(tokens, 16, 4, steps=3, seed=0), 10)
    two = _batches(windows.make_eval_dataset(tokens, 16, 4, steps=3, seed=0), 10)
    assert len(one) == 3
    for (x1, y1), (x2, y2) in zip(one, two):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        windows.make_eval_dataset(tokens, 16, 4, steps=0)


@pytest.mark.backend_independent
def test_pipelines_run_without_the_autotuner():
    # An autotuned iterator's deletion waits for the autotuner's next
    # wake-up (seconds in a long run); see windows.PARALLEL_READS.
    tokens = np.arange(3000, dtype=np.uint16)
    for dataset in (windows.make_windows_dataset(tokens, 16, 4),
                    windows.make_eval_dataset(tokens, 16, 4, steps=2)):
        assert dataset.options().autotune.enabled is False
    assert len(_batches(windows.make_eval_dataset(tokens, 16, 4, steps=2), 5)) == 2


@pytest.mark.backend_independent
def test_too_short_corpus_is_an_error():
    with pytest.raises(ValueError, match=r"10 tokens, but context_length \+ 1 = 11"):
        windows.make_windows_dataset(np.arange(10), 10, 2)
    with pytest.raises(ValueError, match=r"10 tokens, but context_length \+ 1 = 17"):
        windows.make_eval_dataset(np.arange(10), 16, 2, steps=1)
    with pytest.raises(ValueError, match="skip_batches must be >= 0"):
        windows.make_windows_dataset(np.arange(100), 10, 2, skip_batches=-1)


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
        windows.make_windows_dataset(train, 32, 8, seed=0),
        steps_per_epoch=2,
        epochs=1,
        validation_data=windows.make_eval_dataset(val, 32, 8, steps=2),
        verbose=0,
        shuffle=False,
    )
    losses = history.history["loss"] + history.history["val_loss"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert losses[0] < np.log(tok.vocab_size) + 0.5  # a real cross-entropy
