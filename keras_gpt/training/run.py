"""A training run: corpus -> tokenizer -> token file -> GPT.fit -> RUN_DIR.

`train_run` is what `keras-gpt train` calls. A run directory holds:
`config.json` (the GPTConfig), `run.json` (the run's options), `tokenizer/`,
`model.keras` (the checkpoint, written at each evaluation: the model,
loadable with `keras.models.load_model`, and the optimizer state that
`--resume` continues from), `state.json`, `metrics.jsonl`, `loss.png`,
`distribution.json` (engine, devices and each variable's layout) and
TensorBoard logs in `logs/`.
"""

import dataclasses
import json
import math
import shutil
from pathlib import Path

from keras_gpt.config import GPTConfig
from keras_gpt.files import atomic_write
from keras_gpt.training import source as source_lib

# What the defaults train: a model that learns visibly on 2 CPU cores in a
# few minutes on the embedded default corpus.
DEFAULT_MODEL = dict(n_layers=4, n_heads=4, d_model=128, context_length=128)


@dataclasses.dataclass
class RunOptions:
    """Every choice of a run; `None` means "the default" (or, with
    `--resume`, "as stored")."""

    data: list = None
    tokenizer: str = None
    vocab_size: int = None
    preset: str = None
    n_layers: int = None
    n_heads: int = None
    d_model: int = None
    context_length: int = None
    positions: str = None
    dropout: float = None
    batch_size: int = None
    steps: int = None
    learning_rate: float = None
    warmup_steps: int = None
    eval_every: int = None
    eval_steps: int = None
    val_fraction: float = None
    seed: int = None
    samples: int = None
    data_parallel: int = None
    model_parallel: int = None
    lora_rank: int = None
    lora_alpha: float = None
    lora_targets: str = None


DEFAULTS = dict(tokenizer="bpe", vocab_size=1024, dropout=0.0, batch_size=16,
                steps=1200, learning_rate=2e-3, eval_every=200, eval_steps=20,
                val_fraction=0.1, seed=0, samples=2, data_parallel=1,
                model_parallel=1)
# Options that may change on --resume: they do not alter what is trained
# (the layout changes where the arithmetic runs, not what it computes).
RESUMABLE_CHANGES = ("eval_steps", "samples", "data_parallel",
                     "model_parallel")
MODEL_FIELDS = ("n_layers", "n_heads", "d_model", "context_length",
                "positions", "dropout")


def resolve_options(given, stored=None):
    """Fill defaults; on resume, check `given` against the stored options."""
    given = {k: v for k, v in dataclasses.asdict(given).items()
             if v is not None}
    if stored is not None:
        for key, value in given.items():
            if key in RESUMABLE_CHANGES or stored.get(key) == value:
                continue
            raise ValueError(
                f"This run directory holds another run's config: "
                f"--{key.replace('_', '-')} {value} differs from the stored "
                f"{stored.get(key)!r}. Resume without it, or start a new run "
                "with another --out.")
        return {**stored, **given}
    return {**DEFAULTS, **given}


def check_options(o):
    positive = ("batch_size", "steps", "eval_every", "eval_steps",
                "data_parallel", "model_parallel")
    for key in positive:
        if o.get(key, 1) < 1:
            raise ValueError(f"--{key.replace('_', '-')} {o[key]} must be >= 1.")
    if o["steps"] % o["eval_every"]:
        raise ValueError(f"--steps {o['steps']} must be a multiple of "
                         f"--eval-every {o['eval_every']}.")
    if not 0.0 < o["val_fraction"] < 1.0:
        raise ValueError(f"--val-fraction {o['val_fraction']} must be in "
                         "(0, 1).")
    if o["learning_rate"] <= 0:
        raise ValueError(f"--learning-rate {o['learning_rate']} must be > 0.")


def model_config(o, vocab_size):
    """The GPTConfig of the options: a preset or the flags (or defaults)."""
    fields = {k: o[k] for k in MODEL_FIELDS if o.get(k) is not None}
    if o.get("preset"):
        return GPTConfig.from_preset(o["preset"], vocab_size=vocab_size,
                                     **fields)
    return GPTConfig(vocab_size=vocab_size, **{**DEFAULT_MODEL, **fields})


