import json
import re

import numpy as np
import pytest

from keras_gpt.interpret.html import attention_page, table

pytestmark = pytest.mark.backend_independent


def patterns(layers=2, heads=3, length=4):
    raw = np.tril(np.random.default_rng(0).random((layers, heads, length,
                                                   length))) + np.eye(length)
    return raw / raw.sum(-1, keepdims=True)


def test_attention_page_is_self_contained_and_holds_the_weights():
    tokens = ["The", " cat", "</script>", " <b>"]
    page = attention_page(patterns(), tokens, title="A & B")
    assert page.startswith("<!DOCTYPE html>")
    # Nothing is fetched: no external scripts, styles, images or fonts.
    assert not re.search(r"(src|href)\s*=|https?://|@import|url\(", page)
    assert "<title>A &amp; B</title>" in page
    # The data block parses back to the weights (rounded to 3 decimals);
    # a token "</script>" cannot end the element early.
    block = re.search(r'<script type="application/json" id="attention-data">'
                      r"(.*?)</script>", page, re.S).group(1)
    data = json.loads(block)
    assert data["tokens"] == tokens and (data["layers"], data["heads"]) == (
        2, 3)
    np.testing.assert_allclose(data["patterns"], patterns(), atol=5e-4)
    assert page.count("<script") == 2


def test_bad_labels_and_table_escaping():
    with pytest.raises(ValueError, match="3 token labels for patterns over 4"):
        attention_page(patterns(), ["a", "b", "c"])
    html = table(["a<b", "x"], [["<i>", 0.12345]])
    assert "a&lt;b" in html and "&lt;i&gt;" in html and "0.123" in html
