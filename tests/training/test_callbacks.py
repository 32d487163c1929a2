"""The training run's callbacks: throughput maths and asynchronous batch ends."""

import math
import threading

import keras
import numpy as np
import pytest

from keras_gpt import (GPT, GPTConfig, compile_for_pretraining,
                       make_optimizer, next_token_loss)
from keras_gpt.training import callbacks as run_callbacks


@pytest.mark.backend_independent
def test_throughput_counts_steps_after_the_first_even_out_of_order(
        monkeypatch):
    clock = iter([10.0, 11.0, 12.0, 13.0])
    monkeypatch.setattr(run_callbacks.time, "perf_counter", lambda: next(clock))
    throughput = run_callbacks.Throughput(tokens_per_step=100)
    throughput.on_epoch_begin(0)
    assert math.isnan(throughput.tokens_per_s())
    seen = {}
    for batch in (1, 0, 3, 2):  # Keras' worker threads may reorder them
        logs = {"loss": 2.0}
        throughput.on_train_batch_end(batch, logs)
        seen[batch] = logs
    assert seen[1]["perplexity"] == pytest.approx(math.exp(2.0))
    assert "tok/s" not in seen[1]  # the first call includes compilation
    for batch in (0, 3, 2):
        assert seen[batch]["tok/s"] == pytest.approx(100.0)
    assert throughput.tokens_per_s() == pytest.approx(3 * 100 / 3.0)
    logs = {"loss": 1.0, "val_loss": 3.0}
    throughput.on_epoch_end(0, logs)
    assert logs["tok/s"] == pytest.approx(100.0)
    assert logs["val_perplexity"] == pytest.approx(math.exp(3.0))


class _Threads(keras.callbacks.Callback):
    async_safe = True

    def __init__(self):
        super().__init__()
        self.off_main = []

    def on_train_batch_end(self, batch, logs=None):
        self.off_main.append(threading.current_thread()
                             is not threading.main_thread())


def _batch_end_threads(callbacks):
    model = GPT(GPTConfig(vocab_size=32, context_length=8, d_model=16,
                          n_layers=1, n_heads=2))
    compile_for_pretraining(model, total_steps=10)
    ids = np.random.default_rng(0).integers(0, 32, (12, 8)).astype("int32")
    probe = _Threads()
    model.fit(ids, ids, batch_size=4, epochs=1, verbose=0,
              callbacks=[*callbacks, probe])
    return probe.off_main


def test_run_callbacks_leave_batch_ends_off_the_training_loop(tmp_path):
    """With `keras-gpt train`'s batch-level callbacks, Keras may still hand
    each step's logs to a worker thread (JAX, PyTorch), so the loop does not
    wait for them; Keras' own TensorBoard callback stops that."""
    ours = [run_callbacks.StopOnNonFiniteLoss(),
            run_callbacks.Throughput(32),
            run_callbacks.EpochTensorBoard(str(tmp_path / "ours"))]
    off_main = _batch_end_threads(ours)
    assert len(off_main) == 3
    if keras.backend.backend() == "tensorflow":
        # Keras never dispatches batch ends asynchronously on TensorFlow.
        assert not any(off_main)
    else:
        assert all(off_main)
        assert not any(_batch_end_threads(
            [keras.callbacks.TensorBoard(str(tmp_path / "keras"))]))
    # The epoch's metrics still reach TensorBoard.
    assert list((tmp_path / "ours" / "train").glob("*tfevents*"))


