"""What `--init-from SOURCE` accepts, read into a `Source`.

- a run directory (`model.keras` and its tokenizer), as `keras-gpt train`,
  `convert` or `quantize` write it; a LoRA run's factors are merged first;
- a Hugging Face GPT-2 folder (`config.json` with `model_type` "gpt2", the
  weights, `vocab.json` and `merges.txt`);
- a KerasHub GPT-2 preset folder or a `.keras` file of a `GPT2CausalLM`
  (the tokenizer comes with the causal LM).
"""

import json
from pathlib import Path

from keras_gpt.training.source import Source

ACCEPTED = ("a run directory (model.keras + tokenizer/), a Hugging Face GPT-2 "
            "folder (config.json + model.safetensors or pytorch_model.bin + "
            "vocab.json + merges.txt), a KerasHub GPT-2 preset folder, or a "
            "KerasHub .keras file")


def load_source(path):
    """Reads a model to start from (see the module's docstring).

    Args:
        path: The source's path.

    Returns:
        A `keras_gpt.training.source.Source`: the model (float or int8, no
        LoRA factors), its tokenizer and what `run.json` records.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: `path` is none of the accepted sources, or has no
            tokenizer (the message names the missing files).

    Example:

    ```python
    source = load_source("runs/gpt2")
    source.model.config, source.tokenizer.vocab_size
    ```
    """
    path = Path(path)
    record = {"path": str(path.resolve())}
    if not path.exists():
        raise FileNotFoundError(f"--init-from {path}: no such file or folder "
                                f"(expected {ACCEPTED}).")
    if path.is_dir() and (path / "model.keras").is_file():
        return _from_run(path, record)
    config = _json(path / "config.json") if path.is_dir() else None
    if config is not None and "model_type" in config:
        return _from_huggingface(path, record)
    if str(path).endswith(".keras") or (config is not None
                                        and "class_name" in config):
        return _from_keras_hub(path, record)
    raise ValueError(f"--init-from {path} is not a model to start from: "
                     f"expected {ACCEPTED}.")


def _json(path):
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from error
    return data if isinstance(data, dict) else None


def _from_run(path, record):
    from keras_gpt.checkpoints import load_model
    from keras_gpt.files import run_tokenizer_dir
    from keras_gpt.model import GPT
    from keras_gpt.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(run_tokenizer_dir(path))
    model = load_model(path / "model.keras", compile=False)
    if not isinstance(model, GPT):
        raise ValueError(f"{path / 'model.keras'} holds a "
                         f"{type(model).__name__}, not a keras_gpt GPT.")
    if model.lora_rank is not None:
        record["merged_lora"] = {"rank": model.lora_rank,
                                 "alpha": model.lora_alpha,
                                 "targets": list(model.lora_targets)}
        model.merge_lora()
    state = _json(path / "state.json") or {}
    record.update(kind="run", step=state.get("step"))
    return Source(model, tokenizer, record)


def _from_huggingface(path, record):
    from keras_gpt.convert.huggingface import (from_huggingface,
                                               missing_tokenizer_files)

    model, tokenizer = from_huggingface(path, warn=False)
    if tokenizer is None:
        raise ValueError(
            f"--init-from {path}: the folder has the model but no tokenizer "
            f"(missing {', '.join(missing_tokenizer_files(path))}; "
            "save_pretrained on the model alone leaves them out). Copy GPT-2's "
            "vocab.json and merges.txt into it, or save the tokenizer there "
            "too.")
    record.update(kind="huggingface")
    return Source(model, tokenizer, record)


def _from_keras_hub(path, record):
    from keras_gpt.convert import from_keras_hub
    from keras_gpt.convert.keras_hub import load_keras_hub
    from keras_gpt.model import GPT

    loaded = load_keras_hub(path)
    if isinstance(loaded, GPT):
        raise ValueError(f"--init-from {path}: a keras_gpt GPT saved alone "
                         "holds no tokenizer; pass its run directory.")
    model, tokenizer = from_keras_hub(loaded)
    if tokenizer is None:
        raise ValueError(f"--init-from {path}: a bare GPT2Backbone holds no "
                         "tokenizer; use a GPT2CausalLM preset.")
    record.update(kind="keras_hub")
    return Source(model, tokenizer, record)
