"""Keras callbacks of a training run: throughput, metrics log, checkpoints,
samples and the loss curve. Each evaluation is the end of a Keras epoch."""

import json
import math
import threading
import time
from pathlib import Path

import keras
import numpy as np

from keras_gpt.files import atomic_write, replace_atomically

LORA_FILE = "lora.safetensors"


def _float(value):
    return float(keras.ops.convert_to_numpy(value))


class Throughput(keras.callbacks.Callback):
    """Adds perplexity and tokens/s to the logs the progress bar shows.

    Safe for Keras' asynchronous batch ends (`async_safe`): on JAX and
    PyTorch, Keras then converts each step's logs and runs the batch-end
    callbacks on worker threads, so the training loop never waits for a
    step's loss to reach the host. Calls may then overlap or come out of
    order, so the rate counts calls, whatever their step index, over the
    time since the epoch's first call (the first step, which includes any
    compilation, is left out).

    Args:
        tokens_per_step: batch_size * context_length.
    """

    async_safe = True

    def __init__(self, tokens_per_step):
        super().__init__()
        self.tokens_per_step = tokens_per_step
        self._lock = threading.Lock()
        self._calls, self._start, self._end = 0, None, None

    def on_epoch_begin(self, epoch, logs=None):
        with self._lock:
            self._calls, self._start, self._end = 0, None, None

    def on_train_batch_end(self, batch, logs=None):
        with self._lock:
            now = time.perf_counter()
            self._calls += 1
            if self._start is None:
                self._start = now
            self._end = now
            rate = self._rate()
        if logs is not None and "loss" in logs:
            logs["perplexity"] = math.exp(min(_float(logs["loss"]), 50.0))
            if not math.isnan(rate):
                logs["tok/s"] = rate

    def _rate(self):
        if self._calls < 2 or self._end <= self._start:
            return float("nan")
        return (self._calls - 1) * self.tokens_per_step / (self._end
                                                            - self._start)

    def tokens_per_s(self):
        """Tokens/s over this epoch's steps after its first; NaN before."""
        with self._lock:
            return self._rate()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["tok/s"] = self.tokens_per_s()
        for key in ("loss", "val_loss"):
            if key in logs:
                name = "perplexity" if key == "loss" else "val_perplexity"
                logs[name] = math.exp(min(_float(logs[key]), 50.0))


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback at its default `update_freq="epoch"`,
    without batch hooks.

    At that setting Keras' own batch hooks write nothing, but a callback
    that overrides them (and is not `async_safe`) makes Keras run every
    batch end, and the conversion of the step's logs to Python numbers, in
    the training loop. The graph is not written (`write_graph=False`: that
    is done from the first batch end).

    Args:
        log_dir: Where the event files go.
        **kwargs: Any other `keras.callbacks.TensorBoard` argument except
            `update_freq`, `write_graph` and `profile_batch`.
    """

    on_train_batch_begin = keras.callbacks.Callback.on_train_batch_begin
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end
    on_test_batch_begin = keras.callbacks.Callback.on_test_batch_begin
    on_test_batch_end = keras.callbacks.Callback.on_test_batch_end

    def __init__(self, log_dir, **kwargs):
        super().__init__(log_dir, update_freq="epoch", write_graph=False,
                         profile_batch=0, **kwargs)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the
    step and what the run directory still holds."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or infinite.

    Raises `NonFiniteLossError` naming the step, so nothing after it runs:
    no evaluation, no checkpoint (the last finite one stays as it was).
    Unlike `keras.callbacks.TerminateOnNaN` it names the step and is
    `async_safe`: on JAX and PyTorch the check runs on Keras' callback
    threads and the error reaches the training loop a step or two later,
    before the epoch's end (where checkpoints are written).

    The loss in the logs is the epoch's running mean, which becomes
    non-finite at the first non-finite step and stays so. Keras' threads
    may check a later step before an earlier one, so a non-finite step
    waits until every step begun before it was checked, and the error
    names the first non-finite one.

    Args:
        run_dir: The run directory (named in the message), or None.
    """

    async_safe = True

    def __init__(self, run_dir=None):
        super().__init__()
        self.run_dir = run_dir
        self._epoch = 0
        self._checked = threading.Condition()
        self._pending = set()  # calls begun, not yet checked (first batch)
        self._non_finite = {}  # batch -> its non-finite loss

    def on_epoch_begin(self, epoch, logs=None):
        # Keras waits for the previous epoch's batch ends before this.
        self._epoch = epoch
        with self._checked:
            self._pending, self._non_finite = set(), {}

    def on_train_batch_begin(self, batch, logs=None):
        with self._checked:  # the training loop's thread, in step order
            self._pending.add(batch)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        loss = None if loss is None else _float(loss)
        with self._checked:
            # With steps_per_execution, `batch` is a call's last step and
            # the begun index its first: the latest begun at or before it.
            begun = [b for b in self._pending if b <= batch]
            if begun:
                self._pending.discard(max(begun))
                self._checked.notify_all()
            if loss is None or math.isfinite(loss):
                return
            self._non_finite[batch] = loss
            # Wait for the calls begun before this one to be checked (their
            # logs are ready: only a call whose other callbacks raised
            # would leave one pending, hence the time limit).
            self._checked.wait_for(lambda: not any(
                b <= batch for b in self._pending), timeout=30)
            first = min(self._non_finite)
            loss = self._non_finite[first]
        steps = self.params.get("steps") or 0
        step = self._epoch * steps + first + 1
        raise NonFiniteLossError(non_finite_message(
            f"The training loss became {loss}", step, self.run_dir))


