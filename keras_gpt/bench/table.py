"""The benchmark's results as a text table.

One column per implementation that ran (`options.NAMES` order); under each
speed line, one ratio line per path of ours: its figure over each column's
("row / column", > 1 is faster). Lines come in groups, one per part of the
benchmark (`ROW_GROUPS`): a new part adds its result key and a function
that yields its lines.
"""

from keras_gpt.bench.options import NAMES, OURS

LABEL = 36
CELL = 16
WHAT = {"keras_gpt": "compile_for_pretraining + fit",
        "keras_gpt_plain": "model.compile(optimizer=AdamW, loss="
                           "SparseCategoricalCrossentropy(from_logits=True))"
                           " + fit",
        "keras_hub": "KerasHub GPT2CausalLM, compile + fit",
        "hf_torch": "Hugging Face GPT2LMHeadModel, eager PyTorch loop"}


def _cell(text):
    return f"{text:>{CELL}}"


def _values_line(label, values, fmt):
    return f"{label:{LABEL}}" + "".join(
        _cell("-" if v is None else fmt(v)) for v in values)


def _ratio_lines(names, values):
    """Under a speed line: each of our paths' figure over each column's."""
    for row, name in enumerate(names):
        if name not in OURS or not values[row]:
            continue
        cells = [f"{values[row] / v:.2f}x" if v and col != row else "-"
                 for col, v in enumerate(values)]
        yield f"{'  ' + name + ' / column':{LABEL}}" + "".join(
            _cell(c) for c in cells)


def _speed(label, names, values, fmt):
    yield _values_line(label, values, fmt)
    yield from _ratio_lines(names, values)


def _train_lines(r, names):
    train, o = r["train"], r["options"]

    def get(key):
        return [train[n].get(key) if n in train else None for n in names]

    tokens = o["batch_size"] * o["model"]["context_length"]
    yield from _speed(f"train tokens/s (batch {o['batch_size']})", names,
                      get("tokens_per_s"), lambda v: f"{v:.0f}")
    yield _values_line("train ms/step", [
        v and 1000 * tokens / v for v in get("tokens_per_s")],
        lambda v: f"{v:.1f}")
    if r.get("matmul_peak_gflops"):
        yield _values_line("train MFU", get("mfu"),
                           lambda v: f"{100 * v:.1f}%")
    yield _values_line("train first call s", get("first_call_s"),
                       lambda v: f"{v:.1f}")
    yield _values_line("train peak memory MB", get("peak_memory_bytes"),
                       lambda v: f"{v / 2 ** 20:.0f}")


def _decode_lines(r, names):
    for row in r["decode"]:
        label = f"decode {row['sampler']} batch {row['batch']}"

        def get(key):
            return [row[n][key] if n in row else None for n in names]

        yield from _speed(f"{label} tokens/s", names, get("tokens_per_s"),
                          lambda v: f"{v:.0f}")
        yield _values_line(f"{label} first call s", get("first_call_s"),
                           lambda v: f"{v:.1f}")


# (result key, lines maker): the table's row groups, in order.
ROW_GROUPS = [("train", _train_lines), ("decode", _decode_lines)]


def format_table(r):
    """The results as text: a header, what each column runs, the lines."""
    o, m = r["options"], r["options"]["model"]
    names = [n for n in NAMES if n not in r["skipped"]]
    where = r["machine"].get("accelerator") or (
        f"{r['machine']['processor']} ({r['machine']['cpus']} CPUs)")
    lines = [
        f"keras-gpt bench: backend {r['backend']} (keras {r['keras']}) on "
        f"{where}",
        f"config {o.get('config', '-')}: {m['n_layers']} layers, "
        f"{m['n_heads']} heads, d_model {m['d_model']}, vocab "
        f"{m['vocab_size']}, seq {m['context_length']}; {o['dtype']}; N = "
        f"{r['params_without_positions']:,} (no positions)"]
    peak = r.get("matmul_peak_gflops")
    if peak:
        lines.append(f"{r['matmul_peak_dtype']} matmul peak GFLOP/s: "
                     + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
    lines += [f"  {n}: {WHAT[n]}" for n in names]
    lines.append(f"{'':{LABEL}}" + "".join(_cell(n) for n in names))
    for key, make_lines in ROW_GROUPS:
        if r.get(key):
            lines.extend(make_lines(r, names))
    return "\n".join(lines)
