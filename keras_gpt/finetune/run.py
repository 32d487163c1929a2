"""`finetune`: a new run directory trained from a source, full or LoRA."""

from keras_gpt.finetune.sources import load_source
from keras_gpt.training.run import RunOptions, train_run
from keras_gpt.training.source import Source

# Defaults of a run from a source, where they differ from a run from
# scratch (`keras_gpt.training.run.DEFAULTS`): fewer steps, and a peak
# learning rate for adapting trained weights (LoRA's factors start at zero
# and take a larger one). Measured in tools/bench_finetune.py.
FINETUNE_DEFAULTS = dict(steps=400, learning_rate=3e-4)
LORA_LEARNING_RATE = 2e-3


def finetune(source, out, *, data=None, lora_rank=None, lora_alpha=None,
             lora_targets=None, cache_dir=None, verbose=1, **options):
    """Trains a new run directory `out` from `source`'s weights.

    The new data is tokenized with the source's tokenizer (and cached like
    any corpus); the optimizer and schedule are fresh; `out` is a normal run
    directory (`keras-gpt generate`, `export`, `train --resume` work on it)
    whose `run.json` records the source under `init_from`. Before the first
    step the source is evaluated on the new validation data (step 0 of
    `metrics.jsonl`). With `lora_rank`, only LoRA factors train and
    `out/lora.safetensors` holds them beside the checkpoint.

    Args:
        source: A path (`load_source` lists what it accepts) or a `Source`.
        out: The new run directory.
        data: Text files, folders or globs (default: the default corpus).
        lora_rank, lora_alpha, lora_targets: LoRA (`GPT.enable_lora`);
            None trains every weight.
        cache_dir: The token file cache.
        verbose: Progress bar and messages.
        **options: Any training option of `keras-gpt train` (`steps`,
            `learning_rate`, `batch_size`, `dropout`, `eval_every`, ...);
            the shape and tokenizer options are refused (they come from
            the source). Defaults: `FINETUNE_DEFAULTS`, and
            `LORA_LEARNING_RATE` with LoRA.

    Returns:
        The final metrics (a dict with `step`, `loss`, `val_loss`, ...).

    Raises:
        FileNotFoundError, ValueError: a bad source, data or option (the
            message names the value and the limit); nothing is written.

    Example:

    ```python
    from keras_gpt.finetune import finetune
    finetune("runs/gpt2", "runs/mine", data=["my_texts/"], lora_rank=8,
             steps=200)
    ```
    """
    unknown = sorted(set(options) - set(RunOptions.__dataclass_fields__))
    if unknown:
        raise TypeError(f"finetune() got unknown options {unknown}.")
    if not isinstance(source, Source):
        source = load_source(source)
    defaults = dict(FINETUNE_DEFAULTS)
    if lora_rank is not None:
        defaults["learning_rate"] = LORA_LEARNING_RATE
    given = {k: v for k, v in options.items() if v is not None}
    run_options = RunOptions(**{**defaults, **given}, data=data,
                             lora_rank=lora_rank, lora_alpha=lora_alpha,
                             lora_targets=lora_targets)
    return train_run(out, run_options, cache_dir=cache_dir, verbose=verbose,
                     source=source)
