"""Training: the pretraining recipe (`recipe`), the callbacks of a run
(`callbacks`) and the run itself, corpus to run directory (`run`).

```python
from keras_gpt.training import compile_for_pretraining
compile_for_pretraining(model, total_steps=2000)
model.fit(x, y, batch_size=8)
```
"""

from keras_gpt.losses import NextTokenLoss, next_token_loss
from keras_gpt.training.recipe import (EMBEDDINGS, NO_DECAY,
                                       compile_for_pretraining, make_optimizer)

__all__ = ["EMBEDDINGS", "NO_DECAY", "NextTokenLoss", "compile_for_pretraining",
           "make_optimizer", "next_token_loss"]