def non_finite_message(what, step, run_dir):
    """`what` at `step`, what the run directory keeps, what to do."""
    kept = ""
    if run_dir is not None:
        run_dir = Path(run_dir)
        kept = (f"; {run_dir / 'model.keras'} keeps the last finite "
                "checkpoint" if (run_dir / "model.keras").is_file() else
                "; no checkpoint was written")
    return (f"{what} at step {step}: training stopped{kept}. Lower "
            "--learning-rate (or check the data).")


class RunLogger(keras.callbacks.Callback):
    """At each evaluation: append to metrics.jsonl, checkpoint the run,
    redraw the loss curve.

    The checkpoint is `model.keras`: the model, its weights and the
    optimizer state, whose step counter is the run's step (`--resume` loads
    it with `load_weights`; `keras.models.load_model` reads it whole). It is
    written to a temporary name and renamed, so a kill leaves the previous
    one whole. The metrics row comes first: a kill between the two leaves a
    row past the checkpoint, which `--resume` drops and writes again. A
    non-finite loss or weight is never checkpointed (`NonFiniteLossError`).
    A LoRA run also writes its adapter alone, `lora.safetensors`.

    Args:
        run_dir: The run directory.
        wall_offset: Seconds already spent by earlier sessions of this run.
        throughput: The run's `Throughput` callback.
    """

    def __init__(self, run_dir, throughput, wall_offset=0.0):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.throughput = throughput
        self.wall_offset = wall_offset
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = int(_float(self.model.optimizer.iterations))
        record = {"step": step,
                  "loss": _float(logs["loss"]) if "loss" in logs else None,
                  "val_loss": (_float(logs["val_loss"]) if "val_loss" in logs
                               else None),
                  "tokens_per_s": self.throughput.tokens_per_s(),
                  "wall_s": self.wall_s()}
        self.check_finite(step, record)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        self.save_checkpoint()
        plot_losses(self.run_dir)

    def check_finite(self, step, record):
        """Raises NonFiniteLossError for a non-finite loss or weight."""
        for key, name in (("loss", "training"), ("val_loss", "validation")):
            if record[key] is not None and not math.isfinite(record[key]):
                raise NonFiniteLossError(non_finite_message(
                    f"The {name} loss became {record[key]}", step,
                    self.run_dir))
        for variable in self.model.weights:
            if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable))):
                raise NonFiniteLossError(non_finite_message(
                    f"The weight {variable.path} became non-finite", step,
                    self.run_dir))

    def wall_s(self):
        return round(self.wall_offset + time.time() - self.started, 3)

    def save_checkpoint(self):
        replace_atomically(self.run_dir / "model.keras", self.model.save)
        if getattr(self.model, "lora_rank", None) is not None:
            # The adapter alone, beside the checkpoint (GPT.load_lora_weights).
            self.model.save_lora_weights(self.run_dir / LORA_FILE)
        atomic_write(self.run_dir / "state.json", json.dumps(
            {"step": int(_float(self.model.optimizer.iterations)),
             "wall_s": self.wall_s()}))


class Samples(keras.callbacks.Callback):
    """Prints a few sampled continuations at each evaluation."""

    def __init__(self, tokenizer, prompts, max_new_tokens=80,
                 temperature=0.8, top_k=40, seed=0):
        super().__init__()
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.kwargs = dict(max_new_tokens=max_new_tokens,
                           temperature=temperature, top_k=top_k, seed=seed)
        self._said_no_room = False

    def on_epoch_end(self, epoch, logs=None):
        from keras_gpt.generation import generate

        if not self.prompts:
            return
        # An empty prompt starts from end-of-text, which takes a position.
        context = self.model.config.context_length
        budget = context - max(
            max(1, len(self.tokenizer.encode(p))) for p in self.prompts)
        if budget < 1:  # e.g. --context-length 1: said once, not sampled
            if not self._said_no_room:
                print(f"\n--- no samples: context_length {context} leaves no "
                      "position after the prompt", flush=True)
                self._said_no_room = True
            return
        # A small (e.g. char) vocabulary may have fewer ids than top_k.
        top_k = self.kwargs["top_k"]
        kwargs = {**self.kwargs,
                  "max_new_tokens": min(self.kwargs["max_new_tokens"], budget),
                  "top_k": top_k and min(top_k,
                                         self.model.config.vocab_size)}
        texts = generate(self.model, self.prompts, tokenizer=self.tokenizer,
                         **kwargs)
        print()  # Keras' progress bar ends its line after the callbacks
        for prompt, text in zip(self.prompts, texts):
            print(f"--- sample: {prompt!r} ->\n{prompt}{text}\n", flush=True)


def plot_losses(run_dir):
    """Draw `loss.png` (train and validation loss by step) from
    `metrics.jsonl`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    run_dir = Path(run_dir)
    records = [json.loads(line) for line in
               (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    figure, axes = pyplot.subplots(figsize=(6, 4))
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if points:
            axes.plot(*zip(*points), marker="o", label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("cross-entropy (nats/token)")
    axes.legend()
    axes.grid(alpha=0.3)
    try:
        replace_atomically(run_dir / "loss.png", lambda tmp: figure.savefig(
            tmp, dpi=100, bbox_inches="tight"))
    finally:
        pyplot.close(figure)