def test_a_non_finite_loss_stops_fit_naming_the_step(tmp_path):
    """Issue 17, item 5: the step is named and nothing after it runs (on
    JAX and PyTorch the check runs on Keras' callback thread)."""
    model = GPT(GPTConfig(vocab_size=32, context_length=8, d_model=16,
                          n_layers=1, n_heads=2))
    # Keras' own "auto" (no XLA on TensorFlow's CPU): a cheaper compile.
    model.compile(optimizer=make_optimizer(10, warmup_steps=0),
                  loss=next_token_loss())
    ids = np.random.default_rng(0).integers(0, 32, (24, 8)).astype("int32")
    # A NaN weight on a token of the second batch makes that step's loss
    # NaN on every backend, compiled or not (a huge learning rate made the
    # first non-finite step depend on the compiled program's arithmetic).
    weights = np.ones((24, 8), "float32")
    weights[5, 3] = np.nan
    ended = []

    class EpochEnds(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ended.append(epoch)

    (tmp_path / "model.keras").write_bytes(b"the last finite checkpoint")
    with pytest.raises(run_callbacks.NonFiniteLossError) as caught:
        model.fit(ids, ids, sample_weight=weights, batch_size=4, epochs=2,
                  shuffle=False, verbose=0,
                  callbacks=[run_callbacks.StopOnNonFiniteLoss(tmp_path),
                             EpochEnds()])
    assert str(caught.value).startswith(
        "The training loss became nan at step 2: training stopped; "
        f"{tmp_path / 'model.keras'} keeps the last finite checkpoint.")
    assert ended == []  # no epoch end: no evaluation, no checkpoint


@pytest.mark.backend_independent
def test_a_later_step_checked_first_still_names_the_first_non_finite_one():
    """Keras' worker threads may check step 3 before step 2 (the CI saw
    "step 3" for a NaN at step 2): the later check waits for the earlier
    one, and both name the first non-finite step and its loss."""
    stop = run_callbacks.StopOnNonFiniteLoss()
    raised = {}

    def batch_end(batch, loss):
        try:
            stop.on_train_batch_end(batch, {"loss": loss})
        except run_callbacks.NonFiniteLossError as error:
            raised[batch] = str(error)

    def out_of_order(first_end, later_end, first_loss, later_loss):
        """The later call's check starts first; it must wait."""
        raised.clear()
        later = threading.Thread(target=batch_end,
                                 args=(later_end, later_loss))
        later.start()
        later.join(timeout=0.5)
        assert later.is_alive() and not raised  # waits for the earlier one
        batch_end(first_end, first_loss)
        later.join(timeout=30)
        assert not later.is_alive()

    stop.set_params({"steps": 10})
    stop.on_epoch_begin(1)
    for batch in range(4):
        stop.on_train_batch_begin(batch)
    stop.on_train_batch_end(0, {"loss": 2.0})
    out_of_order(1, 2, math.inf, math.nan)
    assert raised.keys() == {1, 2}
    message = ("The training loss became inf at step 12: training stopped. "
               "Lower --learning-rate")
    assert all(text.startswith(message) for text in raised.values()), raised
    # A finite step, or logs without a loss, never waits or raises.
    stop.on_train_batch_end(3, {"accuracy": 0.5})

    # steps_per_execution=4: calls begin at 0 and 4 and end at 3 and 7.
    stop.set_params({"steps": 8})
    stop.on_epoch_begin(0)
    stop.on_train_batch_begin(0)
    stop.on_train_batch_begin(4)
    out_of_order(3, 7, 1.0, math.nan)
    assert list(raised.values()) == [
        "The training loss became nan at step 8: training stopped. Lower "
        "--learning-rate (or check the data)."]


@pytest.mark.backend_independent
def test_samples_say_once_that_a_one_position_context_has_no_room(capsys):
    """`keras-gpt train --context-length 1` trains (a bigram model); its
    sampled continuations are skipped with one line, not an error that
    stops the run after its first evaluation."""
    from keras_gpt.tokenizers import CharTokenizer

    tokenizer = CharTokenizer.train(["abc"])
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=1,
                          n_layers=1, n_heads=1, d_model=8))
    samples = run_callbacks.Samples(tokenizer, ["", ""])
    samples.set_model(model)
    samples.on_epoch_end(0)
    samples.on_epoch_end(1)
    out = capsys.readouterr().out
    assert out.count("no samples: context_length 1 leaves no position") == 1
