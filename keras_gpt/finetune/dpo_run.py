"""`dpo`: a new run directory trained from a source by DPO on preference
pairs (`keras-gpt dpo`).

The run directory is a normal one for `keras-gpt generate`, `export` and
`train --init-from`: `model.keras` (the policy, with its LoRA factors if
any; `lora.safetensors` beside it), `config.json`, `tokenizer/`,
`run.json` (the options, the source and the data's counts),
`state.json`, `metrics.jsonl` (step 0 is the source on the held-out
pairs; then, per evaluation, `loss`, `val_loss` and the training and
held-out `rewards/*`), `loss.png` and TensorBoard logs. A DPO run does not
resume: a stopped run keeps its last checkpoint, which a new run can start
from (`--init-from`).
"""

import json
import math
import os
import shutil
import time
from pathlib import Path

import keras

from keras_gpt.files import atomic_write, replace_atomically
from keras_gpt.finetune import dpo as dpo_lib
from keras_gpt.finetune.reference import cached_reference
from keras_gpt.finetune.sources import load_source
from keras_gpt.training.callbacks import (LORA_FILE, EpochTensorBoard,
                                          Samples, Throughput, plot_losses)
from keras_gpt.training.source import Source

DPO_DEFAULTS = dict(beta=0.1, steps=200, batch_size=8, learning_rate=5e-6,
                    warmup_steps=None, eval_every=50, eval_steps=20,
                    val_fraction=0.1, seed=0, samples=2)
# LoRA factors start at zero and take a larger step (as in finetune).
DPO_LORA_LEARNING_RATE = 5e-5


def dpo(source, out, *, data, beta=None, lora_rank=None, lora_alpha=None,
        lora_targets=None, cache_dir=None, verbose=1, **options):
    """Trains `out`, a new run directory, from `source` by DPO on `data`.

    Args:
        source: A path (`keras_gpt.finetune.load_source` lists them) or a
            `Source`, whose model is then trained in place (it is the
            policy).
        out: The new run directory (absent or empty).
        data: A JSON Lines file of `{"prompt", "chosen", "rejected"}`
            (`keras_gpt.data.jsonl`); `val_fraction` of it is held out.
        beta: DPO's temperature (default 0.1).
        lora_rank, lora_alpha, lora_targets: Train LoRA factors only
            (`GPT.enable_lora`); the reference is then the model without
            them. Without LoRA every weight trains and the reference's
            log-probabilities are computed once and cached.
        cache_dir: Token and reference cache (default ~/.cache/keras_gpt).
        verbose: Progress bar and messages.
        **options: `steps`, `batch_size` (pairs), `learning_rate`,
            `warmup_steps`, `eval_every`, `eval_steps`, `val_fraction`,
            `seed`, `samples` (`DPO_DEFAULTS`; learning rate
            `DPO_LORA_LEARNING_RATE` with LoRA).

    Returns:
        The final metrics (`step`, `loss`, `val_loss`, `rewards/...`,
        `val_rewards/...`).

    Raises:
        FileNotFoundError, ValueError: a bad source, file, line or option
            (the message names it); nothing is written then.

    Example:

    ```python
    from keras_gpt.finetune import dpo
    dpo("runs/sft", "runs/dpo", data="prefs.jsonl", beta=0.1, lora_rank=8)
    ```
    """
    o = _options(beta, lora_rank, options)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already holds files; choose another --out "
                         "(a DPO run does not resume).")
    if not isinstance(source, Source):
        source = load_source(source)
    policy, tokenizer = source.model, source.tokenizer
    modes = policy.quantization_modes()
    if modes and lora_rank is None:
        raise ValueError(f"{source.record['path']} is quantized "
                         f"({', '.join(sorted(modes))}): its weights cannot "
                         "be trained. Add --lora-rank R.")
    if lora_rank is not None:
        policy.enable_lora(lora_rank, lora_alpha, lora_targets)
    elif lora_alpha is not None or lora_targets:
        raise ValueError("--lora-alpha and --lora-targets need --lora-rank.")
    train, val, arrays, stats = _data(o, data, policy, tokenizer, cache_dir,
                                      verbose)
    o.update(data=os.path.abspath(data), init_from=source.record,
             method="dpo",
             lora_rank=policy.lora_rank, lora_alpha=policy.lora_alpha,
             lora_targets=(",".join(policy.lora_targets)
                           if policy.lora_targets else None), dpo_data=stats)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save(out / "tokenizer")
        atomic_write(out / "config.json", policy.config.to_json())
        atomic_write(out / "run.json", json.dumps(o, indent=2))
        return _fit(out, o, policy, tokenizer, val, arrays, verbose)
    except BaseException:
        if created and not (out / "model.keras").exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _options(beta, lora_rank, options):
    unknown = sorted(set(options) - set(DPO_DEFAULTS))
    if unknown:
        raise TypeError(f"dpo() got unknown options {unknown}.")
    defaults = dict(DPO_DEFAULTS)
    if lora_rank is not None:
        defaults["learning_rate"] = DPO_LORA_LEARNING_RATE
    o = {**defaults, **{k: v for k, v in options.items() if v is not None}}
    if beta is not None:
        o["beta"] = beta
    o["beta"] = dpo_lib.check_beta(o["beta"])
    for key in ("steps", "batch_size", "eval_every", "eval_steps"):
        if o[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} {o[key]} must be "
                             ">= 1.")
    if o["samples"] < 0:
        raise ValueError(f"--samples {o['samples']} must be >= 0.")
    if o["steps"] % o["eval_every"]:
        raise ValueError(f"--steps {o['steps']} must be a multiple of "
                         f"--eval-every {o['eval_every']}.")
    if o["warmup_steps"] is not None and not 0 <= o["warmup_steps"] < o[
            "steps"]:
        raise ValueError(f"--warmup-steps {o['warmup_steps']} must be in "
                         f"[0, --steps {o['steps']}).")
    if not (math.isfinite(o["learning_rate"]) and o["learning_rate"] > 0):
        raise ValueError(f"--learning-rate {o['learning_rate']} must be a "
                         "finite number > 0.")
    if not 0.0 < o["val_fraction"] < 1.0:
        raise ValueError(f"--val-fraction {o['val_fraction']} must be in "
                         "(0, 1).")
    return o


