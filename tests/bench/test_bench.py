"""`keras-gpt bench`: the table and JSON are produced (no speed asserted)."""

import json
import os
import re
import subprocess
import sys

import keras
import pytest
from tests.conftest import load_tool

from keras_gpt.commands.main import main


def test_smoke_run_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--smoke", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    names = ["keras_gpt"] + [n for n in ("keras_hub", "hf_torch")
                             if n not in result["skipped"]]
    assert result["complete"] is True
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


def test_a_run_stopped_while_decoding_keeps_its_training_figures(
        tmp_path, monkeypatch):
    """The JSON is rewritten after each part, marked incomplete until the
    end: a time limit (tools/gpu_check.sh) loses only what was not run."""
    from keras_gpt import bench

    def trainer(*args):  # the bookkeeping is under test, not the training
        return lambda: 3.0  # a finite loss

    def stopped(*args):
        raise KeyboardInterrupt  # the run is stopped here

    monkeypatch.setitem(bench.impl.TRAINERS, "keras_gpt", trainer)
    monkeypatch.setitem(bench.impl.DECODERS, "keras_gpt", stopped)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--smoke", "--skip", "keras_hub,hf_torch",
                    "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["complete"] is False and result["decode"] == []
    assert result["train"]["keras_gpt"]["tokens_per_s"] > 0


def test_bfloat16_smoke_runs_what_the_gpu_check_runs(tmp_path):
    if keras.backend.backend() == "tensorflow":
        pytest.skip("tools/gpu_check.sh benchmarks JAX and PyTorch only (the "
                    "GPU image has no TensorFlow)")
    out = tmp_path / "bench.json"
    assert main(["bench", "--smoke", "--dtype", "mixed_bfloat16",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["options"]["dtype"] == "mixed_bfloat16"
    # On CPU the MFU is over the float32 peak, NumPy's among its sources.
    assert result["matmul_peak_dtype"] == "float32"
    assert result["matmul_peak_gflops"]["numpy"] > 0
    for name in ["keras_gpt"] + [n for n in ("keras_hub", "hf_torch")
                                 if n not in result["skipped"]]:
        assert 0 < result["train"][name]["mfu"] < 1, name
        assert result["decode"][0][name]["tokens_per_s"] > 0, name


@pytest.mark.backend_independent
@pytest.mark.parametrize("args, message", [
    (["--decode-batch-sizes", "0"], "expected integers >= 1"),
    (["--only", "speed"], "unknown 'speed'"),
    (["--skip", "numpy"], "unknown 'numpy'"),
    (["--seq-len", "16", "--prompt-length", "8", "--new-tokens", "9"],
     "exceeds the context length 16"),
    (["--n-heads", "5"], "--n-heads 5: choose --n-heads among the divisors"),
])
def test_bad_options_are_one_clear_line(args, message, capsys):
    assert main(["bench", *args]) == 2  # refused before anything runs
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_tool(name, *args):
    """stdout of tools/<name> run in its own process, which must succeed."""
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", name), *args],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _tools_pass_only():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("runs tools in their own processes, once: tensorflow "
                    "pass only")


def test_tf_step_breakdown_smoke():
    """tools/tf_step_breakdown.py runs and prints its four timings."""
    _tools_pass_only()
    out = _run_tool("tf_step_breakdown.py", "--smoke")
    timings = re.findall(r"^(\S.*?)\s+([\d.]+) ms", out, re.M)
    assert [name for name, _ in timings] == [
        "fit (per step)", "forward + backward", "forward + backward + AdamW",
        "matmul FLOPs at the peak"]
    assert all(float(ms) > 0 for _, ms in timings)


# Each check once over the three passes, on a backend it applies to (the
# TensorFlow pass, the slowest, keeps only its own).
AB_CHECKS = {"tensorflow": ["tf-xla"], "jax": ["attention", "decode-vectors"],
             "torch": ["torch-gemm", "loss"]}


def test_ab_speed_smoke(capsys):
    """tools/ab_speed.py prints on/off tokens/s and their ratio per check:
    each backend's pass runs its own checks, in this process."""
    checks = AB_CHECKS[keras.backend.backend()]
    ab_speed = load_tool("ab_speed")
    ab_speed.main([*checks, "--smoke"])
    out = capsys.readouterr().out
    rows = re.findall(r"^(\S+)\s+on\s+([\d.]+) tok/s\s+off\s+([\d.]+) "
                      r"tok/s\s+on/off ([\d.]+)x", out, re.M)
    assert [row[0] for row in rows] == checks, out
    for _, on, off, ratio in rows:
        assert float(on) > 0 and float(off) > 0
        assert float(ratio) == pytest.approx(float(on) / float(off),
                                             abs=2e-3)
    if "torch-gemm" in checks:
        assert re.search(r"^torch-gemm .*x \(on: (onednn|torch)\)$", out,
                         re.M), out
    with pytest.raises(SystemExit):
        ab_speed.main([checks[0], "--rounds", "0"])
    assert "--rounds 0 must be >= 1." in capsys.readouterr().err


def test_loss_speed_smoke(capsys):
    """tools/loss_speed.py checks every loss's gradient against ours, then
    prints ms per forward + backward and the ratio to ours (each backend in
    its own pass, in this process)."""
    loss_speed = load_tool("loss_speed")
    loss_speed.main(["--smoke"])
    out = capsys.readouterr().out
    assert re.search(r"^\w+: loss forward \+ backward, logits \(2, 8, 64\), "
                     r"best of 1; gradients equal$", out, re.M), out
    rows = re.findall(r"^(\S+(?: \S+)*)\s+([\d.]+) ms\s+([\d.]+)x ours$",
                      out, re.M)
    expected = ["ours", "formula", *{
        "jax": ["written gradient"], "torch": ["F.cross_entropy"]}.get(
            keras.backend.backend(), [])]
    assert [row[0] for row in rows] == expected, out
    assert rows[0][2] == "1.00", out
    assert all(float(ms) > 0 and float(ratio) > 0 for _, ms, ratio in rows)
    with pytest.raises(SystemExit):
        loss_speed.main(["--vocab", "0"])
    assert "--vocab 0 must be >= 1." in capsys.readouterr().err


def test_tf_data_teardown_smoke():
    """tools/tf_data_teardown.py prints the wait after fit's last step,
    autotuner on and off."""
    _tools_pass_only()
    out = _run_tool("tf_data_teardown.py", "--smoke")
    rows = re.findall(r"^\s*(\d+) steps \(\s*([\d.]+) s\): fit returns\s+"
                      r"([\d.]+) s .* on,\s+([\d.]+) s with it off$", out, re.M)
    assert len(rows) == 1 and rows[0][0] == "2", out
    assert all(float(v) >= 0 for v in rows[0][1:])


def test_tf_step_profile_smoke():
    """tools/tf_step_profile.py prints ms per step for op groups, products
    and the rest, with the model's own op names."""
    _tools_pass_only()
    out = _run_tool("tf_step_profile.py", "--smoke")
    totals = dict(re.findall(r"^(matrix products|other ops): ([\d.]+) ms$",
                             out, re.M))
    assert set(totals) == {"matrix products", "other ops"}, out
    assert float(totals["matrix products"]) > 0
    assert "gpt/unembedding/MatMul" in out and "attention" in out
