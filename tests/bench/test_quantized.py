"""`keras-gpt bench --quantize int8`: the float32 / int8 table and JSON
(no speed asserted)."""

import json

import re

import keras
import pytest
from tests.conftest import load_tool

from keras_gpt.commands.main import main


def test_quantize_smoke_prints_both_and_the_ratio(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--smoke", "--quantize", "int8", "--json",
                 str(out)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    row = result["decode"][0]
    for name in ("float32", "int8"):
        assert row[name]["tokens_per_s"] > 0
    assert row["ratio"] == pytest.approx(
        row["int8"]["tokens_per_s"] / row["float32"]["tokens_per_s"])
    losses = result["val_loss"]
    assert abs(losses["int8"] - losses["float32"]) < 0.05 * losses["float32"]
    assert "float32 vs int8" in table and "validation loss" in table
    assert f"int8 products: {result['int8_products']}" in table
    if keras.backend.backend() == "torch":  # what the decoder ran
        from keras_gpt.generation.torch_products import int8_products

        assert result["int8_products"] == int8_products("cpu")
    else:
        assert result["int8_products"].startswith("int8 x int8")


@pytest.mark.backend_independent
def test_run_dir_needs_quantize(capsys):
    assert main(["bench", "--run-dir", "runs/x"]) == 2
    assert "--run-dir goes with --quantize int8" in capsys.readouterr().err


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="its decoder row is PyTorch's; Keras' int8 model "
                           "is checked on every backend in test_quantization")
def test_int8_error_tool_prints_both_errors(capsys):
    """tools/int8_error.py: the Keras int8 model's and the torch decoder's
    largest logit error against float32, a few percent, not zero."""
    from keras_gpt.generation.torch_products import int8_products

    load_tool("int8_error").main(["--tokens", "4"])
    out = capsys.readouterr().out
    rows = re.findall(r"^  (.+?)\s+largest error ([\d.]+)% of the largest "
                      r"logit, argmax agrees (\d+)%$", out, re.M)
    assert [name for name, _, _ in rows] == [
        "Keras int8 model", f"torch decoder ({int8_products('cpu')})"], out
    for _, error, agree in rows:
        assert 0 < float(error) < 10 and 0 <= int(agree) <= 100, out
