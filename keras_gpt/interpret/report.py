"""One HTML report on one prompt: what `keras-gpt explain` writes.

Attention maps (interactive and as a PNG grid), the logit lens, the heads
that write the model's next-token choice most directly, and head detector
scores. The report and its PNGs are built in a temporary folder and moved
into place, report.html last, so a report on disk is always whole.
"""

import os
import shutil
from html import escape
import tempfile
from pathlib import Path

import numpy as np

from keras_gpt.interpret import html as pages
from keras_gpt.interpret import pictures
from keras_gpt.interpret.attribution import direct_logit_attribution
from keras_gpt.interpret.heads import (HEAD_KINDS, attention_patterns,
                                       head_scores, repeated_random_tokens)
from keras_gpt.interpret.lens import logit_lens

REPORT_FILES = ("attention.png", "logit_lens.png", "attribution.png",
                "heads.png", "attention.html", "report.html")


def prompt_ids(model, tokenizer, prompt):
    """The prompt's ids, checked to be at least 1 and at most the context."""
    ids = list(tokenizer.encode(prompt))
    limit = model.config.context_length
    if not ids:
        raise ValueError("The prompt is empty: give some text to explain.")
    if len(ids) > limit:
        raise ValueError(f"The prompt is {len(ids)} tokens long; the model's "
                         f"context holds at most {limit}: shorten it.")
    return np.array(ids, dtype="int32")


