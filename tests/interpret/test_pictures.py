import numpy as np
import pytest

from keras_gpt.interpret import LensReading
from keras_gpt.interpret.pictures import (plot_attention, plot_heatmaps,
                                          plot_logit_lens, plot_patching,
                                          token_labels)
from keras_gpt.tokenizers.simple import ByteTokenizer

pytestmark = pytest.mark.backend_independent


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24],
                                                              "big")


def test_each_picture_is_a_png_sized_by_its_grid(tmp_path):
    labels = token_labels(ByteTokenizer(), ByteTokenizer().encode("a b\n\x16"))
    assert labels == ["a", "' '", "b", "'\\n'", "'\\x16'"]
    labels = labels[:4]
    attention = np.full((2, 3, 4, 4), 0.25)
    small = png_size(plot_attention(attention, labels, tmp_path / "a.png"))
    big = png_size(plot_attention(np.full((4, 3, 4, 4), 0.25), labels,
                                  tmp_path / "b.png"))
    assert big[1] > 1.5 * small[1] and big[0] == small[0]
    reading = LensReading.from_logits(
        ["blocks.0.resid_pre", "blocks.0.resid_post"],
        np.random.default_rng(0).normal(size=(2, 1, 4, 10)), top_k=2)
    png_size(plot_logit_lens(reading, labels, [labels, labels],
                             tmp_path / "lens.png"))
    png_size(plot_patching(np.arange(8.0).reshape(2, 4) - 3,
                           tmp_path / "p.png", "resid_pre", labels))
    png_size(plot_heatmaps({"a": np.eye(2), "b": np.ones((2, 1))},
                           tmp_path / "h.png", x_label=["head", "MLP"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.png", "b.png", "h.png", "lens.png", "p.png"]  # no temporaries
