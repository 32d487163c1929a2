"""A run that starts from a trained model (`keras-gpt train --init-from`).

`keras_gpt.finetune.load_source` reads the source (a run directory, a
Hugging Face GPT-2 folder, a KerasHub preset or `.keras` file) into a
`Source`; `train_run(..., source=...)` then trains a new run directory from
it: the source's config, weights and tokenizer, the new data tokenized with
that tokenizer, a fresh optimizer and schedule, and `run.json` recording
where it came from. With `lora_rank` the source's weights stay frozen and
only LoRA factors train (`GPT.enable_lora`).
"""

import dataclasses

from keras_gpt import lora
from keras_gpt.config import GPTConfig

# Options that fix the model's shape or its tokenizer: they come from the
# source and may not be given with it.
SHAPE_OPTIONS = ("preset", "n_layers", "n_heads", "d_model", "context_length",
                 "positions", "tokenizer", "vocab_size")
LORA_OPTIONS = ("lora_rank", "lora_alpha", "lora_targets")


@dataclasses.dataclass
class Source:
    """A trained model to start a run from.

    Attributes:
        model: A `keras_gpt.GPT` (float or int8, no LoRA factors).
        tokenizer: Its `keras_gpt.tokenizers.Tokenizer`.
        record: What `run.json` records under `init_from` (kind, path, ...).
    """

    model: object
    tokenizer: object
    record: dict


def source_options(o, given, source):
    """The run's options from the user's (`given`) and the source's.

    Raises:
        ValueError: a shape or tokenizer option given with a source, or a
            quantized source without LoRA (its int8 weights cannot train).
    """
    path = source.record.get("path", "the source")
    for key in SHAPE_OPTIONS:
        if given.get(key) is not None:
            raise ValueError(
                f"--{key.replace('_', '-')} cannot be used with --init-from: "
                f"the model's shape and tokenizer come from {path}; drop the "
                "flag (dropout and training flags may change).")
    config = source.model.config
    modes = source.model.quantization_modes()
    if modes and not o.get("lora_rank"):
        raise ValueError(
            f"{path} is quantized ({', '.join(sorted(modes))}): its weights "
            "cannot be trained. Add --lora-rank R to train a LoRA on it, or "
            "start from the float run.")
    if o.get("lora_rank") is not None:
        lora.check_rank(o["lora_rank"], o.get("lora_alpha"), config)
        o = {**o, "lora_targets": ",".join(
            lora.check_targets(o.get("lora_targets"), config))}
    elif o.get("lora_alpha") is not None or o.get("lora_targets"):
        raise ValueError("--lora-alpha and --lora-targets need --lora-rank.")
    dropout = o.get("dropout")
    return {**o, "tokenizer": getattr(source.tokenizer, "kind", None),
            "vocab_size": config.vocab_size, "preset": None,
            "n_layers": config.n_layers, "n_heads": config.n_heads,
            "d_model": config.d_model,
            "context_length": config.context_length,
            "positions": config.positions,
            "dropout": config.dropout if dropout is None else dropout,
            "quantized": sorted(modes)[0] if modes else None,
            "init_from": source.record}


def check_resumable(o, run_dir):
    """Refuses to resume a run whose weights cannot train (int8, no LoRA)."""
    if o.get("quantized") and not o.get("lora_rank"):
        raise ValueError(
            f"{run_dir} holds an {o['quantized']} model: its weights cannot "
            f"train further. Train a LoRA on it: keras-gpt train --init-from "
            f"{run_dir} --lora-rank 8 --out NEW_RUN_DIR")


def source_config(o, source):
    """The source's `GPTConfig` with the run's dropout."""
    return dataclasses.replace(source.model.config, dropout=o["dropout"])


def stored_config(run_dir):
    return GPTConfig.from_json((run_dir / "config.json").read_text())


def build_model(o, config, source=None):
    """The run's GPT: int8 if its source is, the source's weights (a new
    run) and LoRA factors when `o` asks for them."""
    from keras_gpt.model import GPT

    model = GPT(config)
    if o.get("quantized"):
        model.quantize(o["quantized"])
    if source is not None:
        copy_weights(source.model, model)
    if o.get("lora_rank"):
        model.enable_lora(o["lora_rank"], o.get("lora_alpha"),
                          o.get("lora_targets"))
    return model


def copy_weights(source, target):
    """Assigns every variable of `target` from the same path in `source`
    (paths without the models' names; the order may differ: a quantized
    layer built int8 lists its variables differently from one quantized
    after it was built)."""
    import keras

    def by_path(model):
        return {v.path.split("/", 1)[1]: v for v in model.weights}

    values, variables = by_path(source), by_path(target)
    if set(values) != set(variables):
        raise ValueError(
            "The source's variables do not match the new model's: missing "
            f"{sorted(set(variables) - set(values))[:3]}, unexpected "
            f"{sorted(set(values) - set(variables))[:3]}.")
    for path, variable in variables.items():
        # A host copy: on JAX, training donates (deletes) the buffers of
        # the variables it updates, and the source may be used again.
        variable.assign(keras.ops.convert_to_numpy(values[path]))


def evaluate_source(model, val_ds, run_dir, verbose=1):
    """The source's validation loss on the new data, before any step: the
    first line of `metrics.jsonl` (step 0) and printed."""
    import json

    import keras

    val_loss = float(keras.ops.convert_to_numpy(
        model.evaluate(val_ds, verbose=0, return_dict=True)["loss"]))
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 0, "loss": None, "val_loss": val_loss,
                            "tokens_per_s": None, "wall_s": 0.0}) + "\n")
    if verbose:
        print(f"Source's validation loss on this data: {val_loss:.4f}")
    return val_loss


def describe(model):
    """One line: trainable and total parameters."""
    trainable, total = model.lora_parameter_counts()
    lora = "" if model.lora_rank is None else (
        f" (LoRA rank {model.lora_rank}, alpha {model.lora_alpha:g}, targets "
        f"{','.join(model.lora_targets)})")
    return (f"trainable parameters {trainable:,} of {total:,} "
            f"({100 * trainable / total:.2f}%){lora}")
