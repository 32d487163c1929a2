"""PNG pictures of what the interpret tools measure (matplotlib, no display).

Each function takes NumPy arrays and token labels, draws one figure and
writes it atomically (a temporary file, then a rename).
"""

import numpy as np

from keras_gpt.files import replace_atomically

# Token labels are drawn only while they stay readable.
_MOST_LABELS = 48


def token_labels(tokenizer, token_ids):
    """One printable label per id: the token's text, or its Python repr when
    that is blank or holds unprintable characters (newlines, bytes)."""
    labels = []
    for token in np.asarray(token_ids).reshape(-1):
        text = tokenizer.decode([int(token)])
        labels.append(text if text.isprintable() and text.strip()
                      else repr(text))
    return labels


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(figure, path, dpi=100):
    replace_atomically(path, lambda tmp: figure.savefig(
        tmp, format="png", dpi=dpi))
    return path


def _label_axes(axes, x_labels=None, y_labels=None, size=7):
    for labels, set_ticks, set_labels, rotation in (
            (x_labels, axes.set_xticks, axes.set_xticklabels, 90),
            (y_labels, axes.set_yticks, axes.set_yticklabels, 0)):
        if labels is None or len(labels) > _MOST_LABELS:
            set_ticks([])
            continue
        set_ticks(range(len(labels)))
        set_labels(labels, fontsize=size, rotation=rotation)


def plot_attention(patterns, tokens, path, title="Attention patterns"):
    """Attention patterns as a grid: a row per layer, a column per head.

    Args:
        patterns: (n_layers, n_heads, query, key), one prompt's
            `blocks.{i}.attn.pattern`.
        tokens: `query` labels (keys along x, queries down y).
        path: The PNG to write.
        title: The figure's title.
    """
    patterns = np.asarray(patterns)
    layers, heads, length = patterns.shape[:3]
    cell = 1.0 + min(length, _MOST_LABELS) * 0.16
    figure = _figure(0.8 + heads * cell, 0.6 + layers * cell)
    grid = figure.subplots(layers, heads, squeeze=False)
    for layer in range(layers):
        for head in range(heads):
            axes = grid[layer, head]
            axes.imshow(patterns[layer, head], cmap="Blues", vmin=0, vmax=1)
            axes.set_title(f"layer {layer} head {head}", fontsize=8)
            _label_axes(axes, tokens if layer == layers - 1 else None,
                        tokens if head == 0 else None)
            if layer != layers - 1:
                axes.set_xticks([])
            if head != 0:
                axes.set_yticks([])
    figure.suptitle(f"{title} (row: query token, column: key token)")
    return _save(figure, path)


def lens_row_labels(names):
    """Short labels of a lens' rows: 'into block i', last 'output'."""
    labels = [f"into block {name.split('.')[1]}" for name in names[:-1]]
    return labels + ["output"]


def plot_logit_lens(reading, tokens, top_labels, path, row=0,
                    title="Logit lens"):
    """A depth x position heatmap of KL to the output, with the leading
    guess written in each cell.

    Args:
        reading: A `LensReading`.
        tokens: Labels of the input positions.
        top_labels: (rows, seq) labels of each cell's top token.
        path: The PNG to write.
        row: The batch row drawn.
    """
    kl = reading.kl[:, row]
    depth, length = kl.shape
    figure = _figure(1.5 + 0.75 * min(length, 40), 1.0 + 0.45 * depth)
    axes = figure.subplots()
    image = axes.imshow(kl, cmap="viridis_r", aspect="auto")
    if length <= 40:
        probs = reading.top_probs[:, row, :, 0]
        for y in range(depth):
            for x in range(length):
                axes.text(x, y, f"{top_labels[y][x][:8]}\n{probs[y, x]:.2f}",
                          ha="center", va="center", fontsize=6,
                          color="black" if kl[y, x] < kl.max() / 2 else
                          "white")
    _label_axes(axes, tokens, lens_row_labels(reading.names))
    axes.set_xlabel("input token (the guess is for the next one)")
    figure.colorbar(image, ax=axes, label="KL to the output (nats)")
    axes.set_title(f"{title}: top guess and its probability at each depth")
    return _save(figure, path)


def plot_patching(effects, path, over, tokens=None,
                  title="Activation patching"):
    """A layer x position (or layer x head) heatmap of patched metrics."""
    effects = np.asarray(effects)
    layers, columns = effects.shape
    figure = _figure(2.0 + 0.45 * min(columns, 40), 1.2 + 0.45 * layers)
    axes = figure.subplots()
    bound = float(np.abs(effects).max()) or 1.0
    image = axes.imshow(effects, cmap="RdBu", vmin=-bound, vmax=bound,
                        aspect="auto")
    x_labels = ([f"head {h}" for h in range(columns)] if over == "head"
                else tokens)
    _label_axes(axes, x_labels, [f"layer {i}" for i in range(layers)])
    axes.set_xlabel("head" if over == "head" else "position")
    figure.colorbar(image, ax=axes, label="metric")
    axes.set_title(f"{title} ({over})")
    return _save(figure, path)


def plot_heatmaps(maps, path, vmin=None, vmax=None, cmap="viridis",
                  x_label="head", y_label="layer"):
    """Side-by-side annotated heatmaps: `maps` is a dict title -> 2-D array
    (layer x head scores, attributions); "RdBu" is centred on 0;
    `x_label` is one label or one per map."""
    maps = {name: np.atleast_2d(np.asarray(m, dtype=float))
            for name, m in maps.items()}
    rows = max(m.shape[0] for m in maps.values())
    widths = [1.6 + 0.55 * m.shape[1] for m in maps.values()]
    figure = _figure(0.5 + sum(widths), 1.3 + 0.45 * rows)
    grid = figure.subplots(1, len(maps), squeeze=False, width_ratios=widths)
    x_labels = (list(x_label) if isinstance(x_label, (list, tuple))
                else [x_label] * len(maps))
    for axes, (name, values), label in zip(grid[0], maps.items(), x_labels):
        if cmap == "RdBu" and vmin is None:
            high = float(np.abs(values).max()) or 1.0
            low = -high
        else:
            low = values.min() if vmin is None else vmin
            high = values.max() if vmax is None else vmax
        image = axes.imshow(values, cmap=cmap, vmin=low, vmax=high,
                            aspect="auto")
        if values.size <= 400:
            for (y, x), value in np.ndenumerate(values):
                share = (value - low) / ((high - low) or 1.0)
                dark = (abs(share - 0.5) > 0.35 if cmap == "RdBu"
                        else share < 0.5)
                axes.text(x, y, f"{value:.2f}", ha="center", va="center",
                          fontsize=6, color="white" if dark else "black")
        axes.set_title(name, fontsize=9)
        axes.set_xticks(range(values.shape[1]))
        axes.set_yticks(range(values.shape[0]))
        axes.set_xlabel(label)
        axes.set_ylabel(y_label)
        figure.colorbar(image, ax=axes, shrink=0.8)
    return _save(figure, path)
