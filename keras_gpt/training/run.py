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
import sys
from pathlib import Path

from keras_gpt.backend import use_compilation_cache
from keras_gpt.config import GPTConfig
from keras_gpt.files import atomic_write
from keras_gpt.training.options import (DEFAULT_MODEL, DEFAULTS,  # noqa: F401
                                        MODEL_FIELDS, RESUMABLE_CHANGES,
                                        RunOptions, check_options,
                                        model_config, replan,
                                        resolve_options, schedule_plan)
from keras_gpt.training import sft
from keras_gpt.training import source as source_lib
from keras_gpt.training.run_dir import RunDir


def prepare_data(o, tokenizer=None, cache_dir=None):
    """Tokenizer (trained unless given) and the (train, val) token arrays."""
    from keras_gpt import data
    from keras_gpt.data.corpus import default_documents
    from keras_gpt.tokenizers import make_tokenizer

    if o.get("sft"):
        return sft.prepare_sft(o, tokenizer, cache_dir)
    if o.get("data"):
        source = data.find_text_files(o["data"])
        data.check_text_files(source)
    else:
        source = default_documents()
    if tokenizer is None:
        kwargs = {} if o["tokenizer"] in ("byte", "char") else {
            "vocab_size": o["vocab_size"]}
        tokenizer = make_tokenizer(o["tokenizer"], data.iter_documents(source),
                                   **kwargs)
    cache_dir = Path(cache_dir or Path.home() / ".cache" / "keras_gpt")
    path = data.build_token_file(source, tokenizer, cache_dir / "tokens")
    train, val = data.split_tokens(data.load_tokens(path), o["val_fraction"])
    return tokenizer, train, val


def check_lengths(train, val, context_length, o=None, vocab_size=None):
    """Refuses a corpus too small to train on; returns warnings (one line
    each, with the numbers) where training still makes sense."""
    need = context_length + 1
    for name, part in (("training", train), ("validation", val)):
        if len(part) < need:
            raise ValueError(
                f"The {name} part of the corpus has {len(part):,} tokens, "
                f"fewer than --context-length + 1 = {need}: give more text, a "
                "smaller --context-length or another --val-fraction.")
    if o is None:
        return []
    if o.get("tokenizer") == "bpe" and vocab_size and len(train) < vocab_size:
        raise ValueError(
            f"The training part of the corpus has {len(train):,} tokens, "
            f"fewer than the --vocab-size {vocab_size} BPE ids it was asked "
            "for: most ids would never be trained. Give more text, or a "
            f"--vocab-size below {len(train):,} (or --tokenizer byte/char).")
    warnings = []
    window_per_batch = o["eval_steps"] * need
    if len(val) < window_per_batch:
        warnings.append(
            f"the validation part has {len(val):,} tokens, fewer than one "
            f"window of {need} per evaluation batch ({o['eval_steps']} x "
            f"{need} = {window_per_batch:,}): its windows overlap, so "
            "val_loss rests on few tokens; raise --val-fraction or lower "
            "--eval-steps for a steadier figure.")
    return warnings


