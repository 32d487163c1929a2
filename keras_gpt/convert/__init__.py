"""Converters between `keras_gpt.GPT` and other GPT-2 implementations.

- Hugging Face: `from_huggingface(folder)` reads a local GPT-2 folder
  (`config.json`, safetensors or `pytorch_model.bin`, `vocab.json`,
  `merges.txt`); `to_huggingface(model, tokenizer, folder)` writes one that
  `transformers.GPT2LMHeadModel.from_pretrained` loads.
- KerasHub: `from_keras_hub(backbone_or_causal_lm)` and
  `to_keras_hub(model)` (a `GPT2Backbone`).
- `write_run(model, tokenizer, run_dir)`: a run directory that
  `keras-gpt generate` reads and `keras-gpt train --resume` continues.

Weights are copied exactly (float32); what a format cannot represent is
refused with a `ConversionError` naming the file and tensor, and folders are
written to a temporary name and renamed, so a failed conversion leaves
nothing behind.

Tokenizer note: `GPT2Tokenizer.encode` gives the same ids as
`transformers.GPT2TokenizerFast` (both run Hugging Face `tokenizers`; tested
on runs of spaces, tabs and newlines, contractions, digits, non-ASCII and
emoji). Its in-graph form (`tokenize_graph`, used in SavedModels) cannot
match exactly on texts that END in a run of two or more whitespace
characters whose last one is a space: for "trailing  " or "a   " the
reference keeps the final run as one piece ("  " -> one token where the
vocabulary has it) while the graph splits off the last space (" ", " ").
Everything else tested matches, including such runs followed by more text
(see `keras_gpt.tokenizers.GPT2Tokenizer`). Tokenize training data with
`encode`.

Example:

```python
from keras_gpt.convert import from_huggingface, to_huggingface
model, tokenizer = from_huggingface("gpt2")      # a local folder
to_huggingface(model, tokenizer, "gpt2-copy")
```
"""

import json
from pathlib import Path

from keras_gpt.convert._common import ConversionError, write_folder_atomically
from keras_gpt.convert.huggingface import (config_from_huggingface,
                                           config_to_huggingface,
                                           from_huggingface, to_huggingface)
from keras_gpt.convert.keras_hub import from_keras_hub, to_keras_hub

__all__ = ["ConversionError", "config_from_huggingface",
           "config_to_huggingface", "from_huggingface", "from_keras_hub",
           "to_huggingface", "to_keras_hub", "write_run"]


def write_run(model, tokenizer, run_dir):
    """Writes a run directory holding `model` and `tokenizer`.

    The directory holds what `keras-gpt train` writes: `model.keras` (with
    a freshly built optimizer), `config.json`, `run.json`, `state.json`
    (step 0) and `tokenizer/`, so `keras-gpt generate RUN_DIR` samples
    from it and `keras-gpt train --out RUN_DIR --resume` fine-tunes it (on
    the data recorded in `run.json`; the default corpus unless edited).

    Args:
        model: A `keras_gpt.GPT`.
        tokenizer: Its tokenizer (any kind with `save`).
        run_dir: A new (or empty) folder.

    Returns:
        `run_dir` as a `Path`.

    Example:

    ```python
    model, tokenizer = from_huggingface("gpt2")
    write_run(model, tokenizer, "runs/gpt2")
    ```
    """
    from keras_gpt.model import GPT
    from keras_gpt.training.run import DEFAULTS
    from keras_gpt.training import compile_for_pretraining

    config = model.config
    options = {**DEFAULTS, "tokenizer": getattr(tokenizer, "kind", None),
               "vocab_size": config.vocab_size,
               "n_layers": config.n_layers, "n_heads": config.n_heads,
               "d_model": config.d_model,
               "context_length": config.context_length,
               "positions": config.positions, "dropout": config.dropout,
               "data": None, "preset": None, "warmup_steps": None}
    # A fresh copy, compiled as training compiles it, so the checkpoint has
    # the optimizer variables `train --resume` expects.
    copy = GPT(config)
    copy.set_weights(model.get_weights())
    compile_for_pretraining(copy, total_steps=options["steps"],
                            learning_rate=options["learning_rate"])
    copy.optimizer.build(copy.trainable_variables)

    def write(folder):
        tokenizer.save(folder / "tokenizer")
        (folder / "config.json").write_text(config.to_json())
        (folder / "run.json").write_text(json.dumps(options, indent=2))
        (folder / "state.json").write_text(json.dumps({"step": 0,
                                                       "wall_s": 0.0}))
        copy.save(folder / "model.keras")

    return write_folder_atomically(Path(run_dir), write)
