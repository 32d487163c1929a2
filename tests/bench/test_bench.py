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


def _names(result):
    return ["keras_gpt", "keras_gpt_plain"] + [
        n for n in ("keras_hub", "hf_torch") if n not in result["skipped"]]


def test_smoke_run_prints_the_table_and_writes_json(tmp_path, capsys):
    """Every row runs, the plain compile path beside compile_for_pretraining,
    on the smallest shapes, one step, one round, no matmul peak."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--smoke", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    names = _names(result)
    assert result["complete"] is True
    assert result["backend"] == keras.backend.backend()
    o = result["options"]
    assert o["model"]["n_layers"] == 1 and o["model"]["d_model"] == 16
    assert (o["steps"], o["rounds"], o["new_tokens"]) == (1, 1, 4)
    assert result["matmul_peak_gflops"] is None  # not timed: no MFU line
    assert "full bench (without --smoke" in table  # how long the real one takes
    for name in names:
        train = result["train"][name]
        assert train["tokens_per_s"] > 0 and "mfu" not in train
        assert train["ms_per_step"] == pytest.approx(
            1000 * o["batch_size"] * 16 / train["tokens_per_s"])
        assert train["first_call_s"] > 0 and train["peak_memory_bytes"] >= 0
    decode = result["decode"][0]
    assert "keras_gpt_plain" not in decode  # decoding has one row of ours
    for name in ["keras_gpt"] + names[2:]:
        assert decode[name]["tokens_per_s"] > 0
    # 6 N + 12 L d T, N without the position table.
    m = o["model"]
    assert result["flops_per_token"] == (
        6 * result["params_without_positions"]
        + 12 * m["n_layers"] * m["d_model"] * m["context_length"])
    for label in ("train tokens/s", "train ms/step", "train first call s",
                  "train peak memory MB", "decode greedy batch 1 tokens/s",
                  "SparseCategoricalCrossentropy(from_logits=True)) + fit"):
        assert label in table, label
    assert "train MFU" not in table
    header = next(l for l in table.splitlines()
                  if l.split() and l.split()[0] == "keras_gpt")
    assert header.split() == names
    _check_ratio_lines(table, result, names)


def _check_ratio_lines(table, result, names):
    """Under the training line, each of our rows over every column."""
    lines = table.splitlines()
    at = next(i for i, l in enumerate(lines) if l.startswith("train tokens/s"))
    speeds = {n: result["train"][n]["tokens_per_s"] for n in names}
    for offset, ours in enumerate(("keras_gpt", "keras_gpt_plain"), 1):
        cells = lines[at + offset].split()
        assert cells[:3] == [ours, "/", "column"], lines[at + offset]
        for name, cell in zip(names, cells[3:], strict=True):
            if name == ours:
                assert cell == "-"
            else:
                assert float(cell.rstrip("x")) == pytest.approx(
                    speeds[ours] / speeds[name], abs=0.006), (ours, name)


def test_config_baby_measures_nanogpts_shape_with_every_row(tmp_path,
                                                            monkeypatch):
    """`--config baby` runs each row on nanoGPT's CPU char shape and batch
    (stand-in trainers: the options and the table are under test)."""
    from keras_gpt import bench

    seen = {}

    def trainer(name):
        def make(spec, x, y):
            seen[name] = (spec["model"], spec["batch_size"], x.shape)
            return lambda: 2.0
        return make

    for name in list(bench.impl.TRAINERS):
        monkeypatch.setitem(bench.impl.TRAINERS, name, trainer(name))
    out = tmp_path / "bench.json"
    bench.main(["--config", "baby", "--only", "train", "--no-peak",
                "--steps", "2", "--rounds", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    baby = dict(n_layers=4, n_heads=4, d_model=128, vocab_size=65,
                context_length=64)
    names = _names(result)
    assert sorted(seen) == sorted(names)
    for name in names:
        assert seen[name] == (baby, 12, (24, 64)), name
    assert result["options"]["config"] == "baby"
    table = bench.format_table(result)
    assert "config baby: 4 layers, 4 heads, d_model 128, vocab 65, seq 64" \
        in table
    assert "train tokens/s (batch 12)" in table
    _check_ratio_lines(table, result, names)


@pytest.mark.backend_independent
def test_named_configs_and_their_overrides():
    import argparse

    from keras_gpt.bench import options

    def parse(*argv):
        parser = argparse.ArgumentParser()
        options.add_arguments(parser)
        return options.options_from_args(parser.parse_args(argv))

    default, baby = parse(), parse("--config", "baby")
    assert (default["model"], default["batch_size"]) == (
        options.ISSUE_MODEL, 8)
    assert default["new_tokens"] == 200 and default["peak"] is True
    assert (baby["model"], baby["batch_size"]) == (options.BABY_MODEL, 12)
    assert baby["new_tokens"] == 64 - 16  # what the context leaves
    override = parse("--config", "baby", "--batch-size", "4", "--n-layers",
                     "2", "--no-peak")
    assert override["batch_size"] == 4 and override["peak"] is False
    assert override["model"] == {**options.BABY_MODEL, "n_layers": 2}
    smoke = parse("--smoke", "--config", "baby")
    assert smoke["model"] == options.SMOKE_MODEL and smoke["peak"] is False


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
        bench.main(["--smoke", "--json", str(out), "--skip",
                    "keras_gpt_plain,keras_hub,hf_torch"])
    result = json.loads(out.read_text())
    assert result["complete"] is False and result["decode"] == []
    assert result["train"]["keras_gpt"]["tokens_per_s"] > 0


def test_bfloat16_smoke_runs_what_the_gpu_check_runs(tmp_path):
    if keras.backend.backend() == "tensorflow":
        pytest.skip("tools/gpu_check.sh benchmarks JAX and PyTorch only (the "
                    "GPU image has no TensorFlow)")
    from keras_gpt.bench import measure

    # The rows tools/gpu_check.sh runs on this backend.
    skip = {"jax": "hf_torch", "torch": "keras_hub"}[keras.backend.backend()]
    out = tmp_path / "bench.json"
    assert main(["bench", "--smoke", "--dtype", "mixed_bfloat16",
                 "--skip", skip, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["options"]["dtype"] == "mixed_bfloat16"
    # On CPU the MFU would be over the float32 peak, NumPy's among its
    # sources (the smoke run does not time it: a small one here).
    assert result["matmul_peak_dtype"] == "float32"
    peak = measure.matmul_peak(keras.backend.backend(), None, "float32",
                               size=64, repeats=1)
    assert peak["numpy"] > 0 and peak["best"] == max(
        v for k, v in peak.items() if k != "best")
    for name in _names(result):
        assert result["train"][name]["tokens_per_s"] > 0, name
    for name in ["keras_gpt"] + _names(result)[2:]:
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
             "torch": ["torch-gemm", "loss", "torch-decode", "torch-adam",
                       "torch-direct", "torch-products"]}


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


@pytest.mark.parametrize("gemm", ["torch", "onednn"])
def test_torch_step_profile_smoke(gemm, capsys, monkeypatch):
    """tools/torch_step_profile.py splits a plain-path step into products
    (either product `pytorch.cpu_gemm` may pick), attention and the rest
    (PyTorch pass, in this process); the products' FLOPs are the
    projections' and W_U's."""
    if keras.backend.backend() != "torch":
        pytest.skip("profiles PyTorch: the PyTorch pass only")
    from keras_gpt.backend import pytorch

    if gemm == "onednn" and not pytorch.onednn_linear_available():
        pytest.skip("this PyTorch build has no working oneDNN linear op")
    monkeypatch.setattr(pytorch, "_CPU_GEMM", gemm)
    tool = load_tool("torch_step_profile")
    m = dict(n_layers=2, d_model=8, vocab_size=10)
    # 2 layers x (qkv 3 + out 1 + MLP 8) d^2 + d * vocab, x 6 per token.
    assert tool.projection_flops(m, 5) == 6 * 5 * (2 * 12 * 64 + 80)
    tool.main(["--smoke", "--top", "3"])
    out = capsys.readouterr().out
    parts = {name: float(ms) for ms, name in re.findall(
        r"^\s+([\d.]+) ms  (matrix products|attention|other ops)", out, re.M)}
    assert set(parts) == {"matrix products", "attention", "other ops"}, out
    assert parts["matrix products"] > 0 and parts["attention"] > 0
    largest = out.split("the largest:\n")[1].strip().splitlines()
    assert len(largest) == 3, out


def test_jax_memory_smoke():
    """tools/jax_memory.py times fresh processes with and without
    `keep_step_memory` and prints both rows and the ratio."""
    if keras.backend.backend() != "jax":
        pytest.skip("starts its own JAX processes: JAX pass only")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "jax_memory.py"),
         "--smoke"], capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = re.findall(r"^(kept|default)\s+([\d.]+) ms/step\s+(\d+) page "
                      r"faults/step\s+([\d.]+) ms system", result.stdout,
                      re.M)
    assert [row[0] for row in rows] == ["kept", "default"], result.stdout
    assert all(float(ms) > 0 for _, ms, _, _ in rows)
    assert re.search(r"^kept / default: [\d.]+x faster$", result.stdout,
                     re.M), result.stdout


def test_bench_finetune_trains_its_base_then_compares(tmp_path):
    """tools/bench_finetune.py trains a base with --base-steps/--base-dropout,
    fine-tunes it fully and with LoRA on the same data, and reports the
    drops measured from the runs' own metrics (PyTorch pass only: the tool
    runs in its own process, and its figures are per process)."""
    if keras.backend.backend() != "torch":
        pytest.skip("runs tools/bench_finetune.py once, in the PyTorch pass")
    keep, out = tmp_path / "runs", tmp_path / "result.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "bench_finetune.py"),
         "--base-steps", "4", "--base-dropout", "0.2", "--steps", "4",
         "--eval-every", "2", "--rounds", "1", "--keep", str(keep),
         "--json", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "torch"})
    assert result.returncode == 0, result.stderr[-2000:]
    base = json.loads((keep / "base" / "run.json").read_text())
    assert (base["steps"], base["dropout"]) == (4, 0.2)
    report = json.loads(out.read_text())
    metrics = {name: [json.loads(line) for line in
                      (keep / name / "metrics.jsonl").read_text().split("\n")
                      if line] for name in ("full", "lora")}
    start = metrics["full"][0]["val_loss"]
    assert metrics["lora"][0]["val_loss"] == pytest.approx(start)
    assert report["val_loss_step_0"] == pytest.approx(start)
    for name in ("full", "lora"):
        assert metrics[name][-1]["step"] == 4
        assert report[f"drop_{name}"] == pytest.approx(
            start - metrics[name][-1]["val_loss"])
    assert report["drop_full"] > 0
    # Rank 8 on the fused qkv of 4 layers, d_model 128: 8 * (128 + 384) * 4.
    assert report["lora_trainable"] == 16384
    assert "LoRA / full = " in result.stdout


@pytest.mark.parametrize("flags", [["--base-steps", "0"],
                                   ["--base-dropout", "1"],
                                   ["--lora-rank", "0"],
                                   ["--steps", "5", "--eval-every", "2"],
                                   ["--base", "no/such/run"]])
def test_bench_finetune_bad_flags_are_one_line(flags):
    if keras.backend.backend() != "torch":
        pytest.skip("argument checks of a tool: the PyTorch pass only")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "bench_finetune.py"),
         *flags], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert f"{flags[0]} {flags[1]}" in last, last
    assert "Traceback" not in result.stderr


def test_bench_finetune_keeps_runs_only_in_a_new_folder(tmp_path):
    if keras.backend.backend() != "torch":
        pytest.skip("argument checks of a tool: the PyTorch pass only")
    (tmp_path / "old.txt").write_text("x")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "bench_finetune.py"),
         "--keep", str(tmp_path)], capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "already holds files: give a new or empty folder.")
    assert [f.name for f in tmp_path.iterdir()] == ["old.txt"]
