"""The reference's log-probabilities of preference pairs, computed once per
model and data and cached beside the tokenized pairs (DPO without LoRA)."""

import hashlib
from pathlib import Path

import numpy as np

from keras_gpt.files import replace_atomically
from keras_gpt.finetune.dpo import reference_log_probs

NAMES = ("chosen", "rejected", "chosen_mask", "rejected_mask")


def weights_fingerprint(model):
    """sha256 over every variable's path (without the model's own name),
    dtype, shape and bytes."""
    import keras

    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        path = variable.path.split("/", 1)[-1]
        digest.update(f"{path}\0{value.dtype}\0{value.shape}\0".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def cached_reference(model, arrays, cache_dir, batch_size=16):
    """`(ref_chosen, ref_rejected)` of `arrays` (`PreferencePairs.arrays()`)
    under `model`, read from `cache_dir` when this model and these pairs
    were seen before, else computed (`reference_log_probs`) and stored."""
    digest = hashlib.sha256(weights_fingerprint(model).encode())
    for name in NAMES:
        digest.update(f"\0{name}\0{arrays[name].shape}\0".encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    path = Path(cache_dir) / f"reference-{digest.hexdigest()[:32]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return stored["chosen"], stored["rejected"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is computed again
    chosen, rejected = reference_log_probs(model, arrays, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, chosen=chosen, rejected=rejected)

    replace_atomically(path, write)
    return chosen, rejected
