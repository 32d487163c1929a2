"""Self-contained HTML: an interactive attention view and report pages.

Everything a page needs is inside it — styles, data, a few lines of plain
JavaScript — so it opens from disk with no network, no CDN script and no
PyTorch (circuitsvis and bertviz, which inspired the view, load theirs from
the web).
"""

import html
import json

import numpy as np

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222;
       max-width: 1200px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; }
.note { color: #555; font-size: 13px; }
.prompt { font-family: monospace; background: #f4f4f4; padding: 8px;
          white-space: pre-wrap; }
table.data { border-collapse: collapse; font-size: 13px; }
table.data td, table.data th { border: 1px solid #ccc; padding: 3px 8px;
                               text-align: right; }
img { max-width: 100%; border: 1px solid #ddd; }
.attn button { margin: 1px; padding: 2px 7px; font-size: 12px;
               border: 1px solid #888; background: #fff; cursor: pointer; }
.attn button.on { background: #2166ac; color: #fff; }
.attn .tokens span { font-family: monospace; padding: 2px 1px; margin: 1px;
                     border-radius: 3px; display: inline-block;
                     cursor: pointer; white-space: pre; }
.attn .tokens span.query { outline: 2px solid #d6604d; }
.attn .panes { display: flex; gap: 24px; align-items: flex-start;
               flex-wrap: wrap; }
.attn canvas { border: 1px solid #ccc; }
"""

# The attention view: layer and head buttons; a query x key heatmap (hover
# for values); the prompt's tokens, where hovering a token shades every
# earlier token by how much the chosen head's query there attends to it.
_SCRIPT = """
(function () {
  var root = document.getElementById(%(id)s);
  var data = JSON.parse(document.getElementById(%(data_id)s).textContent);
  var tokens = data.tokens, n = tokens.length, layer = 0, head = 0;
  var query = n - 1;
  function weights() { return data.patterns[layer][head]; }
  function buttons(box, count, label, pick) {
    for (var i = 0; i < count; i++) {
      var b = document.createElement("button");
      b.textContent = label + " " + i; b.dataset.i = i;
      b.onclick = function () { pick(+this.dataset.i); draw(); };
      box.appendChild(b);
    }
  }
  buttons(root.querySelector(".layers"), data.layers, "layer",
          function (i) { layer = i; });
  buttons(root.querySelector(".heads"), data.heads, "head",
          function (i) { head = i; });
  var canvas = root.querySelector("canvas"), info = root.querySelector(".info");
  var cell = Math.max(2, Math.min(24, Math.floor(480 / n)));
  var labels = n <= 64 && cell >= 7, margin = labels ? 90 : 0;
  canvas.width = canvas.height = margin + cell * n;
  var spans = [];
  var box = root.querySelector(".tokens");
  tokens.forEach(function (t, i) {
    var s = document.createElement("span");
    s.textContent = t; s.title = "position " + i;
    s.onmouseenter = function () { query = i; draw(); };
    box.appendChild(s); spans.push(s);
  });
  canvas.onmousemove = function (e) {
    var r = canvas.getBoundingClientRect();
    var k = Math.floor((e.clientX - r.left - margin) / cell);
    var q = Math.floor((e.clientY - r.top - margin) / cell);
    if (q < 0 || q >= n || k < 0 || k >= n) return;
    info.textContent = "query " + q + " " + JSON.stringify(tokens[q]) +
      " -> key " + k + " " + JSON.stringify(tokens[k]) + ": " +
      weights()[q][k].toFixed(3);
  };
  function draw() {
    var w = weights(), g = canvas.getContext("2d");
    g.clearRect(0, 0, canvas.width, canvas.height);
    for (var q = 0; q < n; q++) for (var k = 0; k < n; k++) {
      var a = w[q][k];
      g.fillStyle = "rgb(" + Math.round(255 - 222 * a) + "," +
        Math.round(255 - 153 * a) + "," + Math.round(255 - 83 * a) + ")";
      g.fillRect(margin + k * cell, margin + q * cell, cell, cell);
    }
    if (labels) {  // queries down the left, keys along the top
      g.fillStyle = "#222"; g.font = Math.min(12, cell) + "px monospace";
      g.textBaseline = "middle"; g.textAlign = "right";
      tokens.forEach(function (t, i) {
        var y = margin + (i + 0.5) * cell, label = t.slice(0, 10);
        g.fillText(label, margin - 4, y);
        g.save(); g.translate(y, margin - 4); g.rotate(-Math.PI / 2);
        g.textAlign = "left"; g.fillText(label, 0, 0); g.restore();
      });
    }
    root.querySelectorAll(".layers button").forEach(function (b) {
      b.className = +b.dataset.i === layer ? "on" : ""; });
    root.querySelectorAll(".heads button").forEach(function (b) {
      b.className = +b.dataset.i === head ? "on" : ""; });
    spans.forEach(function (s, k) {
      var a = k <= query ? w[query][k] : 0;
      s.style.background = "rgba(33,102,172," + a + ")";
      s.style.color = a > 0.5 ? "#fff" : "#222";
      s.className = k === query ? "query" : "";
    });
    root.querySelector(".title").textContent = "layer " + layer + ", head " +
      head + "; hover a token: the shading is its attention to the tokens" +
      " before it";
  }
  draw();
})();
"""


def _json_for_script(value):
    # "</" would end the <script> element early.
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def attention_view(patterns, tokens, element_id="attention"):
    """An HTML fragment: the interactive attention view of one prompt.

    Args:
        patterns: (n_layers, n_heads, seq, seq) attention weights.
        tokens: `seq` token labels.
        element_id: A page-unique id for the view.
    """
    patterns = np.asarray(patterns, dtype=float)
    layers, heads, length = patterns.shape[:3]
    if len(tokens) != length:
        raise ValueError(f"{len(tokens)} token labels for patterns over "
                         f"{length} positions.")
    data = {"tokens": [str(t) for t in tokens], "layers": layers,
            "heads": heads, "patterns": np.round(patterns, 3).tolist()}
    data_id = f"{element_id}-data"
    script = _SCRIPT % {"id": json.dumps(element_id),
                        "data_id": json.dumps(data_id)}
    return (
        f'<div class="attn" id="{html.escape(element_id)}">'
        '<div class="layers"></div><div class="heads"></div>'
        '<p class="title note"></p><div class="panes">'
        '<div><canvas></canvas><p class="info note">hover the map: query '
        'row, key column</p></div>'
        '<div class="tokens" style="max-width:560px"></div></div></div>'
        f'<script type="application/json" id="{html.escape(data_id)}">'
        f"{_json_for_script(data)}</script><script>{script}</script>")


def page(title, body):
    """A whole HTML document around `body` (trusted HTML)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
            f"</head><body><h1>{html.escape(title)}</h1>\n{body}\n"
            "</body></html>\n")


def attention_page(patterns, tokens, title="Attention patterns"):
    """A self-contained page holding only the attention view."""
    return page(title, attention_view(patterns, tokens))


def table(header, rows):
    """An HTML table (cells escaped; floats to 3 decimals)."""
    def cell(value, tag):
        if isinstance(value, float):
            value = f"{value:.3f}"
        return f"<{tag}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell(h, "th") for h in header)
    body = "".join("<tr>" + "".join(cell(v, "td") for v in row) + "</tr>"
                   for row in rows)
    return f'<table class="data"><tr>{head}</tr>{body}</table>'
