"""Parameter counts per component, from the config alone (no weights built).

The first rows are the seed's own table (§15 of "Large Language Models"):
W_E, Query, Key, Value, Output, Up-projection, Down-projection, W_U. The seed
leaves out position embeddings, biases and LayerNorms, and counts W_U as its
own matrix; those appear on rows of their own, so the full total is exactly
what `GPT(config).count_params()` reports.
"""

import dataclasses

from keras_gpt.config import GPTConfig


@dataclasses.dataclass(frozen=True)
class ParameterRow:
    component: str
    formula: str
    count: int
    in_seed: bool


@dataclasses.dataclass(frozen=True)
class ParameterTable:
    """Rows of `ParameterRow`; `str()` renders the table."""

    config: GPTConfig
    rows: tuple

    @property
    def seed_total(self):
        """The seed's total: its eight weight matrices only."""
        return sum(r.count for r in self.rows if r.in_seed)

    @property
    def total(self):
        """Every parameter the built model holds (== `count_params()`)."""
        return sum(r.count for r in self.rows)

    def row(self, component):
        for r in self.rows:
            if r.component == component:
                return r
        raise KeyError(f"No row {component!r}; rows: "
                       f"{[r.component for r in self.rows]}.")

    def __str__(self):
        lines = [(r.component, r.formula, f"{r.count:,}") for r in self.rows
                 if r.in_seed]
        lines.append(("Total (seed's table)", "", f"{self.seed_total:,}"))
        extra = [(r.component, r.formula, f"{r.count:,}") for r in self.rows
                 if not r.in_seed]
        lines += extra
        lines.append(("Total (full model)", "", f"{self.total:,}"))
        widths = [max(len(line[i]) for line in lines + [_HEADER])
                  for i in range(3)]

        def fmt(line):
            return (f"{line[0]:<{widths[0]}}  {line[1]:<{widths[1]}}  "
                    f"{line[2]:>{widths[2]}}")

        rule = "-" * (sum(widths) + 4)
        seed_rows = sum(r.in_seed for r in self.rows) + 1
        out = [fmt(_HEADER), rule]
        out += [fmt(line) for line in lines[:seed_rows]]
        out.append(rule)
        out += [fmt(line) for line in lines[seed_rows:]]
        return "\n".join(out)


_HEADER = ("Component", "Formula", "Parameters")


def parameter_table(config):
    """Count the parameters of `config` per component, without building it.

    Args:
        config: A `GPTConfig` or a preset name.

    Returns:
        A `ParameterTable`; `print()` it for the formatted table.

    Example:

    ```python
    table = keras_gpt.parameter_table("gpt3-175b")
    table.seed_total  # 175_181_291_520, the seed's figure
    print(table)
    ```
    """
    if isinstance(config, str):
        config = GPTConfig.from_preset(config)
    c = config
    L, d, v = c.n_layers, c.d_model, c.vocab_size
    a, m = c.d_attention, c.d_mlp

    def n(x):
        return f"{x:,}"

    per_layer = f"n_layers × d_model × d_attn = {n(L)} × {n(d)} × {n(a)}"
    mlp = f"n_layers × d_model × d_mlp = {n(L)} × {n(d)} × {n(m)}"
    rows = [
        ParameterRow("Embedding (W_E)", f"n_vocab × d_model = {n(v)} × {n(d)}",
                     v * d, True),
        ParameterRow("Query", per_layer, L * d * a, True),
        ParameterRow("Key", per_layer, L * d * a, True),
        ParameterRow("Value", per_layer, L * d * a, True),
        ParameterRow("Output", per_layer, L * a * d, True),
        ParameterRow("Up-projection", mlp, L * d * m, True),
        ParameterRow("Down-projection", mlp, L * m * d, True),
        ParameterRow("Unembedding (W_U)", f"d_model × n_vocab = {n(d)} × {n(v)}",
                     d * v, True),
    ]
    if c.positions == "learned":
        rows.append(ParameterRow(
            "Position embedding", f"n_ctx × d_model = {n(c.context_length)} "
            f"× {n(d)}", c.context_length * d, False))
    if c.use_bias:
        rows.append(ParameterRow(
            "Attention biases", f"n_layers × (3 × d_attn + d_model) = {n(L)} × "
            f"{n(3 * a + d)}", L * (3 * a + d), False))
        rows.append(ParameterRow(
            "MLP biases", f"n_layers × (d_mlp + d_model) = {n(L)} × {n(m + d)}",
            L * (m + d), False))
    rows.append(ParameterRow(
        "LayerNorms (2 per block)", f"n_layers × 2 × 2 × d_model = {n(L)} × "
        f"{n(4 * d)}", L * 4 * d, False))
    rows.append(ParameterRow("Final LayerNorm", f"2 × d_model = 2 × {n(d)}",
                             2 * d, False))
    if c.tie_embeddings:
        rows.append(ParameterRow("W_U tied to W_E (counted once)",
                                 "− n_vocab × d_model", -v * d, False))
    return ParameterTable(config, tuple(rows))
