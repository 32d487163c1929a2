"""Memory planner: the bytes a training step needs per device, and the
smallest data x model parallel layout that fits one device's memory.

Pure arithmetic on the config (no weights, no backend), so GPT-3 175B is
planned as fast as "tiny". Per device, with P the parameters that device
holds (`parameters_per_device`: all N = `parameter_table(config).total` on
one device; with a model axis of M devices, the matrices split as
`keras_gpt.sharding.layout_rules` splits them and the rest replicated;
the data axis replicates every weight, as Keras' `DataParallel` and
`MirroredStrategy` do: there is no ZeRO/FSDP sharding of optimizer state):

- weights: P x w bytes, w the variable size: 4 for `float32` and for
  `mixed_bfloat16` (Keras keeps float32 variables, which are the master
  copy, and casts them to bfloat16 as each layer runs), 2 for `bfloat16`;
- gradients: P x w (Keras differentiates with respect to the variables);
- AdamW m and v: 2 x P x w (Keras creates them in the variable dtype).
  So float32 and mixed_bfloat16 cost 16 bytes per parameter: the same 16
  as the usual mixed-precision accounting (2 + 2 for bf16 weights and
  gradients, 4 + 4 + 4 for the fp32 master copy, m and v), split otherwise;
- activations kept for the backward pass, after Korthikanti et al. (2022),
  "Reducing Activation Recomputation in Large Transformer Models",
  arXiv:2205.05198, section 4. Per layer, with s tokens per sequence, b
  sequences per device (the batch divided by the data axis), h = d_model,
  a heads, t the model axis and e bytes per activation (2 for bfloat16
  compute, 4 for float32)::

      s*b*h*(4e + 2) + s*b*(4*d_attn + 2*d_mlp)*e / t + (2e + 1)*a*s^2*b / t

  The first term is what every model-axis device holds whole (the two
  LayerNorm inputs, the inputs of W_QKV and of the up-projection, two
  1-byte dropout masks), the second what is split (Q, K, V, W_O's input,
  the GELU's input, the down-projection's input), the third the attention
  scores, softmax output and its 1-byte dropout mask. With e = 2,
  d_attn = h and d_mlp = 4h this is the paper's sbh(10 + 24/t + 5as/(ht)),
  and for t = 1 its sbh(34 + 5as/h). With full recomputation
  (`keras.RematScope(mode="full")`) a layer keeps only its input,
  s*b*h*e (the paper's 2sbh), and while the backward pass recomputes one
  layer that layer's activations above are live as well. Both add the
  float32 logits that the loss keeps, 4*s*b*vocab (divided by t when the
  vocabulary is split).

The formula counts attention-probability dropout and dropout masks that a
model with dropout 0 (our default) does not have, and the s^2 scores that
fused attention kernels do not keep; on the other hand XLA's compiled step
is not Megatron's hand-written one: on CPU it holds 1.4-1.6x these float32
activations for small configs (`tests/parallel/test_plan.py` measures it). Hence a
headroom (default 10%) is kept free of the device memory.
"""

import dataclasses
import functools
import math
import re

from keras_gpt.config import GPTConfig
from keras_gpt.params import parameter_table
from keras_gpt.sharding import (MODEL_AXIS, axes_for, check_layout,
                                layout_rules)


@dataclasses.dataclass(frozen=True)
class Precision:
    """Bytes per parameter and per activation of a Keras dtype policy."""

    name: str
    variable_bytes: int
    activation_bytes: int
    note: str


