"""keras_gpt: the GPT of "Large Language Models", built from Keras 3 layers.

```python
import keras_gpt
model = keras_gpt.GPT(keras_gpt.GPTConfig.from_preset("tiny"))
model = keras.models.load_model("gpt.keras")   # any keras_gpt file
```

Importing the package loads Keras and registers every keras_gpt class
(layers, model, loss, tuned lens, sparse autoencoder, DPO model, ...), so
`keras.models.load_model` reads any file saved by keras_gpt, as KerasHub
does for its own. The packages, by stage: `backend` -> `layers` -> `model`
-> `generation`, `training`, `serving`, `parallel`, `convert`, `interpret`,
`finetune`, `bench` -> `commands` (README.md has the map).
"""

from keras_gpt.commands import console as _console

_console.prepare_process()  # in the `keras-gpt` process only

from keras_gpt import finetune, interpret, layers  # noqa: E402
from keras_gpt.config import GPTConfig  # noqa: E402
from keras_gpt.generation import generate  # noqa: E402
from keras_gpt.losses import NextTokenLoss, next_token_loss  # noqa: E402
from keras_gpt.model import GPT  # noqa: E402
from keras_gpt.params import parameter_table  # noqa: E402
from keras_gpt.serving import export_run, export_saved_model  # noqa: E402
from keras_gpt.training import (compile_for_pretraining,  # noqa: E402
                                make_optimizer)
from keras_gpt.version import __version__  # noqa: E402

__all__ = ["GPT", "GPTConfig", "NextTokenLoss", "__version__",
           "compile_for_pretraining", "export_run", "export_saved_model",
           "finetune", "generate", "interpret", "layers", "make_optimizer", "next_token_loss",
           "parameter_table"]
