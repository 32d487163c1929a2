"""Looking inside a GPT: the seed's pictures as tools, on every backend.

Activations by name live on the model (`GPT.run_with_cache`,
`GPT.run_with_hooks`, `keras_gpt.activations`); this package reads them.
One idea per module:

- `lens`, `tuned_lens`: each layer's residual stream read as an output.
- `attribution`: direct logit attribution to every head and MLP.
- `patching`: activation patching over layers and positions or heads.
- `heads`: previous-token, duplicate-token and induction head scores.
- `pictures`, `html`, `report`: PNGs, a self-contained attention page, and
  the `keras-gpt explain` report.
"""

from keras_gpt.interpret.attribution import (Attribution,
                                             direct_logit_attribution)
from keras_gpt.interpret.heads import (HEAD_KINDS, detect_heads,
                                       detection_pattern,
                                       repeated_random_tokens)
from keras_gpt.interpret.lens import LensReading, logit_lens
from keras_gpt.interpret.patching import PATCH_OVER, activation_patching
from keras_gpt.interpret.tuned_lens import (TunedLens, train_tuned_lens,
                                            tuned_lens)

__all__ = ["Attribution", "HEAD_KINDS", "LensReading", "PATCH_OVER",
           "TunedLens", "activation_patching", "detect_heads",
           "detection_pattern", "direct_logit_attribution", "logit_lens",
           "repeated_random_tokens", "train_tuned_lens", "tuned_lens"]