def train_run(run_dir, options, resume=False, cache_dir=None, verbose=1,
              source=None):
    """Train (or resume) a GPT into `run_dir`; returns the final metrics.

    Checks run cheapest first: the options (no data, no model), the run
    directory, the parallel layout (before the corpus is read), the
    checkpoint's file (before the data is tokenized), then the data.
    Nothing is written before they pass, and a new run that fails before
    its first checkpoint leaves no directory behind. A run directory
    killed at any moment can be continued or restarted
    (`keras_gpt.training.run_dir`). `source` (a
    `keras_gpt.training.source.Source`) starts a new run from a trained
    model (`keras_gpt.finetune`); with `resume`, it gives the initial
    weights again to such a run stopped before its first checkpoint.
    """
    from keras_gpt.checkpoints import check_shape, saved_step
    from keras_gpt.parallel.distribution import Parallelism
    from keras_gpt.tokenizers import load_tokenizer

    run = RunDir(run_dir)
    run_dir = run.path
    stored, tokenizer = None, None
    if resume:
        run.check_resumable()
        stored = run.stored_options()
        if stored.get("method") == "dpo":
            raise ValueError(f"{run_dir} is a DPO run, which does not resume: "
                             f"start a new one from it (--init-from "
                             f"{run_dir}).")
    o = resolve_options(options, stored)
    if source is not None and not resume:
        o = source_lib.source_options(
            o, {k: v for k, v in dataclasses.asdict(options).items()
                if v is not None}, source)
    elif o.get("lora_rank") and not o.get("init_from"):
        raise ValueError("--lora-rank needs --init-from SOURCE: LoRA adapts "
                         "a trained model.")
    if resume:
        source_lib.check_resumable(o, run_dir)
        if source is not None and run.kind == "checkpointed":
            raise ValueError("--init-from starts a new run; --resume "
                             "continues the one in --out from its checkpoint.")
    if o.get("sft"):
        sft.check_sft_options(o)
    check_options(o)
    if not resume:
        run.check_new()
    parallel = Parallelism(o.get("data_parallel", 1),
                           o.get("model_parallel", 1))
    # The vocabulary (not known before the tokenizer) does not enter the
    # layout checks; runs stored before parallelism existed default to 1.
    parallel.check(model_config(o, vocab_size=2), o["batch_size"])
    step = 0
    if resume:
        tokenizer = load_tokenizer(run_dir / "tokenizer")
        config = (source_lib.stored_config(run_dir) if o.get("init_from")
                  else model_config(o, tokenizer.vocab_size))
        saved = GPTConfig.from_json((run_dir / "config.json").read_text())
        if saved != config:
            raise ValueError(f"{run_dir}/config.json holds another model: "
                             f"{saved} != {config}.")
        if run.kind == "checkpointed":
            checkpoint = run_dir / "model.keras"
            check_shape(checkpoint, config, f"{run_dir}/config.json")
            step = saved_step(checkpoint) or 0
        if o["steps"] <= step and o["steps"] != stored["steps"]:
            raise ValueError(
                f"--steps {o['steps']} is not more than the {step} steps "
                f"{run_dir} has trained: give a larger --steps to extend it.")
        o = replan(o, stored["steps"], step)
    elif source is not None:
        tokenizer = source.tokenizer
    tokenizer, train, val = prepare_data(o, tokenizer, cache_dir)
    if source is not None and not resume:
        config = source_lib.source_config(o, source)
    elif not resume:
        config = model_config(o, tokenizer.vocab_size)
    if not o.get("sft"):
        for warning in check_lengths(train, val, config.context_length, o,
                                     tokenizer.vocab_size):
            print(f"Warning: {warning}", file=sys.stderr, flush=True)
    # A second run of the same shapes loads its compiled programs.
    use_compilation_cache(Path(cache_dir or Path.home() / ".cache"
                               / "keras_gpt") / "xla")

    created, existed = False, run_dir.exists()
    try:
        if resume:
            run.clean_leftovers()
            run.truncate_metrics(step)
            if o != stored:
                atomic_write(run_dir / "run.json", json.dumps(o, indent=2))
        else:
            created = True
            _start_run_dir(run, o, config, tokenizer)
        return _fit(run, o, config, tokenizer, train, val, step, verbose,
                    parallel, source)
    except BaseException:
        if created and not (run_dir / "model.keras").exists():
            _remove_new_run(run_dir, keep_folder=existed)
        raise


def _remove_new_run(run_dir, keep_folder):
    """What a new run wrote before its first checkpoint (the folder too,
    unless it was there, empty, before)."""
    if not keep_folder:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for path in run_dir.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _start_run_dir(run, o, config, tokenizer):
    """The run's set-up, `run.json` last (without it, a new run clears
    what a kill left here)."""
    run.check_new()
    run.path.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run.path / "tokenizer")
    atomic_write(run.path / "config.json", config.to_json())
    atomic_write(run.path / "run.json", json.dumps(o, indent=2))


def _fit(run, o, config, tokenizer, train, val, step, verbose, parallel,
         source=None):
    """Build, compile, resume and fit inside the layout's scope (variables
    are placed where they are created)."""
    with parallel.scope(config):
        return _fit_in_scope(run, o, config, tokenizer, train, val, step,
                             verbose, parallel, source)


