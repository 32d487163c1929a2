"""`keras-gpt bench`: the table and JSON are produced (no speed asserted)."""

import json

import keras
import pytest

from keras_gpt.cli import main


def test_smoke_run_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--smoke", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    names = ["keras_gpt"] + [n for n in ("keras_hub", "hf_torch")
                             if n not in result["skipped"]]
    assert result["backend"] == keras.backend.backend()
    assert result["matmul_peak_gflops"]["best"] > 0
    for name in names:
        train = result["train"][name]
        assert train["tokens_per_s"] > 0 and 0 < train["mfu"] < 1
        assert train["first_call_s"] > 0 and train["peak_memory_bytes"] >= 0
        decode = result["decode"][0][name]
        assert decode["tokens_per_s"] > 0
    # 6 N + 12 L d T, N without the position table.
    m = result["options"]["model"]
    assert result["flops_per_token"] == (
        6 * result["params_without_positions"]
        + 12 * m["n_layers"] * m["d_model"] * m["context_length"])
    for label in ("train tokens/s", "train MFU", "train first call s",
                  "train peak memory MB", "decode greedy batch 1 tokens/s"):
        assert label in table, label
    header = next(l for l in table.splitlines()
                  if l.strip().startswith("keras_gpt"))
    for name in names[1:]:
        assert f"vs {name}" in header
    ratios = [l for l in table.splitlines()
              if l.startswith("train tokens/s")][0]
    assert ratios.count("x") == len(names) - 1


@pytest.mark.parametrize("args, message", [
    (["--decode-batch-sizes", "0"], "expected integers >= 1"),
    (["--only", "speed"], "unknown 'speed'"),
    (["--skip", "numpy"], "unknown 'numpy'"),
    (["--seq-len", "16", "--prompt-length", "8", "--new-tokens", "9"],
     "exceeds the context length 16"),
    (["--n-heads", "5"], "n_heads"),
])
def test_bad_options_are_one_clear_line(args, message, capsys):
    assert main(["bench", *args]) == 2  # refused before anything runs
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
