"""GPTConfig: every number that fixes a GPT's shape, and the published presets.

A config is plain data: building one allocates no weights, so even "gpt3-175b"
is free to create, inspect and count (see `keras_gpt.parameter_table`).
"""

import dataclasses
import json

ACTIVATIONS = ("gelu", "relu")
POSITIONS = ("learned", "sinusoidal", "rotary")


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """The shape of a GPT, in the seed's vocabulary.

    Args:
        vocab_size: Number of tokens; rows of W_E and columns of W_U.
        context_length: Most tokens the model sees at once (GPT-3: 2048).
        d_model: Width of the residual stream (embedding dimension).
        n_layers: Number of transformer blocks (attention + MLP).
        n_heads: Attention heads per block.
        d_head: Width of one head's queries, keys and values. Defaults to
            `d_model // n_heads`; `n_heads * d_head` may differ from
            `d_model` (GPT-3 13B does).
        d_mlp: Hidden width of the MLP. Defaults to `4 * d_model`.
        activation: `"gelu"` (the tanh approximation, as GPT-2) or `"relu"`.
        positions: `"learned"` (GPT-2/GPT-3), `"sinusoidal"` (the original
            transformer) or `"rotary"` (applied to queries and keys).
        tie_embeddings: Whether W_U is W_E transposed (GPT-2) or its own matrix.
        use_bias: Biases in the attention and MLP projections.
        dropout: Dropout rate on embeddings and residual branches.
        layer_norm_epsilon: LayerNorm epsilon (GPT-2: 1e-5).
        rotary_max_wavelength: Base wavelength of rotary embeddings.

    Example:

    ```python
    config = GPTConfig(vocab_size=512, context_length=64, d_model=64,
                       n_layers=2, n_heads=4)
    config.d_head  # 16
    GPTConfig.from_preset("gpt3-175b").d_model  # 12288
    ```
    """

    vocab_size: int
    context_length: int
    d_model: int
    n_layers: int
    n_heads: int
    d_head: int = None
    d_mlp: int = None
    activation: str = "gelu"
    positions: str = "learned"
    tie_embeddings: bool = True
    use_bias: bool = True
    dropout: float = 0.0
    layer_norm_epsilon: float = 1e-5
    rotary_max_wavelength: int = 10000

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "d_model", "n_layers",
                     "n_heads"):
            _require_positive_int(name, getattr(self, name))
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model={self.d_model} is not divisible by "
                    f"n_heads={self.n_heads}: choose n_heads among the "
                    f"divisors of {self.d_model} (in Python, GPTConfig(d_head="
                    "...) may also set each head's width).")
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        _require_positive_int("d_head", self.d_head)
        if self.d_mlp is None:
            object.__setattr__(self, "d_mlp", 4 * self.d_model)
        _require_positive_int("d_mlp", self.d_mlp)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; "
                             f"expected one of {ACTIVATIONS}.")
        if self.positions not in POSITIONS:
            raise ValueError(f"Unknown positions {self.positions!r}; "
                             f"expected one of {POSITIONS}.")
        if self.positions == "rotary" and self.d_head % 2:
            raise ValueError(f"Rotary positions need an even d_head; got "
                             f"d_head={self.d_head}.")
        if self.positions == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"Sinusoidal positions need an even d_model; got "
                             f"d_model={self.d_model}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1).")
        if not self.layer_norm_epsilon > 0:
            raise ValueError(f"layer_norm_epsilon={self.layer_norm_epsilon} "
                             "must be > 0.")

    @property
    def d_attention(self):
        """Width of all heads together: `n_heads * d_head`."""
        return self.n_heads * self.d_head

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown GPTConfig fields {unknown}; known fields "
                             f"are {sorted(known)}.")
        return cls(**values)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_preset(cls, name, **overrides):
        """A published shape (or a tiny one for tests), fields overridable.

        Args:
            name: One of `GPTConfig.presets()`.
            **overrides: Fields to change, e.g. `vocab_size=8192`.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; available presets: "
                             f"{', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    @staticmethod
    def presets():
        """Names accepted by `from_preset`."""
        return tuple(PRESETS)


def _require_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")


def _gpt2(n_layers, d_model, n_heads):
    return dict(vocab_size=50257, context_length=1024, d_model=d_model,
                n_layers=n_layers, n_heads=n_heads)


def _gpt3(n_layers, d_model, n_heads, d_head):
    # GPT-3 paper, Table 2.1; d_ff = 4 * d_model; n_ctx = 2048.
    return dict(vocab_size=50257, context_length=2048, d_model=d_model,
                n_layers=n_layers, n_heads=n_heads, d_head=d_head)


PRESETS = {
    # GPT-2 (Radford et al., 2019).
    "gpt2-small": _gpt2(12, 768, 12),
    "gpt2-medium": _gpt2(24, 1024, 16),
    "gpt2-large": _gpt2(36, 1280, 20),
    "gpt2-xl": _gpt2(48, 1600, 25),
    # GPT-3 (Brown et al., 2020), Table 2.1.
    "gpt3-small": _gpt3(12, 768, 12, 64),
    "gpt3-medium": _gpt3(24, 1024, 16, 64),
    "gpt3-large": _gpt3(24, 1536, 16, 96),
    "gpt3-xl": _gpt3(24, 2048, 24, 128),
    "gpt3-2.7b": _gpt3(32, 2560, 32, 80),
    "gpt3-6.7b": _gpt3(32, 4096, 32, 128),
    "gpt3-13b": _gpt3(40, 5140, 40, 128),
    "gpt3-175b": _gpt3(96, 12288, 96, 128),
    # Small shapes for tests and CPU demos (vocab set by the tokenizer).
    "tiny": dict(vocab_size=512, context_length=64, d_model=64, n_layers=2,
                 n_heads=4),
    "mini": dict(vocab_size=8192, context_length=256, d_model=384, n_layers=6,
                 n_heads=6),
}
