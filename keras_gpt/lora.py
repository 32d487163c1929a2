"""LoRA on a GPT: which projections, the adapter file, merging.

`GPT` inherits these methods (`enable_lora`, `save_lora_weights`,
`load_lora_weights`, `merge_lora`, `lora_parameter_counts`). Each target
projection gets Keras' `Dense.enable_lora` factors (see
`keras_gpt.layers.rows.Projection`); every other weight is frozen.

The adapter file is safetensors: one `<layer path>/lora_kernel_a` and
`.../lora_kernel_b` tensor per adapted layer, keyed by the layer's path in
the model (`block_3/attention/qkv`), not its index, and metadata holding
the rank, alpha, targets and the model's config. It reads the same under
every backend (NumPy arrays).
"""

import json
from pathlib import Path

import numpy as np

from keras_gpt.config import GPTConfig
from keras_gpt.files import replace_atomically

# Target name -> the layer inside a transformer block (None: the model's).
TARGETS = {"qkv": ("attention", "qkv"), "out": ("attention", "out"),
           "up": ("mlp", "up"), "down": ("mlp", "down"),
           "unembedding": None}
DEFAULT_TARGETS = ("qkv",)
FILE_FORMAT = "keras_gpt.lora/1"


def check_targets(targets, config):
    """Targets as a tuple of known names (a comma-separated string or a list;
    None gives `DEFAULT_TARGETS`), in `TARGETS` order."""
    if targets is None:
        return DEFAULT_TARGETS
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    targets = list(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise ValueError(f"Unknown LoRA targets {unknown or targets!r}: "
                         f"choose among {', '.join(TARGETS)}.")
    if "unembedding" in targets and config.tie_embeddings:
        raise ValueError("LoRA target 'unembedding' needs an untied W_U; this "
                         "model ties it to W_E (tie_embeddings=True).")
    return tuple(t for t in TARGETS if t in targets)


def check_rank(rank, alpha, config):
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) \
            or not 1 <= rank <= config.d_model:
        raise ValueError(f"LoRA rank {rank!r} is out of range: it must be an "
                         f"integer in [1, d_model={config.d_model}].")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(
            alpha, (int, float, np.number)) or not alpha > 0):
        raise ValueError(f"LoRA alpha {alpha!r} must be a number > 0 (the "
                         "delta is scaled by alpha / rank; default alpha = "
                         "rank).")