PRECISIONS = {
    "float32": Precision("float32", 4, 4, "float32 weights and activations"),
    "mixed_bfloat16": Precision(
        "mixed_bfloat16", 4, 2,
        "float32 weights (master copy), bfloat16 activations"),
    "bfloat16": Precision("bfloat16", 2, 2,
                          "bfloat16 weights, optimizer state and activations"),
}
DEFAULT_BATCH = 16
DEFAULT_HEADROOM = 0.1
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text):
    """'141GB' -> 141_000_000_000 (GB = 1e9 bytes, GiB = 2**30)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]+)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"Cannot read the memory size {text!r}: give a "
                         "number and a unit, e.g. 141GB or 80GiB (units: "
                         "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB).")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"The memory size {text!r} must be more than 0.")
    return value


def format_bytes(n):
    """Bytes in GB (1e9) with two decimals, e.g. '126.90 GB'."""
    return f"{n / 1e9:,.2f} GB"


def variable_shapes(config):
    """`(path, shape)` of every variable `GPT(config)` creates, in order
    (the model named "gpt"), computed from the config alone."""
    c = config
    d, a, m = c.d_model, c.d_attention, c.d_mlp
    shapes = [("gpt/token_embedding/embeddings", (c.vocab_size, d))]
    if c.positions == "learned":
        shapes.append(("gpt/position_embedding/embeddings",
                       (c.context_length, d)))
    for i in range(c.n_layers):
        p = f"gpt/block_{i}/"

        def dense(name, fan_in, fan_out):
            out = [(p + name + "/kernel", (fan_in, fan_out))]
            return out + [(p + name + "/bias", (fan_out,))] if c.use_bias \
                else out

        shapes += [(p + "ln1/gamma", (d,)), (p + "ln1/beta", (d,))]
        shapes += dense("attention/qkv", d, 3 * a)
        shapes += dense("attention/out", a, d)
        shapes += [(p + "ln2/gamma", (d,)), (p + "ln2/beta", (d,))]
        shapes += dense("mlp/up", d, m) + dense("mlp/down", m, d)
    shapes += [("gpt/final_norm/gamma", (d,)), ("gpt/final_norm/beta", (d,))]
    if not c.tie_embeddings:
        shapes.append(("gpt/unembedding/kernel", (d, c.vocab_size)))
    return shapes


@functools.lru_cache(maxsize=256)
def parameters_per_device(config, model_parallel=1):
    """Parameters one device holds with a model axis of `model_parallel`."""
    check_layout(config, model_parallel=model_parallel)
    rules = layout_rules(config, model_parallel)
    total = 0
    for path, shape in variable_shapes(config):
        axes = axes_for(path, rules, len(shape))
        splits = sum(axis == MODEL_AXIS for axis in axes)
        total += math.prod(shape) // model_parallel ** splits
    return total


def activation_bytes(config, sequences, model_parallel=1, bytes_each=2,
                     recompute=False):
    """Activations one device keeps for the backward pass (module doc).

    Args:
        config: A `GPTConfig`; s is its context_length.
        sequences: b, the sequences on this device.
        model_parallel: t, the model axis.
        bytes_each: e, bytes per activation.
        recompute: Full activation recomputation.
    """
    c, b, t, e = config, sequences, model_parallel, bytes_each
    s, h = c.context_length, c.d_model
    layer = (s * b * h * (4 * e + 2)
             + s * b * (4 * c.d_attention + 2 * c.d_mlp) * e // t
             + (2 * e + 1) * c.n_heads * s * s * b // t)
    kept = c.n_layers * s * b * h * e + layer if recompute \
        else c.n_layers * layer
    logits = 4 * s * b * c.vocab_size // (t if c.vocab_size % t == 0 else 1)
    return kept + logits


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Bytes per device of one layout: `parameters` is what one device
    holds of the model's `total_parameters` (from `parameter_table`)."""

    config: GPTConfig
    dtype: str
    batch_size: int
    data_parallel: int
    model_parallel: int
    total_parameters: int
    parameters: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    activations_recompute: int

    @property
    def devices(self):
        return self.data_parallel * self.model_parallel

    @property
    def state(self):
        """Weights + gradients + AdamW state."""
        return self.weights + self.gradients + self.optimizer

    def total(self, recompute=False):
        return self.state + (self.activations_recompute if recompute
                             else self.activations)


def estimate(config, data_parallel=1, model_parallel=1,
             batch_size=DEFAULT_BATCH, dtype="mixed_bfloat16"):
    """Per-device bytes of training `config` on a data x model layout.

    Args:
        config: A `GPTConfig` or preset name (sequences of its
            context_length).
        data_parallel: Devices the batch is split over.
        model_parallel: Devices the weights are split over.
        batch_size: Sequences in the global batch.
        dtype: One of `PRECISIONS`.

    Returns:
        An `Estimate`.

    Example:

    ```python
    e = estimate("gpt3-175b", data_parallel=8, model_parallel=48)
    format_bytes(e.total())
    ```
    """
    if isinstance(config, str):
        config = GPTConfig.from_preset(config)
    if dtype not in PRECISIONS:
        raise ValueError(f"Unknown dtype {dtype!r}; expected one of "
                         f"{', '.join(PRECISIONS)}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
            or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive "
                         "integer.")
    check_layout(config, data_parallel, model_parallel, batch_size)
    p = PRECISIONS[dtype]
    params = parameters_per_device(config, model_parallel)
    local = batch_size // data_parallel

    def acts(recompute):
        return activation_bytes(config, local, model_parallel,
                                p.activation_bytes, recompute)

    return Estimate(config, dtype, batch_size, data_parallel, model_parallel,
                    parameter_table(config).total, params,
                    params * p.variable_bytes,
                    params * p.variable_bytes, 2 * params * p.variable_bytes,
                    acts(False), acts(True))


def model_axes(config):
    """Model-axis sizes the layout allows: divisors of n_heads and d_mlp."""
    return [m for m in range(1, config.n_heads + 1)
            if config.n_heads % m == 0 and config.d_mlp % m == 0]