def _data(o, data, policy, tokenizer, cache_dir, verbose):
    """Pairs read and split, their padded arrays (with the precomputed
    reference without LoRA), and the counts for run.json."""
    from keras_gpt.data.examples import build_preference_pairs, describe

    cache_dir = Path(cache_dir or Path.home() / ".cache" / "keras_gpt")
    pairs = build_preference_pairs(data, tokenizer,
                                   policy.config.context_length,
                                   cache_dir / "examples", warn=False)
    train, val = pairs.split(o["val_fraction"], o["seed"])
    if o["batch_size"] > len(train):
        raise ValueError(f"--batch-size {o['batch_size']} is larger than the "
                         f"{len(train)} training pairs of {data}.")
    if verbose:
        print(f"Preference data {describe(pairs)}; {len(val)} held out.")
    length = pairs.stats["longest"]
    arrays = {"train": train.arrays(length), "val": val.arrays(length)}
    if policy.lora_rank is None:
        for part in arrays.values():
            part["ref_chosen"], part["ref_rejected"] = cached_reference(
                policy, part, cache_dir / "examples", o["batch_size"])
    stats = {k: pairs.stats[k] for k in ("examples", "truncated", "identical",
                                         "identical_lines", "longest")}
    stats.update(train=len(train), held_out=len(val))
    return train, val, arrays, stats


