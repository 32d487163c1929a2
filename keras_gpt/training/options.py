"""A run's options: defaults, what `--resume` may change, and the checks
that cost nothing (done before the corpus is read or a model is built).

`run.json` holds the resolved options: every default filled in, `--data`
as absolute paths (so a run resumes from any working directory), the
warmup in steps, and `extensions`, the steps at which `--resume --steps N`
re-planned the learning-rate schedule (`keras_gpt.training.recipe`).
"""

import dataclasses
import math
import os

from keras_gpt.config import GPTConfig

# What the defaults train: on the embedded default corpus (466 KB of
# English, 2 CPU cores), about 2 minutes to a validation loss near the best
# this model reaches on it (the curve is in the README's Training section).
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
    sft: str = None


# Chosen from measured validation curves on that corpus (README, Training):
# BPE 2048 gave 1.86 validation bits per character at step 400, against 1.97
# for 1024 and 2.24 for 512, at about the same cost per character; a higher
# learning rate (4e-3) gained nothing and 8e-3 was worse; dropout 0.1 was
# worse in so short a run; 300 steps take about 2 minutes.
DEFAULTS = dict(tokenizer="bpe", vocab_size=2048, dropout=0.0, batch_size=16,
                steps=300, learning_rate=2e-3, eval_every=50, eval_steps=10,
                val_fraction=0.1, seed=0, samples=2, data_parallel=1,
                model_parallel=1)
# Options that may change on --resume: they do not alter what is trained
# (the layout changes where the arithmetic runs, not what it computes).
# `--steps` may change too: the schedule is re-planned (see `resolve_options`).
RESUMABLE_CHANGES = ("eval_steps", "samples", "data_parallel",
                     "model_parallel")
MODEL_FIELDS = ("n_layers", "n_heads", "d_model", "context_length",
                "positions", "dropout")
POSITIVE = ("batch_size", "steps", "eval_every", "eval_steps",
            "data_parallel", "model_parallel", "n_layers", "n_heads",
            "d_model", "context_length", "vocab_size")


def _flag(key):
    return "--" + key.replace("_", "-")


def absolute_paths(paths):
    """`--data` (and `--sft`) as absolute paths (globs stay globs), so that the run can
    be resumed from any working directory."""
    return None if paths is None else [os.path.abspath(os.path.expanduser(
        os.fspath(p))) for p in paths]


def same_paths(given, stored):
    """Whether two `--data` lists name the same files, relative paths taken
    from the current working directory."""
    def real(paths):
        return [os.path.realpath(os.path.expanduser(os.fspath(p)))
                for p in paths or []]

    return real(given) == real(stored)


def resolve_options(given, stored=None):
    """Fill defaults; on resume, check `given` against the stored options.

    Args:
        given: A `RunOptions` (`None` fields: default, or as stored).
        stored: The options in `run.json` when resuming.

    Returns:
        A dict of every option. On resume, `steps` may differ from the
        stored value (the caller re-plans the schedule); any other change
        that alters what is trained is a ValueError naming the flag.
    """
    given = {k: v for k, v in dataclasses.asdict(given).items()
             if v is not None}
    if "data" in given:
        given["data"] = absolute_paths(given["data"])
    if "sft" in given:
        given["sft"] = absolute_paths([given["sft"]])[0]
    if stored is None:
        o = {**DEFAULTS, **given}
        if o.get("warmup_steps") is None and _is_count(o["steps"]):
            o["warmup_steps"] = o["steps"] // 10
        o.setdefault("extensions", [])
        return o
    stored = dict(stored)
    if stored.get("warmup_steps") is None:  # runs stored before it was
        stored["warmup_steps"] = _first_plan(stored) // 10
    stored.setdefault("extensions", [])
    for key, value in given.items():
        if key in RESUMABLE_CHANGES or key == "steps" or stored.get(
                key) == value:
            continue
        if key == "data" and same_paths(value, stored.get("data")):
            given[key] = stored[key]
            continue
        if key == "sft" and stored.get("sft") and same_paths(
                [value], [stored["sft"]]):
            given[key] = stored[key]
            continue
        shown = " ".join(value) if key == "data" else value
        before = (" ".join(stored[key]) if key == "data" and stored.get(key)
                  else repr(stored.get(key)))
        raise ValueError(
            f"This run directory holds another run's config: {_flag(key)} "
            f"{shown} differs from the stored {before}. Resume without it, "
            "or start a new run with another --out.")
    return {**stored, **given}


