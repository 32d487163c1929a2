"""Looking inside a GPT: the seed's pictures as tools, on every backend.

Activations by name live on the model (`GPT.run_with_cache`,
`GPT.run_with_hooks`, `keras_gpt.activations`); this package reads them.
One idea per module:

- `geometry`: embedding directions — nearest tokens, analogies, projections
  (§5).
- `lens`, `tuned_lens`: each layer's residual stream read as an output.
- `attribution`: direct logit attribution to every head and MLP.
- `patching`: activation patching over layers and positions or heads.
- `heads`: previous-token, duplicate-token and induction head scores.
- `superposition`, `toy_superposition`: near-perpendicular vectors and the
  Welch bound; the toy model of superposition (§14).
- `sae`, `sae_training`: sparse autoencoders on a named activation
  (SAELens' metrics and file layout).
- `pictures`, `html`, `report`: PNGs, a self-contained attention page, and
  the `keras-gpt explain` report.
"""

from keras_gpt.interpret.attribution import (Attribution,
                                             direct_logit_attribution)
from keras_gpt.interpret.geometry import (Scored, analogy, direction,
                                          embedding_matrix, nearest_tokens,
                                          project, token_id)
from keras_gpt.interpret.heads import (HEAD_KINDS, detect_heads,
                                       detection_pattern,
                                       repeated_random_tokens)
from keras_gpt.interpret.lens import LensReading, logit_lens
from keras_gpt.interpret.patching import PATCH_OVER, activation_patching
from keras_gpt.interpret.report import explain
from keras_gpt.interpret.sae import SparseAutoencoder, load_sae, save_sae
from keras_gpt.interpret.sae_training import (evaluate_sae,
                                              top_activating_contexts,
                                              train_sae)
from keras_gpt.interpret.superposition import (angle_summary,
                                               near_orthogonal, welch_bound)
from keras_gpt.interpret.toy_superposition import (ToyModel,
                                                   feature_dimensionality,
                                                   plot_toy_model,
                                                   train_toy_model)
from keras_gpt.interpret.tuned_lens import (TunedLens, train_tuned_lens,
                                            tuned_lens)

__all__ = [
    "Attribution", "HEAD_KINDS", "LensReading", "PATCH_OVER", "Scored",
    "SparseAutoencoder", "ToyModel", "TunedLens", "activation_patching",
    "analogy", "angle_summary", "detect_heads", "detection_pattern",
    "direct_logit_attribution", "direction", "embedding_matrix",
    "evaluate_sae", "explain", "feature_dimensionality", "load_sae",
    "logit_lens", "near_orthogonal", "nearest_tokens", "plot_toy_model",
    "project", "repeated_random_tokens", "save_sae", "token_id",
    "top_activating_contexts", "train_sae", "train_toy_model",
    "train_tuned_lens", "tuned_lens", "welch_bound"]
