"""Fine-tune and compress: start from a trained or converted GPT, adapt it
to new text (every weight, or a LoRA), quantize it to int8.

- `load_source(path)`: a run directory, a Hugging Face GPT-2 folder or a
  KerasHub preset / `.keras` file, as a `Source` (model, tokenizer, record).
- `finetune(source, out, data=..., lora_rank=...)`: a new run directory
  trained from it (`keras-gpt train --init-from SOURCE`).
- `quantize_run(run_dir, out)`: an int8 copy of a run directory
  (`keras-gpt quantize RUN_DIR --out OUT`).
- Behaviour: supervised fine-tuning on prompt/completion or chat JSON Lines
  (`finetune(source, out, sft="data.jsonl")`, `keras-gpt train --init-from
  SOURCE --sft DATA.jsonl`; the pieces in `keras_gpt.training.sft`), and
  preference tuning, `dpo(source, out, data="prefs.jsonl")` (`keras-gpt
  dpo`), whose model is `DPOModel` (`keras_gpt.finetune.dpo`).

The model-level pieces are `GPT`'s methods: `enable_lora`,
`save_lora_weights`, `load_lora_weights`, `merge_lora`, `quantize("int8")`.

Example:

```python
from keras_gpt.finetune import finetune, quantize_run
finetune("runs/gpt2", "runs/notes", data=["notes/"], lora_rank=8, steps=200)
quantize_run("runs/notes", "runs/notes-int8")
```
"""

from keras_gpt.finetune.dpo import DPOModel
from keras_gpt.finetune.dpo_run import dpo
from keras_gpt.finetune.quantize import quantize_run
from keras_gpt.finetune.run import finetune
from keras_gpt.finetune.sources import load_source

__all__ = ["DPOModel", "dpo", "finetune", "load_source", "quantize_run"]