def _first_plan(o):
    """The steps the run was first planned for."""
    return o["extensions"][0][1] if o.get("extensions") else o["steps"]


def _is_count(x):
    return isinstance(x, int) and not isinstance(x, bool)


def check_options(o):
    """The checks that need no data and no model: every bad flag is a
    ValueError naming it, before anything slow runs."""
    for key in POSITIVE:
        value = o.get(key)
        if value is not None and (not _is_count(value) or value < 1):
            raise ValueError(f"{_flag(key)} {value} must be an integer >= 1.")
    if o["steps"] % o["eval_every"]:
        raise ValueError(f"--steps {o['steps']} must be a multiple of "
                         f"--eval-every {o['eval_every']}.")
    reals = {"val_fraction": o["val_fraction"],
             "learning_rate": o["learning_rate"], "dropout": o.get("dropout")}
    for key, value in reals.items():
        if value is not None and not (isinstance(value, (int, float))
                                      and math.isfinite(value)):
            raise ValueError(f"{_flag(key)} {value} is not a finite number.")
    if not 0.0 < o["val_fraction"] < 1.0:
        raise ValueError(f"--val-fraction {o['val_fraction']} must be in "
                         "(0, 1).")
    if o["learning_rate"] <= 0:
        raise ValueError(f"--learning-rate {o['learning_rate']} must be > 0.")
    if o.get("dropout") is not None and not 0 <= o["dropout"] < 1:
        raise ValueError(f"--dropout {o['dropout']} must be in [0, 1).")
    warmup, planned = o.get("warmup_steps"), _first_plan(o)
    if warmup is not None and (not _is_count(warmup)
                               or not 0 <= warmup < planned):
        raise ValueError(f"--warmup-steps {warmup} must be an integer in "
                         f"[0, --steps {planned}).")
    if o.get("seed") is not None and not _is_count(o["seed"]):
        raise ValueError(f"--seed {o['seed']} must be an integer.")
    if o.get("samples") is not None and o["samples"] < 0:
        raise ValueError(f"--samples {o['samples']} must be >= 0.")
    d_model, n_heads = o.get("d_model"), o.get("n_heads")
    if not o.get("preset"):
        d_model = d_model or DEFAULT_MODEL["d_model"]
        n_heads = n_heads or DEFAULT_MODEL["n_heads"]
    if d_model and n_heads and d_model % n_heads:
        raise ValueError(f"--d-model {d_model} is not divisible by --n-heads "
                         f"{n_heads}: each head takes d_model / n_heads "
                         "dimensions.")


def model_config(o, vocab_size):
    """The GPTConfig of the options: a preset or the flags (or defaults)."""
    fields = {k: o[k] for k in MODEL_FIELDS if o.get(k) is not None}
    if o.get("preset"):
        return GPTConfig.from_preset(o["preset"], vocab_size=vocab_size,
                                     **fields)
    return GPTConfig(vocab_size=vocab_size, **{**DEFAULT_MODEL, **fields})


def schedule_plan(o):
    """`(first_steps, [(from_step, to_steps), ...])`: the steps the run was
    first planned for, and each re-plan `--resume --steps` made since."""
    return _first_plan(o), [tuple(e) for e in o.get("extensions", [])[1:]]


def replan(o, planned_steps, step):
    """The options with the schedule re-planned at `step` (the checkpoint's)
    when `--resume --steps` asks for other than the `planned_steps`.

    `extensions` becomes `[[0, first plan], [step, new steps], ...]`; a
    second re-plan at the same step replaces the first. At step 0 nothing
    has been trained, so the new steps are simply the plan.
    """
    if o["steps"] == planned_steps:
        return o
    if step == 0:
        return {**o, "extensions": []}
    extensions = [list(e) for e in o.get("extensions", [])] or [
        [0, planned_steps]]
    if len(extensions) > 1 and extensions[-1][0] == step:
        extensions[-1] = [step, o["steps"]]
    else:
        extensions.append([step, o["steps"]])
    return {**o, "extensions": extensions}
