"""Sparse autoencoders: pull superposed features out of a model's activations.

An activation x (width d_in) is written as a sparse sum of learned feature
directions: z = act((x - b_dec) W_enc + b_enc), x̂ = z W_dec + b_dec, with
d_sae > d_in features of which only a few are non-zero per token. Two
activations, as SAELens trains them:

- TopK (`k=`): keep the k largest pre-activations (after ReLU), zero the
  rest; an auxiliary loss lets dead latents (no firing for `dead_steps`
  steps) reconstruct what the live ones miss (Gao et al. 2024; k_aux =
  d_in / 2, as SAELens).
- ReLU + L1 (`l1=`): z = ReLU(...), loss + l1 * Σ_i z_i ||W_dec,i||.

Decoder rows (the feature directions) are kept at unit length after every
optimizer step (a Keras constraint). `save_sae` / `load_sae` use SAELens'
layout, a folder with `cfg.json` and `sae_weights.safetensors` (W_enc
(d_in, d_sae), b_enc, W_dec (d_sae, d_in), b_dec), so SAELens'
`SAE.load_from_disk` reads ours and we read theirs. Training, metrics and
top-activating contexts are in `keras_gpt.interpret.sae_training`.
"""

import json
import math
import os
from pathlib import Path

import keras
import numpy as np
from keras import ops

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
WEIGHT_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")


