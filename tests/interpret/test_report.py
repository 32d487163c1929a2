import re

import numpy as np
import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt.interpret.report import REPORT_FILES, explain
from keras_gpt.tokenizers.simple import ByteTokenizer

# The report wires tested tools (their numbers are checked on every backend
# in test_lens, test_attribution, test_heads) to pictures and HTML.
pytestmark = pytest.mark.backend_independent


def test_report_holds_every_section_and_its_pictures(tmp_path):
    model = GPT(GPTConfig(vocab_size=257, context_length=32, d_model=32,
                          n_layers=2, n_heads=2))
    path = explain(model, ByteTokenizer(), "ab ab", tmp_path / "out",
                   top_heads=3)
    out = tmp_path / "out"
    assert path == out / "report.html"
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    page = path.read_text()
    for heading in ("Attention", "Logit lens", "Which heads write",
                    "Head detectors"):
        assert f"<h2>{heading}" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(images) == ["attention.png", "attribution.png",
                              "heads.png", "logit_lens.png"]
    assert not re.search(r"https?://|<script src|<link", page)
    assert page.count("<tr><td>L") == 3  # --heads: the top 3 heads
    for kind in ("previous token", "duplicate token", "induction"):
        assert f"<tr><td>{kind}</td><td>L" in page
    assert "<th>on the prompt</th>" in page and "n/a" not in page
    assert "a | b | &#x27; &#x27; | a | b" in page


def test_prompts_that_do_not_fit_are_refused(tmp_path):
    model = GPT(GPTConfig(vocab_size=257, context_length=8, d_model=16,
                          n_layers=1, n_heads=2))
    with pytest.raises(ValueError, match="9 tokens long; the model's context "
                       "holds at most 8"):
        explain(model, ByteTokenizer(), "x" * 9, tmp_path / "out")
    with pytest.raises(ValueError, match="prompt is empty"):
        explain(model, ByteTokenizer(), "", tmp_path / "out")
    assert not (tmp_path / "out").exists()