def explain(model, tokenizer, prompt, out_dir, top_k=5, top_heads=10):
    """Writes `out_dir/report.html` and its pictures; returns its path.

    Args:
        model: A `GPT`.
        tokenizer: The model's tokenizer (`encode`, `decode`).
        prompt: The text to look at.
        out_dir: The folder to write (created; files of a previous report
            there are replaced).
        top_k: Tokens listed per position by the logit lens.
        top_heads: Heads listed by direct logit attribution.

    Example:

    ```python
    path = explain(model, tokenizer, "The return statement", "out/explain")
    ```
    """
    for name, value in (("top_k", top_k), ("top_heads", top_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer.")
    ids = prompt_ids(model, tokenizer, prompt)
    tokens = pictures.token_labels(tokenizer, ids)
    c = model.config
    patterns = attention_patterns(model, ids[None])[:, 0]
    reading = logit_lens(model, ids[None], top_k=top_k)
    last = reading.logits[-1, 0, -1]  # the model's output
    answer, wrong = (int(i) for i in np.argsort(-last, kind="stable")[:2])
    attribution = direct_logit_attribution(model, ids, answer, wrong)
    repeated = repeated_random_tokens(c.vocab_size,
                                      min(c.context_length // 2, 64))
    repeated_patterns = attention_patterns(model, repeated)
    scores = {kind: head_scores(repeated_patterns, repeated, kind)
              for kind in HEAD_KINDS}

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".explain-", dir=out_dir))
    try:
        pictures.plot_attention(patterns, tokens, work / "attention.png")
        top_labels = [[pictures.token_labels(tokenizer, [t])[0]
                       for t in row] for row in reading.top_ids[:, 0, :, 0]]
        pictures.plot_logit_lens(reading, tokens, top_labels,
                                 work / "logit_lens.png")
        pictures.plot_heatmaps(
            {"heads": attribution.heads,
             "MLPs": attribution.mlp[:, None]},
            work / "attribution.png", cmap="RdBu", x_label=["head", "MLP"])
        pictures.plot_heatmaps(
            {kind.replace("_", " "): s for kind, s in scores.items()},
            work / "heads.png", vmin=0.0, vmax=1.0)
        (work / "attention.html").write_text(
            pages.attention_page(patterns, tokens,
                                 "Attention patterns: " + prompt[:60]),
            encoding="utf-8")
        body = _body(prompt, ids, tokens, tokenizer, patterns, reading,
                     attribution, scores, answer, wrong, top_heads, last)
        (work / "report.html").write_text(
            pages.page("keras-gpt explain", body), encoding="utf-8")
        for name in REPORT_FILES:  # report.html last
            os.replace(work / name, out_dir / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir / "report.html"


def _body(prompt, ids, tokens, tokenizer, patterns, reading, attribution,
          scores, answer, wrong, top_heads, last):
    def label(token):
        return repr(tokenizer.decode([int(token)]))

    probs = np.exp(last - last.max())
    probs /= probs.sum()
    lens_rows = [
        [row_label] + [f"{label(t)} {p:.2f}" for t, p in zip(
            reading.top_ids[r, 0, -1], reading.top_probs[r, 0, -1])]
        + [float(reading.kl[r, 0, -1])]
        for r, row_label in enumerate(pictures.lens_row_labels(
            reading.names))]
    head_rows = [[f"L{layer}H{head}", effect]
                 for layer, head, effect in attribution.top_heads(top_heads)]
    mlp_rows = [[f"MLP {i}", float(v)] for i, v in enumerate(attribution.mlp)]
    best = []
    for kind, s in scores.items():
        layer, head = np.unravel_index(np.argmax(s), s.shape)
        try:  # the same head on the prompt, where the pattern has targets
            here = float(head_scores(patterns[:, None], ids[None],
                                     kind)[layer, head])
        except ValueError:
            here = "n/a"  # e.g. no token repeats
        best.append([kind.replace("_", " "), f"L{layer}H{head}",
                     float(s[layer, head]), here])
    top_k = reading.top_ids.shape[-1]
    return "\n".join([
        '<p class="note">The prompt, split into tokens:</p>',
        f'<p class="prompt">{" | ".join(escape(t) for t in tokens)}'
        "</p>",
        f"<p>Next token: {escape(label(answer))} "
        f"(p = {probs[answer]:.3f}), runner-up "
        f"{escape(label(wrong))} (p = {probs[wrong]:.3f}).</p>",
        "<h2>Attention (seed §9-§13)</h2>",
        '<p class="note">Each head mixes earlier tokens into each position; '
        "future tokens are masked, so every map is lower-triangular.</p>",
        pages.attention_view(patterns, tokens),
        '<p><img src="attention.png" alt="attention patterns, layers x '
        'heads"></p>',
        "<h2>Logit lens</h2>",
        '<p class="note">The residual stream entering each block read through '
        "the final LayerNorm and W_U: where in depth the prediction forms. "
        f"Top {top_k} guesses for the token after the last one:</p>",
        pages.table(["depth"] + [f"#{i + 1}" for i in range(top_k)]
                    + ["KL to output"], lens_rows),
        '<p><img src="logit_lens.png" alt="logit lens heatmap"></p>',
        "<h2>Which heads write the prediction</h2>",
        '<p class="note">Direct logit attribution of logit['
        f"{escape(label(answer))}] - logit["
        f"{escape(label(wrong))}] at the last position: each "
        "head's and MLP's output, through the final LayerNorm (its scale "
        f"frozen) and W_U. Heads, MLPs, embeddings ({attribution.embed:.3f}) "
        f"and biases ({attribution.rest:.3f}) add up to "
        f"{attribution.total:.3f}.</p>",
        pages.table(["head", "effect"], head_rows),
        pages.table(["MLP", "effect"], mlp_rows),
        '<p><img src="attribution.png" alt="attribution by head and MLP">'
        "</p>",
        "<h2>Head detectors</h2>",
        '<p class="note">Share of attention on the pattern each kind follows '
        "(TransformerLens' definitions), on random tokens repeated twice, "
        "and for the same head on the prompt; 1 is a perfect match.</p>",
        pages.table(["kind", "best head", "score", "on the prompt"], best),
        '<p><img src="heads.png" alt="head detector scores"></p>',
        f'<p class="note">Prompt: {escape(prompt)}</p>',
    ])