def prepare_data(o, tokenizer=None, cache_dir=None):
    """Tokenizer (trained unless given) and the (train, val) token arrays."""
    from keras_gpt import data
    from keras_gpt.data.corpus import default_documents
    from keras_gpt.tokenizers import make_tokenizer

    source = (data.find_text_files(o["data"]) if o.get("data")
              else default_documents())
    if tokenizer is None:
        kwargs = {} if o["tokenizer"] in ("byte", "char") else {
            "vocab_size": o["vocab_size"]}
        tokenizer = make_tokenizer(o["tokenizer"], data.iter_documents(source),
                                   **kwargs)
    cache_dir = Path(cache_dir or Path.home() / ".cache" / "keras_gpt")
    path = data.build_token_file(source, tokenizer, cache_dir / "tokens")
    train, val = data.split_tokens(data.load_tokens(path), o["val_fraction"])
    return tokenizer, train, val


def check_lengths(train, val, context_length):
    need = context_length + 1
    for name, part in (("training", train), ("validation", val)):
        if len(part) < need:
            raise ValueError(
                f"The {name} part of the corpus has {len(part):,} tokens, "
                f"fewer than context_length + 1 = {need}: give more text, a "
                "smaller --context-length or another --val-fraction.")


def train_run(run_dir, options, resume=False, cache_dir=None, verbose=1,
              source=None):
    """Train (or resume) a GPT into `run_dir`; returns the final metrics.

    Everything that can be wrong with the input is checked before
    `run_dir` is created; a run that fails before its first checkpoint
    leaves no directory behind. The parallel layout (backend, mesh against
    heads, d_mlp and batch, device count) is checked before the corpus is
    even read. `source` (a `keras_gpt.training.source.Source`) starts the
    run from a trained model (`keras_gpt.finetune`).
    """
    from keras_gpt.parallel.distribution import Parallelism
    from keras_gpt.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    stored, tokenizer = None, None
    if resume:
        if not (run_dir / "run.json").is_file():
            raise FileNotFoundError(f"Nothing to resume in {run_dir}: no "
                                    "run.json (start a run without --resume).")
        stored = json.loads((run_dir / "run.json").read_text())
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"{run_dir} already holds files: continue that run "
                         "with --resume, or choose another --out.")
    o = resolve_options(options, stored)
    if source is not None:
        if resume:
            raise ValueError("--init-from starts a new run; --resume continues "
                             "the one in --out (its source is in run.json).")
        o = source_lib.source_options(
            o, {k: v for k, v in dataclasses.asdict(options).items()
                if v is not None}, source)
    elif o.get("lora_rank") and not (stored or {}).get("init_from"):
        raise ValueError("--lora-rank needs --init-from SOURCE: LoRA adapts "
                         "a trained model.")
    if resume:
        source_lib.check_resumable(o, run_dir)
    check_options(o)
    parallel = Parallelism(o.get("data_parallel", 1),
                           o.get("model_parallel", 1))
    # The vocabulary (not known before the tokenizer) does not enter the
    # layout checks; runs stored before parallelism existed default to 1.
    parallel.check(model_config(o, vocab_size=2), o["batch_size"])
    if resume:
        tokenizer = load_tokenizer(run_dir / "tokenizer")
    elif source is not None:
        tokenizer = source.tokenizer
    tokenizer, train, val = prepare_data(o, tokenizer, cache_dir)
    config = model_config(o, tokenizer.vocab_size)
    if source is not None:
        config = source_lib.source_config(o, source)
    elif resume and o.get("init_from"):
        config = source_lib.stored_config(run_dir)
    if resume:
        saved = GPTConfig.from_json((run_dir / "config.json").read_text())
        if saved != config:
            raise ValueError(f"{run_dir}/config.json holds another model: "
                             f"{saved} != {config}.")
    check_lengths(train, val, config.context_length)

    created = not run_dir.exists()
    try:
        if not resume:
            _start_run_dir(run_dir, o, config, tokenizer)
        return _fit(run_dir, o, config, tokenizer, train, val, resume,
                    verbose, parallel, source)
    except BaseException:
        if created and not (run_dir / "model.keras").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _start_run_dir(run_dir, o, config, tokenizer):
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / "tokenizer")
    atomic_write(run_dir / "config.json", config.to_json())
    atomic_write(run_dir / "run.json", json.dumps(o, indent=2))