def smallest_layout(config, device_memory, batch_size=DEFAULT_BATCH,
                    dtype="mixed_bfloat16", recompute=False,
                    headroom=DEFAULT_HEADROOM):
    """The data x model layout with the fewest devices that fits.

    Candidates: a model axis M dividing n_heads and d_mlp, a data axis D
    dividing the batch. A layout fits when its per-device total is at most
    `device_memory * (1 - headroom)`. Among the fewest devices D x M, the
    smallest M wins (model parallelism communicates in every layer, data
    parallelism once per step).

    Returns:
        The `Estimate` of that layout, or None if none fits.
    """
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom={headroom} must be in [0, 1).")
    usable = device_memory * (1 - headroom)
    fits = []
    for m in model_axes(config):
        for d in range(1, batch_size + 1):
            if batch_size % d:
                continue
            e = estimate(config, d, m, batch_size, dtype)
            if e.total(recompute) <= usable:
                fits.append(e)
                break  # more data devices only add devices
    return min(fits, key=lambda e: (e.devices, e.model_parallel),
               default=None)


def _layout(e):
    return f"{e.data_parallel} x {e.model_parallel}" if e else "no fit"


def report(config, device_memory, batch_size=DEFAULT_BATCH,
           dtype="mixed_bfloat16", headroom=DEFAULT_HEADROOM, name=None):
    """The text `keras-gpt plan PRESET` prints."""
    c, p = config, PRECISIONS[dtype]
    one = estimate(c, 1, 1, batch_size, dtype)
    usable = device_memory * (1 - headroom)
    n = one.total_parameters
    lines = [
        f"{name or 'model'}: {c.n_layers} layers, d_model {c.d_model}, "
        f"{c.n_heads} heads of {c.d_head}, d_mlp {c.d_mlp}, vocab "
        f"{c.vocab_size}, context {c.context_length}; {n:,} parameters",
        f"{dtype} ({p.note}); global batch {batch_size} x "
        f"{c.context_length} tokens; device {format_bytes(device_memory)}, "
        f"{format_bytes(usable)} usable ({headroom:.0%} headroom)",
        "",
        "On one device:",
        f"  weights          {format_bytes(one.weights):>14}   "
        f"N x {p.variable_bytes} B",
        f"  gradients        {format_bytes(one.gradients):>14}   "
        f"N x {p.variable_bytes} B",
        f"  AdamW m and v    {format_bytes(one.optimizer):>14}   "
        f"N x 2 x {p.variable_bytes} B",
        f"  activations      {format_bytes(one.activations):>14}   "
        f"batch {batch_size}, kept for backward",
        f"                   {format_bytes(one.activations_recompute):>14}"
        "   with full recomputation",
        "",
        "Smallest layout that fits (fewest devices; the model axis divides "
        f"n_heads={c.n_heads} and d_mlp={c.d_mlp}, the data axis the batch):",
        f"  {'':24}{'data x model':>14}{'devices':>9}{'weights+grads+opt':>20}"
        f"{'activations':>14}{'total':>14}",
    ]
    for recompute in (False, True):
        e = smallest_layout(c, device_memory, batch_size, dtype, recompute,
                            headroom)
        label = ("with recomputation" if recompute
                 else "without recomputation")
        if e is None:
            lines.append(f"  {label:24}{'no fit':>14}   even "
                         f"{model_axes(c)[-1]}-way model parallel with one "
                         "sequence per device does not fit: this needs "
                         "pipeline parallelism or sharded optimizer state "
                         "(not provided)")
            continue
        acts = e.activations_recompute if recompute else e.activations
        lines.append(
            f"  {label:24}{_layout(e):>14}{e.devices:>9}"
            f"{format_bytes(e.state):>20}{format_bytes(acts):>14}"
            f"{format_bytes(e.total(recompute)):>14}")
    return "\n".join(lines)


def table(presets, device_memory, batch_size=DEFAULT_BATCH,
          dtype="mixed_bfloat16", headroom=DEFAULT_HEADROOM):
    """One line per preset: `keras-gpt plan all`."""
    head = (f"{'preset':<12}{'parameters':>18}{'state, 1 device':>17}"
            f"{'activations':>14}{'layout':>10}{'devices':>9}"
            f"{'layout (recompute)':>20}{'devices':>9}")
    lines = [f"{dtype}, global batch {batch_size} at each preset's context, "
             f"device {format_bytes(device_memory)} ({headroom:.0%} headroom);"
             " layout = data x model parallel", head, "-" * len(head)]
    for name in presets:
        c = GPTConfig.from_preset(name)
        one = estimate(c, 1, 1, batch_size, dtype)
        plain, remat = (smallest_layout(c, device_memory, batch_size, dtype,
                                        r, headroom) for r in (False, True))
        lines.append(
            f"{name:<12}{one.total_parameters:>18,}"
            f"{format_bytes(one.state):>17}"
            f"{format_bytes(one.activations):>14}{_layout(plain):>10}"
            f"{plain.devices if plain else '-':>9}{_layout(remat):>20}"
            f"{remat.devices if remat else '-':>9}")
    return "\n".join(lines)
