"""`keras-gpt quantize` and `keras_gpt.finetune.quantize_run`; the export
of a LoRA run (merged) and of an int8 run, loaded and run where keras,
keras_gpt, jax and torch cannot be imported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from tests.conftest import KERAS_FREE

import keras_gpt
from keras_gpt.commands.main import main

TEXT = ("The quick brown fox jumps over the lazy dog.\n"
        "def add(a, b):\n    return a + b\n") * 40
ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["The quick", "def"]

LOAD = KERAS_FREE + """
import json
import tensorflow as tf
out = {}
for path in sys.argv[2:]:
    served = tf.saved_model.load(path)
    ids = served.signatures["generate"](
        prompts=tf.constant(json.loads(sys.argv[1])),
        max_new_tokens=tf.constant(6), temperature=tf.constant(0.0),
        top_k=tf.constant(0), top_p=tf.constant(1.0),
        seed=tf.constant(0, tf.int64))
    out[path] = {"ids": ids["token_ids"].numpy().tolist(),
                 "dtypes": sorted({v.dtype.name for v in served.variables})}
out["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps(out))
"""


def _size(folder):
    return sum(p.stat().st_size for p in Path(folder).rglob("*")
               if p.is_file())


def _greedy(run_dir):
    model = keras.models.load_model(Path(run_dir) / "model.keras")
    if model.lora_rank is not None:
        model.merge_lora()
    tokenizer = keras_gpt.tokenizers.load_tokenizer(Path(run_dir)
                                                    / "tokenizer")
    rows = keras_gpt.generate(model, [tokenizer.encode(p) for p in PROMPTS],
                              max_new_tokens=6, temperature=0)
    return [row + [-1] * (6 - len(row)) for row in rows]


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="runs once, in the tensorflow pass, where the export runs in "
           "this process (every backend exports under TensorFlow)")
def test_lora_and_int8_runs_export_and_serve_without_keras(tmp_path, capsys):
    from keras_gpt import GPT, GPTConfig
    from keras_gpt.convert import write_run
    from keras_gpt.finetune import finetune
    from keras_gpt.tokenizers import CharTokenizer

    (tmp_path / "text.txt").write_text(TEXT)
    tokenizer = CharTokenizer.train([TEXT])
    # d_model 96: the projections hold most bytes, as in real models.
    write_run(GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layers=2,
                            n_heads=2, d_model=96, context_length=16)),
              tokenizer, tmp_path / "base")
    finetune(tmp_path / "base", tmp_path / "lora",
             data=[str(tmp_path / "text.txt")], lora_rank=4, lora_alpha=64,
             steps=2, eval_every=2, batch_size=4, eval_steps=1, samples=0,
             cache_dir=tmp_path / "cache", verbose=0)
    assert main(["quantize", str(tmp_path / "lora"), "--out",
                 str(tmp_path / "int8")]) == 0
    assert "Quantized" in capsys.readouterr().out
    stored = json.loads((tmp_path / "int8" / "run.json").read_text())
    assert stored["quantized"] == "int8" and stored["merged_lora"] is True
    for name in ("lora", "int8"):
        assert main(["export", str(tmp_path / name),
                     str(tmp_path / f"served-{name}")]) == 0
    served = {n: tmp_path / f"served-{n}" / "1" for n in ("lora", "int8")}
    ratio = (_size(served["lora"] / "variables")
             / _size(served["int8"] / "variables"))
    assert ratio >= 3.5, ratio
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", LOAD, json.dumps(PROMPTS),
         *map(str, served.values())], env=env, capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["modules"] == []
    assert "int8" in results[str(served["int8"])]["dtypes"]
    assert "int8" not in results[str(served["lora"])]["dtypes"]
    for name, path in served.items():
        assert results[str(path)]["ids"] == _greedy(tmp_path / name), name


@pytest.mark.backend_independent
def test_bad_quantize_input_is_one_line(tmp_path, capsys):
    from keras_gpt import GPT, GPTConfig
    from keras_gpt.convert import write_run
    from keras_gpt.tokenizers import ByteTokenizer

    model = GPT(GPTConfig(vocab_size=257, context_length=16, d_model=16,
                          n_layers=1, n_heads=2))
    write_run(model, ByteTokenizer(), tmp_path / "run")
    cases = [
        (["quantize", str(tmp_path / "nowhere"), "--out", str(tmp_path / "a")],
         "does not exist"),
        (["quantize", str(tmp_path / "run"), "--out", str(tmp_path / "a"),
          "--mode", "int4"], "--mode 'int4' is not supported: choose int8"),
        (["quantize", str(tmp_path / "run"), "--out", str(tmp_path / "run")],
         "already holds files"),
    ]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert not (tmp_path / "a").exists()
    assert main(["quantize", str(tmp_path / "run"), "--out",
                 str(tmp_path / "q")]) == 0
    assert main(["quantize", str(tmp_path / "q"), "--out",
                 str(tmp_path / "q2")]) == 2
    assert "is already quantized (int8)" in capsys.readouterr().err
    assert not (tmp_path / "q2").exists()
    assert main(["train", "--init-from", str(tmp_path / "q"), "--out",
                 str(tmp_path / "t"), "--cache-dir", str(tmp_path / "c")]) \
        == 2
    assert "is quantized (int8): its weights cannot be trained. Add " \
        "--lora-rank" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