class LoRAMethods:
    """LoRA methods of `keras_gpt.GPT` (a mixin: needs `config`, `blocks`,
    `unembedding` and the Keras model API)."""

    def enable_lora(self, rank, alpha=None, targets=None):
        """Adds LoRA factors to the target projections; freezes the rest.

        Keras semantics (`keras.layers.Dense.enable_lora`): float32 factors
        A (in, rank) and B (rank, out), B zeros, so the model starts as it
        was; the projection computes base(x) + (alpha / rank) x A B. Only A
        and B train; `lora_parameter_counts()` gives trainable vs total.

        Args:
            rank: Rank of each delta, in [1, d_model].
            alpha: Scale numerator (default: `rank`, i.e. scale 1).
            targets: Names (list or comma-separated): `"qkv"` (the fused
                query/key/value projection, the default, as PEFT's GPT-2
                `c_attn`), `"out"` (W_O), `"up"`, `"down"` (the MLP),
                `"unembedding"` (untied W_U only).

        Raises:
            ValueError: LoRA already on, or a bad rank, alpha or target.

        Example:

        ```python
        model.enable_lora(8)                      # qkv, alpha 8
        model.enable_lora(8, alpha=16, targets="qkv,out,up,down")
        ```
        """
        if self.lora_rank is not None:
            raise ValueError(
                f"LoRA is already enabled (rank {self.lora_rank}, alpha "
                f"{self.lora_alpha}, targets {','.join(self.lora_targets)}); "
                "merge_lora() first to start another.")
        targets = check_targets(targets, self.config)
        check_rank(rank, alpha, self.config)
        adapted = list(self._lora_layers(targets).values())
        ids = {id(layer) for layer in adapted}
        for layer in self._flatten_layers(include_self=False):
            if not list(layer._flatten_layers(include_self=False)):
                layer.trainable = id(layer) in ids
        for layer in adapted:
            layer.enable_lora(int(rank), lora_alpha=alpha)
            if getattr(layer, "bias", None) is not None:
                layer.bias.trainable = False
        self.lora_rank, self.lora_alpha = int(rank), (
            int(rank) if alpha is None else alpha)
        self.lora_targets = targets
        self._structure_changed()

    def merge_lora(self):
        """Folds every delta into its kernel, removes the factors and
        unfreezes the model: a plain GPT computing what the adapted one did
        (exactly, up to float32 rounding; an int8 kernel is quantized again).

        Example:

        ```python
        model.merge_lora()
        model.save("merged.keras")
        ```
        """
        if self.lora_rank is None:
            raise ValueError("This model has no LoRA to merge.")
        adapted = self._lora_layers(self.lora_targets).values()
        for layer in adapted:
            layer.merge_lora()
        for layer in self._flatten_layers(include_self=False):
            layer.trainable = True
        for layer in adapted:
            if getattr(layer, "bias", None) is not None:
                layer.bias.trainable = True
        self.lora_rank = self.lora_alpha = self.lora_targets = None
        self._structure_changed()

    def lora_parameter_counts(self):
        """`(trainable, total)` parameter counts of the model as it is."""
        trainable = sum(int(np.prod(v.shape))
                        for v in self.trainable_variables)
        return trainable, self.count_params()

    def save_lora_weights(self, path):
        """Writes the LoRA factors (only) to a safetensors file.

        Tensors are keyed by layer path (`block_0/attention/qkv/
        lora_kernel_a`); the metadata holds rank, alpha, targets and the
        model's config. Written to a temporary name, then renamed.

        Example:

        ```python
        model.save_lora_weights("adapter.safetensors")
        ```
        """
        from safetensors.numpy import save_file

        if self.lora_rank is None:
            raise ValueError("This model has no LoRA factors to save: call "
                             "enable_lora(rank) first.")
        import keras

        tensors = {}
        for name, layer in self._lora_layers(self.lora_targets).items():
            for factor in ("lora_kernel_a", "lora_kernel_b"):
                tensors[f"{name}/{factor}"] = np.ascontiguousarray(
                    keras.ops.convert_to_numpy(getattr(layer, factor)),
                    dtype=np.float32)
        metadata = {"format": FILE_FORMAT, "rank": str(self.lora_rank),
                    "alpha": json.dumps(self.lora_alpha),
                    "targets": ",".join(self.lora_targets),
                    "config": self.config.to_json()}
        replace_atomically(Path(path), lambda tmp: save_file(
            tensors, str(tmp), metadata=metadata))

    def load_lora_weights(self, path):
        """Reads a file from `save_lora_weights`; enables LoRA first if the
        model has none (with the file's rank, alpha and targets).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a keras_gpt LoRA file, damaged, or made for
                another model (another rank, alpha, targets or shape: the
                message names the value and what this model has).

        Example:

        ```python
        model = keras_gpt.GPT(config)     # the same base
        model.load_lora_weights("adapter.safetensors")
        ```
        """
        tensors, meta = _read_adapter(path)
        rank, alpha = int(meta["rank"]), json.loads(meta["alpha"])
        targets = tuple(meta["targets"].split(","))
        if self.lora_rank is not None and (
                self.lora_rank, self.lora_alpha, self.lora_targets) != (
                rank, alpha, targets):
            raise ValueError(
                f"{path} holds rank {rank}, alpha {alpha}, targets "
                f"{','.join(targets)}; this model's LoRA has rank "
                f"{self.lora_rank}, alpha {self.lora_alpha}, targets "
                f"{','.join(self.lora_targets)}.")
        check_targets(targets, self.config)
        expected = {}
        for name, layer in self._lora_layers(targets).items():
            d_in, d_out = _base_shape(layer)
            expected[f"{name}/lora_kernel_a"] = (d_in, rank)
            expected[f"{name}/lora_kernel_b"] = (rank, d_out)
        saved = GPTConfig.from_json(meta["config"])
        shape = (f"(it was saved from a model with {saved.n_layers} layers, "
                 f"d_model {saved.d_model}, d_mlp {saved.d_mlp}, vocab "
                 f"{saved.vocab_size}; this one has {self.config.n_layers}, "
                 f"{self.config.d_model}, {self.config.d_mlp}, "
                 f"{self.config.vocab_size})")
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise ValueError(f"{path} does not fit this model: missing "
                             f"{missing[:3]}, unexpected {extra[:3]} {shape}.")
        for key, wanted in expected.items():
            if tuple(tensors[key].shape) != wanted:
                raise ValueError(
                    f"{path}: {key} has shape {tuple(tensors[key].shape)}, "
                    f"this model's {wanted} {shape}.")
        if self.lora_rank is None:
            self.enable_lora(rank, alpha, targets)
        for name, layer in self._lora_layers(targets).items():
            for factor in ("lora_kernel_a", "lora_kernel_b"):
                getattr(layer, factor).assign(tensors[f"{name}/{factor}"])

    def _lora_layers(self, targets):
        """{path in the model: layer} of the target projections."""
        found = {}
        for target in targets:
            if TARGETS[target] is None:
                found["unembedding"] = self.unembedding
                continue
            part, name = TARGETS[target]
            for i, block in enumerate(self.blocks):
                found[f"block_{i}/{part}/{name}"] = getattr(
                    getattr(block, part), name)
        return found


def _base_shape(layer):
    """(in, out) of a target's base kernel (float or int8)."""
    kernel = getattr(layer, "_kernel", None)
    return tuple((kernel if kernel is not None else layer.kernel).shape)


def _read_adapter(path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No LoRA file at {path}.")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors file "
                         f"({error}).") from error
    if meta.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a keras_gpt LoRA file (its metadata "
                         f"format is {meta.get('format')!r}, expected "
                         f"{FILE_FORMAT!r}).")
    return tensors, meta
