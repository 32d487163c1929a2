"""keras_gpt: the GPT of "Large Language Models", built from Keras 3 layers.

```python
from keras_gpt import GPT, GPTConfig
model = GPT(GPTConfig.from_preset("tiny"))
```

Names are imported on first use, so `keras_gpt.config` and
`keras_gpt.parameter_table` work without importing Keras or a backend.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "GPT": "keras_gpt.model",
    "GPTConfig": "keras_gpt.config",
    "parameter_table": "keras_gpt.params",
    "compile_for_pretraining": "keras_gpt.training",
    "make_optimizer": "keras_gpt.training",
    "next_token_loss": "keras_gpt.training",
    "generate": "keras_gpt.generation",
    "export_saved_model": "keras_gpt.export",
    "export_run": "keras_gpt.export",
}

__all__ = sorted(_EXPORTS) + ["layers"]


def __getattr__(name):
    if name == "layers":
        return importlib.import_module("keras_gpt.layers")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_gpt' has no attribute {name!r}")


def __dir__():
    return __all__
