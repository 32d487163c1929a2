"""Where `keras-gpt train`'s wall time goes besides its training steps.

Runs `keras-gpt train` in this process (the same `main()` the console
script calls) with timers around its phases, then prints each phase's wall
and CPU seconds and the run's wall time over the sum of its step times
(steps x the steady step time that the run's own `Throughput` callback
measured in each evaluation period; the first, compiling step is counted
as overhead, as are imports, tokenizing, building, evaluations, sampled
continuations, checkpoints and the exit). Default: nanoGPT's CPU "baby"
config (char vocabulary, 4 layers, 4 heads, d_model 128, context 64, batch
12, learning rate 1e-3, no dropout) for 2000 steps with 4 evaluations.

    KERAS_BACKEND=jax .venv/bin/python tools/train_overhead.py
    KERAS_BACKEND=torch .venv/bin/python tools/train_overhead.py --steps 400 \
        --eval-every 100 -- --samples 0       # extra `keras-gpt train` flags

`--smoke`: 20 steps, 2 evaluations (tests/training/test_overhead.py).
The run directory is a temporary one; the token cache is the user's.
"""

import argparse
import os
import sys
import time

# Before anything else: the run's wall time starts with the imports.
START = (time.perf_counter(), time.process_time())

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BABY = ["--tokenizer", "char", "--n-layers", "4", "--n-heads", "4",
        "--d-model", "128", "--context-length", "64", "--batch-size", "12",
        "--learning-rate", "1e-3", "--dropout", "0"]


class Phases:
    """Wall and CPU seconds per named phase (summed over repeats)."""

    def __init__(self):
        self.seconds = {}

    def add(self, name, wall, cpu):
        w, c, n = self.seconds.get(name, (0.0, 0.0, 0))
        self.seconds[name] = (w + wall, c + cpu, n + 1)

    def wrap(self, owner, attribute, name):
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - wall,
                         time.process_time() - cpu)

        setattr(owner, attribute, timed)


def _instrument(phases, marks):
    """Timers around the run's phases; `marks` collects callback times."""
    import keras

    from keras_gpt import model as model_module
    from keras_gpt import training
    from keras_gpt.training import callbacks, run

    phases.wrap(run, "prepare_data", "tokenizer + token file")
    build = model_module.GPT.__init__

    def __init__(self, config, **kwargs):  # Keras reads this signature
        wall, cpu = time.perf_counter(), time.process_time()
        build(self, config, **kwargs)
        phases.add("build the model", time.perf_counter() - wall,
                   time.process_time() - cpu)

    model_module.GPT.__init__ = __init__
    phases.wrap(training, "compile_for_pretraining", "compile()")
    phases.wrap(callbacks.RunLogger, "on_epoch_end",
                "checkpoint + metrics + plot")
    phases.wrap(callbacks.Samples, "on_epoch_end", "sampled continuations")

    class Marks(keras.callbacks.Callback):
        """Epoch and evaluation boundaries (no batch hooks: no host syncs)."""

        def _mark(self, name):
            marks.append((name, time.perf_counter(), time.process_time()))

        def on_train_begin(self, logs=None):
            self._mark("train_begin")

        def on_train_end(self, logs=None):
            self._mark("train_end")

        def on_epoch_begin(self, epoch, logs=None):
            self._mark("epoch_begin")

        def on_test_begin(self, logs=None):
            # Training steps may still be running (JAX dispatches them
            # asynchronously): wait for the last one, so that they count
            # as steps, not as evaluation.
            keras.ops.convert_to_numpy(self.model.trainable_variables[0])
            self._mark("test_begin")

        def on_test_end(self, logs=None):
            self._mark("test_end")

        def on_epoch_end(self, epoch, logs=None):
            rate = logs.get("tok/s") if logs else None
            marks.append(("epoch_end", time.perf_counter(),
                          time.process_time(), rate))

    fit = keras.Model.fit

    def fit_with_marks(self, *args, callbacks=None, **kwargs):
        return fit(self, *args, callbacks=[*(callbacks or []), Marks()],
                   **kwargs)

    keras.Model.fit = fit_with_marks


def _report(phases, marks, steps, eval_every, tokens_per_step, end):
    """Print the phases; returns (wall, sum of step times)."""
    step_sum, first_steps, evaluate = 0.0, (0.0, 0.0), (0.0, 0.0)
    begin, test_begin = None, None
    for mark in marks:
        name, wall, cpu = mark[:3]
        if name == "epoch_begin":
            begin = (wall, cpu)
        elif name == "test_begin":
            test_begin = (wall, cpu)
            train_wall = wall - begin[0]
        elif name == "test_end":
            evaluate = (evaluate[0] + wall - test_begin[0],
                        evaluate[1] + cpu - test_begin[1])
        elif name == "epoch_end":
            rate = mark[3]
            steady = tokens_per_step / rate
            step_sum += eval_every * steady
            if first_steps == (0.0, 0.0):  # compiles in the first epoch
                first_steps = (train_wall - eval_every * steady, 0.0)
    phases.add("evaluation batches (Keras evaluate)", *evaluate)
    phases.add("first step over the steady one (compiling)", *first_steps)
    train_end = next(m for m in marks if m[0] == "train_end")
    phases.add("fit's end to the process' exit", end[0] - train_end[1],
               end[1] - train_end[2])
    wall = end[0] - START[0]
    print(f"{'phase':46}{'wall s':>9}{'cpu s':>9}")
    for name, (w, c, n) in phases.seconds.items():
        label = name if n == 1 else f"{name} (x{n})"
        print(f"{label:46}{w:9.2f}{c:9.2f}")
    rest = wall - step_sum - sum(w for w, _, _ in phases.seconds.values())
    print(f"{'the rest (fit and Keras between the phases)':46}{rest:9.2f}")
    print(f"{'whole run (process start to exit)':46}{wall:9.2f}"
          f"{end[1] - START[1]:9.2f}")
    print(f"{'sum of step times (steady ms/step x steps)':46}{step_sum:9.2f}")
    print(f"steady step {1000 * step_sum / steps:.1f} ms; wall / sum of step "
          f"times {wall / step_sum:.3f}x")
    return wall, step_sum


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("extra", nargs="*",
                        help="More `keras-gpt train` flags (after --).")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.eval_every = 20, 10
    import atexit
    import tempfile

    phases, marks, done = Phases(), [], {}
    # Registered first, so it runs after every other exit handler (the
    # tf.data reads' wait among them): the whole run ends there.
    atexit.register(lambda: done and _report(
        phases, marks, args.steps, args.eval_every, done["tokens_per_step"],
        (time.perf_counter(), time.process_time())))
    phases.add("imports", time.perf_counter() - START[0],
               time.process_time() - START[1])
    wall, cpu = time.perf_counter(), time.process_time()
    from keras_gpt.commands.main import main as keras_gpt_main
    phases.add("import keras_gpt.commands", time.perf_counter() - wall,
               time.process_time() - cpu)
    _instrument(phases, marks)
    with tempfile.TemporaryDirectory() as folder:
        flags = [*BABY, "--steps", str(args.steps), "--eval-every",
                 str(args.eval_every), "--out", os.path.join(folder, "run"),
                 *args.extra]
        status = keras_gpt_main(["train", *flags])
    if status:
        raise SystemExit(status)
    done["tokens_per_step"] = (int(flags[flags.index("--batch-size") + 1])
                               * int(flags[flags.index("--context-length")
                                           + 1]))


if __name__ == "__main__":
    main()
