"""`keras-gpt bench --quantize int8`: the float32 / int8 table and JSON
(no speed asserted)."""

import json

import keras
import pytest

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
        from keras_gpt.generation.torch_decoder import int8_products

        assert result["int8_products"] == int8_products("cpu")
    else:
        assert result["int8_products"].startswith("int8 x int8")


@pytest.mark.backend_independent
def test_run_dir_needs_quantize(capsys):
    assert main(["bench", "--run-dir", "runs/x"]) == 2
    assert "--run-dir goes with --quantize int8" in capsys.readouterr().err