def _fit_in_scope(run, o, config, tokenizer, train, val, step, verbose,
                  parallel, source=None):
    import keras

    from keras_gpt.checkpoints import load_weights
    from keras_gpt.data import windows
    from keras_gpt.training import compile_for_pretraining
    from keras_gpt.training.callbacks import (EpochTensorBoard, RunLogger,
                                              Samples, StopOnNonFiniteLoss,
                                              Throughput)

    run_dir = run.path
    keras.utils.set_random_seed(o["seed"])
    # The source's weights on a new run, or on one stopped before its first
    # checkpoint (a checkpointed run loads its own below).
    model = source_lib.build_model(
        o, config, None if run.kind == "checkpointed" else source)
    first_steps, replans = schedule_plan(o)
    compile_fn = sft.compile_for_sft if o.get("sft") else compile_for_pretraining
    compile_fn(model, total_steps=first_steps,
               learning_rate=o["learning_rate"],
               warmup_steps=o["warmup_steps"], replans=replans)
    parallel.prepare(model)
    atomic_write(run_dir / "distribution.json",
                 json.dumps(parallel.describe(model), indent=2))
    if run.kind == "checkpointed":
        model.optimizer.build(model.trainable_variables)
        load_weights(model, run_dir / "model.keras")
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if step and config.dropout:
        replay_dropout_draws(model, step, o["batch_size"])
    if step >= o["steps"]:
        print(f"{run_dir} already trained {step} of {o['steps']} steps "
              "(--resume --steps N with a larger N extends it).")
        return {"step": step}
    if verbose and run.kind != "new":
        print(_resume_note(run, o, step))

    ctx, batch = config.context_length, o["batch_size"]
    prompts = [""] * o["samples"]
    if o.get("sft"):
        train_ds, val_ds, per_step, prompts = sft.sft_fit_data(
            o, tokenizer, train, val, step)
        amount = f"{len(train):,} training and {len(val):,} held-out examples"
    else:
        train_ds = windows.make_windows_dataset(
            train, ctx, batch, seed=o["seed"], skip_batches=step)
        val_ds = windows.make_eval_dataset(val, ctx, batch, o["eval_steps"],
                                           seed=o["seed"] + 1)
        per_step = batch * ctx
        amount = (f"{len(train):,} training and {len(val):,} validation "
                  "tokens")
    throughput = Throughput(per_step)
    logger = RunLogger(run_dir, throughput, wall_offset=run.wall_s(step))
    callbacks = [StopOnNonFiniteLoss(run_dir), throughput, logger,
                 EpochTensorBoard(str(run_dir / "logs"))]
    if o["samples"] and prompts:
        callbacks.append(Samples(tokenizer, prompts, seed=o["seed"]))
    if source is not None and run.kind == "new":
        source_lib.evaluate_source(model, val_ds, run_dir, verbose)
    if verbose:
        print(f"GPT: {config.n_layers} layers, d_model {config.d_model}, "
              f"{config.n_heads} heads, context {ctx}, vocab "
              f"{config.vocab_size} ({o['tokenizer']}); "
              f"{model.count_params():,} parameters; {amount}; backend "
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


def replay_dropout_draws(model, steps, batch_size=1):
    """Sets the dropout layers' random state to where `steps` training steps
    leave it, so a resumed run draws the masks a run never stopped draws.

    Keras saves no `SeedGenerator` state in a checkpoint. A model built
    after the run's `keras.utils.set_random_seed` starts from the run's
    first state, and each training step advances each generator by the
    draws of one training-mode forward pass (evaluation and sampling draw
    none); those are counted here with one such pass on a (batch, 1) input.
    """
    import keras

    states = [v for v in model.variables
              if v.path.endswith("seed_generator_state")]
    if not states:
        return
    before = [keras.ops.convert_to_numpy(v) for v in states]
    model(keras.ops.zeros((batch_size, 1), "int32"), training=True)
    for variable, start in zip(states, before):
        per_step = keras.ops.convert_to_numpy(variable) - start
        variable.assign(start + per_step * steps)


def _resume_note(run, o, step):
    """What `--resume` continues from, in one line."""
    if run.kind == "checkpointed":
        start = (f"Resuming {run.path} from step {step} "
                 f"({run.path / 'model.keras'})")
    else:
        start = (f"Resuming {run.path} from step 0 (it stopped before its "
                 "first checkpoint; same options, same initial weights)")
    note = f"{start} to step {o['steps']}."
    replans = schedule_plan(o)[1]
    if replans and replans[-1][0] == step:
        note += (f" The learning rate is re-planned from step {step}: a half "
                 f"cosine from its rate there to {o['learning_rate'] / 10:g} "
                 f"at step {o['steps']}.")
    return note


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