def check_sae_args(d_in, d_sae, k, l1):
    """ValueError naming the value and its limit for bad SAE sizes, k or l1."""
    for name, value in (("d_in", d_in), ("d_sae", d_sae)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
    if (k is None) == (l1 is None):
        raise ValueError("Give exactly one of k (a TopK SAE) or l1 (a ReLU SAE "
                         f"with an L1 penalty); got k={k!r}, l1={l1!r}.")
    if k is not None and (isinstance(k, bool) or not isinstance(
            k, (int, np.integer)) or not 1 <= k <= d_sae):
        raise ValueError(f"k must be an integer in [1, d_sae={d_sae}]; "
                         f"got {k!r}.")
    if l1 is not None and not (isinstance(l1, (int, float, np.floating))
                               and not isinstance(l1, bool)
                               and math.isfinite(l1) and l1 >= 0):
        raise ValueError(f"l1 must be a finite number >= 0; got {l1!r}.")


def encode(x, w_enc, b_enc, b_dec, k=None):
    """Feature activations (..., d_sae) of activations x (..., d_in).

    TopK when `k` is given (ties at the k-th value may keep a few more),
    else ReLU. Returns `(z, pre)`: the activations and the pre-activations.
    """
    pre = ops.matmul(x - b_dec, w_enc) + b_enc
    z = ops.relu(pre)
    if k is not None:
        z = z * ops.cast(pre >= _kth_largest(pre, k), z.dtype)
    return z, pre


def _kth_largest(x, k):
    """The k-th largest value along the last axis, keeping that axis.

    The minimum of the unsorted top k: slicing XLA's sorted top_k and
    comparing with it fused into a program 40x slower on CPU (JAX).
    """
    return ops.min(ops.top_k(x, k, sorted=False)[0], axis=-1, keepdims=True)


def decode(z, w_dec, b_dec):
    """The reconstruction z W_dec + b_dec (..., d_in)."""
    return ops.matmul(z, w_dec) + b_dec


@keras.saving.register_keras_serializable(package="keras_gpt")
class SparseAutoencoder(keras.Model):
    """A sparse autoencoder (TopK or ReLU + L1) as a Keras model.

    Train it with `fit(x, x)` on activations (rows of width d_in) and
    `compile(loss=ReconstructionLoss())` (or use `train_sae`, which streams
    them from a model). The sparsity penalty (ReLU) or the auxiliary loss
    on dead latents (TopK) is added in `call` during training; the decoder
    rows stay unit length after every step.

    Args:
        d_in: Width of the activations.
        d_sae: Number of features (latents), usually several times d_in.
        k: TopK: latents kept per row, in [1, d_sae].
        l1: ReLU: the L1 coefficient, >= 0. Exactly one of k and l1. It
            weighs against the squared error of the raw activations (no
            normalisation: SAELens' normalize_activations="none"), so its
            useful range depends on their scale.
        aux_k: TopK: dead latents that try to model the residual
            (default d_in // 2, as SAELens).
        aux_coefficient: TopK: weight of that auxiliary loss (SAELens: 1).
        dead_steps: A latent that has not fired for this many training
            steps is dead.
        hook: The activation name it reads (e.g. "blocks.0.resid_post"),
            kept for saving; None if unknown.
        seed: Seed of the initial weights.

    Call arguments:
        x: float (..., d_in).

    Returns:
        The reconstruction x̂, same shape.

    Example:

    ```python
    sae = SparseAutoencoder(d_in=64, d_sae=512, k=16)
    sae.compile(optimizer="adam", loss=ReconstructionLoss())
    sae.fit(acts, acts, batch_size=1024)
    z = sae.encode(acts)                  # (rows, 512), at most 16 non-zero
    ```
    """

    def __init__(self, d_in, d_sae, k=None, l1=None, aux_k=None,
                 aux_coefficient=1.0, dead_steps=1000, hook=None, seed=0,
                 **kwargs):
        super().__init__(**kwargs)
        check_sae_args(d_in, d_sae, k, l1)
        self.d_in, self.d_sae, self.k, self.l1 = d_in, d_sae, k, l1
        self.aux_k = max(1, d_in // 2) if aux_k is None else aux_k
        if not 1 <= self.aux_k <= d_sae:
            raise ValueError(f"aux_k must be in [1, d_sae={d_sae}]; got "
                             f"{aux_k!r}.")
        self.aux_coefficient, self.dead_steps = aux_coefficient, dead_steps
        self.hook, self.seed = hook, seed
        # Decoder rows: random unit directions; the encoder starts as their
        # transpose (SAELens' initialisation).
        rows = np.random.default_rng(seed).standard_normal((d_sae, d_in))
        rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True))
        rows = rows.astype("float32")
        self.W_enc = self.add_weight(
            shape=(d_in, d_sae), name="W_enc",
            initializer=keras.initializers.Constant(rows.T))
        self.b_enc = self.add_weight(shape=(d_sae,), name="b_enc",
                                     initializer="zeros")
        self.W_dec = self.add_weight(
            shape=(d_sae, d_in), name="W_dec",
            initializer=keras.initializers.Constant(rows),
            constraint=keras.constraints.UnitNorm(axis=1))
        self.b_dec = self.add_weight(shape=(d_in,), name="b_dec",
                                     initializer="zeros")
        self.steps_since_fired = self.add_weight(
            shape=(d_sae,), name="steps_since_fired", initializer="zeros",
            trainable=False)
        self.built = True  # every weight exists now, whatever the input

    def encode(self, x):
        """Feature activations (..., d_sae) of x (..., d_in)."""
        return encode(ops.convert_to_tensor(x, "float32"), self.W_enc,
                      self.b_enc, self.b_dec, self.k)[0]

    def decode(self, z):
        """Reconstruction (..., d_in) of feature activations z."""
        return decode(z, self.W_dec, self.b_dec)

    def call(self, x, training=None):
        x = ops.cast(x, "float32")
        z, pre = encode(x, self.W_enc, self.b_enc, self.b_dec, self.k)
        x_hat = decode(z, self.W_dec, self.b_dec)
        if training:
            self._training_losses(x, x_hat, z, pre)
        return x_hat

    def _training_losses(self, x, x_hat, z, pre):
        rows = ops.reshape(z, (-1, self.d_sae))
        if self.l1 is not None:
            norms = ops.norm(self.W_dec, axis=1)
            self.add_loss(self.l1 * ops.mean(ops.sum(rows * norms, axis=-1)))
        else:
            dead = self.steps_since_fired > self.dead_steps
            self.add_loss(self._aux_loss(x, x_hat, pre, dead))
        fired = ops.max(rows, axis=0) > 0
        self.steps_since_fired.assign(ops.where(
            fired, 0.0, self.steps_since_fired + 1.0))

    def _aux_loss(self, x, x_hat, pre, dead):
        """TopK's auxiliary loss (Gao et al. 2024, as SAELens trains it):
        the top `aux_k` dead latents model the residual e = x - x̂ (no
        gradient through e): ||z_aux W_dec - e||², averaged over rows,
        scaled by min(n_dead / aux_k, 1), so it is 0 with no dead latent.
        Two details follow the paper rather than SAELens: z_aux is ReLU'd,
        and no b_dec is added to z_aux W_dec (e already lacks it)."""
        residual = ops.stop_gradient(x - x_hat)
        masked = ops.where(dead, pre, float("-inf"))
        chosen = ops.logical_and(dead,
                                 masked >= _kth_largest(masked, self.aux_k))
        z_aux = ops.relu(pre) * ops.cast(chosen, pre.dtype)
        error = ops.matmul(z_aux, self.W_dec) - residual
        n_dead = ops.sum(ops.cast(dead, "float32"))
        scale = ops.minimum(n_dead / self.aux_k, 1.0)
        loss = ops.mean(ops.sum(ops.square(error), axis=-1))
        return self.aux_coefficient * scale * loss

    def dead_fraction(self):
        """Fraction of latents that have not fired for `dead_steps` steps
        of training (SAELens' dead features)."""
        steps = ops.convert_to_numpy(self.steps_since_fired)
        return float(np.mean(steps > self.dead_steps))

    def get_config(self):
        return {**super().get_config(), "d_in": self.d_in,
                "d_sae": self.d_sae, "k": self.k, "l1": self.l1,
                "aux_k": self.aux_k, "aux_coefficient": self.aux_coefficient,
                "dead_steps": self.dead_steps, "hook": self.hook,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_gpt")
class ReconstructionLoss(keras.losses.Loss):
    """Σ over the last axis of (x - x̂)², averaged over rows (SAELens' MSE
    loss as it trains)."""

    def __init__(self, name="reconstruction", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return ops.sum(ops.square(ops.cast(y_true, y_pred.dtype) - y_pred),
                       axis=-1)


# SAELens' folder: cfg.json + sae_weights.safetensors ------------------------


def transformer_lens_name(hook):
    """Our activation name as TransformerLens spells it
    ("blocks.0.resid_post" -> "blocks.0.hook_resid_post",
    "ln_final" -> "ln_final.hook_normalized")."""
    if hook is None:
        return None
    if hook == "ln_final":
        return "ln_final.hook_normalized"
    head, _, last = hook.rpartition(".")
    return f"{head}.hook_{last}" if head else f"hook_{last}"


def our_name(tl_name):
    """TransformerLens' hook name as ours (the inverse of
    `transformer_lens_name`)."""
    if tl_name is None:
        return None
    if tl_name == "ln_final.hook_normalized":
        return "ln_final"
    return tl_name.replace("hook_", "")


def save_sae(sae, directory, model_name=None, context_size=None):
    """Writes `sae` in SAELens' layout: `directory/cfg.json` and
    `directory/sae_weights.safetensors` (float32 W_enc, b_enc, W_dec, b_dec).

    Both files are written whole to temporary names first, then renamed,
    so an interrupted save leaves the previous files (or none). Other files
    in `directory` are left alone. Needs `safetensors`.

    Args:
        sae: A `SparseAutoencoder`.
        directory: Created if needed.
        model_name: Recorded in cfg.json (SAELens' `model_name`).
        context_size: The token window it was trained on (cfg.json).

    Returns:
        The directory as a `Path`.

    Example:

    ```python
    save_sae(sae, "runs/demo/sae-l1")
    sae = load_sae("runs/demo/sae-l1")
    ```
    """
    from safetensors.numpy import save as safetensors_bytes

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: np.ascontiguousarray(
        ops.convert_to_numpy(getattr(sae, name)), dtype=np.float32)
        for name in WEIGHT_NAMES}
    topk = sae.k is not None
    cfg = {
        "architecture": "topk" if topk else "standard",
        "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32",
        "device": "cpu", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "reshape_activations":
            "hook_z" if (sae.hook or "").endswith("attn.z") else "none",
        "activation_fn": "topk" if topk else "relu",
        "activation_fn_kwargs": {"k": sae.k} if topk else {},
        "hook_name": transformer_lens_name(sae.hook), "hook_head_index": None,
        "model_name": model_name, "context_size": context_size,
        "prepend_bos": False, "finetuning_scaling_factor": False,
        "keras_gpt": {"hook": sae.hook, "l1": sae.l1, "aux_k": sae.aux_k,
                      "aux_coefficient": sae.aux_coefficient,
                      "dead_steps": sae.dead_steps},
    }
    if topk:
        cfg["k"] = sae.k
    else:
        cfg["l1_coefficient"] = sae.l1
    weights, config = directory / WEIGHTS_FILE, directory / CFG_FILE
    tmp = [weights.with_name(f".tmp-{os.getpid()}-{p.name}")
           for p in (weights, config)]
    try:
        tmp[0].write_bytes(safetensors_bytes(tensors))
        tmp[1].write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        os.replace(tmp[0], weights)
        os.replace(tmp[1], config)
    finally:
        for path in tmp:
            path.unlink(missing_ok=True)
    return directory


def load_sae(directory):
    """Reads an SAE saved by `save_sae` or by SAELens (`topk` and
    `standard` architectures) into a `SparseAutoencoder`.

    Raises:
        FileNotFoundError: no such folder, or a file is missing.
        ValueError: a damaged file, an architecture or setting we do not
            run, or weights whose names or shapes do not match cfg.json.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"SAE folder {directory} does not exist.")
    config, weights = directory / CFG_FILE, directory / WEIGHTS_FILE
    for path in (config, weights):
        if not path.is_file():
            raise FileNotFoundError(
                f"No {path.name} in {directory}: an SAE folder holds "
                f"{CFG_FILE} and {WEIGHTS_FILE} (save_sae writes them).")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{config} is damaged or not an SAE config "
                         f"(needs d_in and d_sae): {error}") from None
    architecture = cfg.get("architecture", "standard")
    if architecture not in ("topk", "standard"):
        raise ValueError(f"{config}: architecture {architecture!r} is not "
                         "supported; load_sae reads 'topk' and 'standard'.")
    for key, wanted in (("apply_b_dec_to_input", True),
                        ("normalize_activations", "none")):
        if cfg.get(key, wanted) != wanted:
            raise ValueError(f"{config}: {key}={cfg[key]!r} is not supported "
                             f"(only {wanted!r}).")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{weights} is damaged: {error}") from None
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,),
              "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for name, shape in shapes.items():
        if name not in tensors:
            raise ValueError(f"{weights} has no {name} (it has "
                             f"{sorted(tensors)}).")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{weights}: {name} has shape "
                             f"{tuple(tensors[name].shape)}; cfg.json's d_in="
                             f"{d_in}, d_sae={d_sae} need {shape}.")
    ours = cfg.get("keras_gpt", {})
    hook_name = cfg.get("hook_name") or (cfg.get("metadata") or {}).get(
        "hook_name")
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    if architecture == "topk" and k is None:
        raise ValueError(f"{config}: a 'topk' SAE needs k.")
    sae = SparseAutoencoder(
        d_in, d_sae, k=int(k) if architecture == "topk" else None,
        l1=None if architecture == "topk" else float(
            cfg.get("l1_coefficient") or 0.0),
        aux_k=ours.get("aux_k"),
        aux_coefficient=ours.get("aux_coefficient", 1.0),
        dead_steps=ours.get("dead_steps", 1000),
        hook=ours.get("hook") or our_name(hook_name))
    for name in WEIGHT_NAMES:
        getattr(sae, name).assign(tensors[name].astype(np.float32))
    return sae