def _fit(out, o, policy, tokenizer, val, arrays, verbose):
    from keras_gpt.backend import (keep_step_memory, training_jit_compile,
                                   use_fused_optimizer)
    from keras_gpt.data.batches import ordered_batches, shuffled_batches
    from keras_gpt.training.recipe import make_optimizer

    keras.utils.set_random_seed(o["seed"])
    model = dpo_lib.DPOModel(policy, beta=o["beta"])
    model.compile(optimizer=make_optimizer(
        o["steps"], learning_rate=o["learning_rate"],
        warmup_steps=o["warmup_steps"]), jit_compile=training_jit_compile())
    use_fused_optimizer(model.optimizer)
    keep_step_memory()
    train_ds = shuffled_batches(arrays["train"], o["batch_size"], o["seed"])
    val_ds = ordered_batches(arrays["val"], o["batch_size"], o["eval_steps"])
    length = arrays["train"]["chosen"].shape[1]
    throughput = PairThroughput(2 * o["batch_size"] * (length - 1))
    logger = DPOLogger(out, throughput)
    callbacks = [throughput, logger, EpochTensorBoard(str(out / "logs"))]
    prompts = [tokenizer.decode(val.prompts[i]) for i in range(len(val))
               if len(val.prompts[i]) <= policy.config.context_length - 8]
    if o["samples"] and prompts:
        callbacks.append(PolicySamples(tokenizer, prompts[:o["samples"]],
                                       seed=o["seed"]))
    start = model.evaluate(val_ds, verbose=0, return_dict=True)
    logger.write(0, {f"val_{k}": v for k, v in start.items()})
    if verbose:
        trainable, total = policy.lora_parameter_counts()
        print(f"DPO from {o['init_from']['path']}: beta {o['beta']:g}, "
              f"reference {model.reference}; trainable parameters "
              f"{trainable:,} of {total:,}; held-out loss at step 0 "
              f"{float(start['loss']):.4f} (log 2 = {math.log(2):.4f}); "
              f"backend {keras.backend.backend()}; run directory {out}")
    history = model.fit(
        train_ds, epochs=o["steps"] // o["eval_every"],
        steps_per_epoch=o["eval_every"], validation_data=val_ds,
        callbacks=callbacks, verbose=verbose, shuffle=False)
    final = {k: float(v[-1]) for k, v in history.history.items() if v}
    final["step"] = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    return final


class PairThroughput(Throughput):
    """Tokens/s of a DPO run (both completions of each pair), without the
    perplexity that `Throughput` derives from a cross-entropy loss."""

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if logs is not None:
            logs.pop("perplexity", None)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        for key in ("perplexity", "val_perplexity"):
            (logs or {}).pop(key, None)


class DPOLogger(keras.callbacks.Callback):
    """At each evaluation: the policy to `model.keras` (and its LoRA
    factors to `lora.safetensors`), `state.json`, a line of
    `metrics.jsonl` with every logged value, and `loss.png`."""

    def __init__(self, run_dir, throughput):
        super().__init__()
        self.run_dir, self.throughput = Path(run_dir), throughput
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        policy = self.model.policy  # `self.model` syncs JAX's state first
        step = int(_number(self.model.optimizer.iterations))
        replace_atomically(self.run_dir / "model.keras", policy.save)
        if policy.lora_rank is not None:
            policy.save_lora_weights(self.run_dir / LORA_FILE)
        wall = round(time.time() - self.started, 3)
        atomic_write(self.run_dir / "state.json",
                     json.dumps({"step": step, "wall_s": wall}))
        self.write(step, {**(logs or {}),
                          "tokens_per_s": self.throughput.tokens_per_s(),
                          "wall_s": wall})

    def write(self, step, logs):
        record = {"step": step, "loss": None, "val_loss": None}
        record.update({k: _number(v) for k, v in logs.items()
                       if k not in ("tok/s",)})
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        plot_losses(self.run_dir)


class PolicySamples(Samples):
    """`Samples` from the policy inside a `DPOModel`."""

    def on_epoch_end(self, epoch, logs=None):
        fitted = self.model  # syncs JAX's state first
        self._model = fitted.policy
        try:
            super().on_epoch_end(epoch, logs)
        finally:
            self._model = fitted


def _number(value):
    value = float(keras.ops.convert_to_numpy(value))
    return None if math.isnan(value) else value