def _fit(run_dir, o, config, tokenizer, train, val, resume, verbose,
         parallel, source=None):
    """Build, compile, resume and fit inside the layout's scope (variables
    are placed where they are created)."""
    with parallel.scope(config):
        return _fit_in_scope(run_dir, o, config, tokenizer, train, val,
                             resume, verbose, parallel, source)


def _fit_in_scope(run_dir, o, config, tokenizer, train, val, resume, verbose,
                  parallel, source=None):
    import keras

    from keras_gpt.data import windows
    from keras_gpt.training.callbacks import (EpochTensorBoard, RunLogger, Samples,
                                     Throughput)
    from keras_gpt.training import compile_for_pretraining

    keras.utils.set_random_seed(o["seed"])
    model = source_lib.build_model(o, config, source)
    compile_for_pretraining(model, total_steps=o["steps"],
                            learning_rate=o["learning_rate"],
                            warmup_steps=o.get("warmup_steps"))
    parallel.prepare(model)
    atomic_write(run_dir / "distribution.json",
                 json.dumps(parallel.describe(model), indent=2))
    wall = 0.0
    if resume:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(run_dir / "model.keras")
        wall = json.loads((run_dir / "state.json").read_text())["wall_s"]
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if step >= o["steps"]:
        print(f"{run_dir} already trained {step} of {o['steps']} steps.")
        return {"step": step}

    ctx, batch = config.context_length, o["batch_size"]
    train_ds = windows.make_windows_dataset(train, ctx, batch,
                                            seed=o["seed"], skip_batches=step)
    val_ds = windows.make_eval_dataset(val, ctx, batch, o["eval_steps"],
                                       seed=o["seed"] + 1)
    throughput = Throughput(batch * ctx)
    logger = RunLogger(run_dir, throughput, wall_offset=wall)
    callbacks = [throughput, logger, EpochTensorBoard(str(run_dir / "logs"))]
    if o["samples"]:
        callbacks.append(Samples(tokenizer, [""] * o["samples"],
                                 seed=o["seed"]))
    if source is not None:
        source_lib.evaluate_source(model, val_ds, run_dir, verbose)
    if verbose:
        print(f"GPT: {config.n_layers} layers, d_model {config.d_model}, "
              f"{config.n_heads} heads, context {ctx}, vocab "
              f"{config.vocab_size} ({o['tokenizer']}); "
              f"{model.count_params():,} parameters; {len(train):,} training "
              f"and {len(val):,} validation tokens; backend "
              f"{keras.backend.backend()}{_layout_note(parallel)}; run "
              f"directory {run_dir}")
        if o.get("init_from"):
            print(f"From {o['init_from']['path']}: "
                  f"{source_lib.describe(model)}")
    history = model.fit(
        train_ds, epochs=o["steps"] // o["eval_every"],
        steps_per_epoch=o["eval_every"], initial_epoch=step // o["eval_every"],
        validation_data=val_ds, callbacks=callbacks, verbose=verbose,
        shuffle=False)
    final = {k: float(v[-1]) for k, v in history.history.items() if v}
    final["step"] = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    return final


def _layout_note(parallel):
    if parallel.size == 1:
        return ""
    return (f"; data x model parallel {parallel.data_parallel} x "
            f"{parallel.model_parallel} on {parallel.size} devices "
            f"({parallel.engine})")


def bigram_loss(train, val, vocab_size):
    """Validation cross-entropy of an add-one-smoothed bigram model fit on
    `train`: the baseline a GPT must beat."""
    import numpy as np

    counts = np.ones((vocab_size, vocab_size))
    np.add.at(counts, (np.asarray(train[:-1], np.int64),
                       np.asarray(train[1:], np.int64)), 1)
    logp = np.log(counts / counts.sum(1, keepdims=True))
    v = np.asarray(val, np.int64)
    return float(-logp[v[:-1], v[1:]].mean()) if len(v) > 1 else math.nan
