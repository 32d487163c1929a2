"""`keras-gpt train --init-from SOURCE` and `keras_gpt.finetune.finetune`:
from a run directory and a Hugging Face folder, full and LoRA, resume,
generate, and the bad input a user can give."""

import json
import shutil
import warnings

import keras
import numpy as np
import pytest

from keras_gpt.commands.main import main
from keras_gpt.finetune import finetune, load_source
from keras_gpt.training import callbacks as run_callbacks
from keras_gpt.training.source import build_model
from tests.conftest import to_numpy

ENGLISH = ("The quick brown fox jumps over the lazy dog.\n"
           "Pack my box with five dozen liquor jugs!\n") * 30
CODE = ("def add(a, b):\n    return a + b  # (sum)\n"
        "for i in range(10):\n    print(i * 2)\n") * 30
BASE = ["--tokenizer", "char", "--n-layers", "1", "--n-heads", "2",
        "--d-model", "16", "--context-length", "16", "--batch-size", "4",
        "--eval-steps", "2", "--samples", "0"]
TRAINING = ["--batch-size", "4", "--eval-steps", "2", "--samples", "0"]
IDS = np.array([[1, 2, 3, 4, 5, 6]], "int32")


def train(cache, *args):
    return main(["train", "--cache-dir", str(cache), *args])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny run directory (untrained: what matters here is where the new
    run starts) whose char tokenizer knows English and code; a corpus of
    code alone."""
    from keras_gpt import GPT, GPTConfig
    from keras_gpt.convert import write_run
    from keras_gpt.tokenizers import CharTokenizer

    root = tmp_path_factory.mktemp("finetune")
    (root / "code.py").write_text(CODE)
    tokenizer = CharTokenizer.train([ENGLISH, CODE])
    write_run(GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layers=1,
                            n_heads=2, d_model=16, context_length=16)),
              tokenizer, root / "base")
    return root


def _path(variable):
    return variable.path.split("/", 1)[1]  # without the model's name


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]


def test_lora_from_a_run_starts_at_its_logits_lowers_the_loss_and_resumes(
        base, tmp_path, capsys, monkeypatch):
    source = load_source(base / "base")
    expected = to_numpy(source.model(IDS))
    model = build_model({"lora_rank": 2}, source.model.config, source)
    np.testing.assert_array_equal(to_numpy(model(IDS)), expected)  # step 0
    args = ["--init-from", str(base / "base"), "--data",
            str(base / "code.py"), *TRAINING, "--steps", "6",
            "--eval-every", "3", "--lora-rank", "2", "--lora-targets",
            "qkv,down", "--learning-rate", "3e-2"]
    save = run_callbacks.RunLogger.on_epoch_end

    def interrupted(self, epoch, logs=None):
        save(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(run_callbacks.RunLogger, "on_epoch_end", interrupted)
    cut = tmp_path / "cut"
    assert train(base / "cache", *args, "--out", str(cut)) == 130
    out = capsys.readouterr().out
    # 1 layer: qkv 2 * (16 + 48), down 2 * (64 + 16).
    assert "trainable parameters 288 of" in out and "LoRA rank 2" in out
    assert (cut / "lora.safetensors").is_file()
    monkeypatch.setattr(run_callbacks.RunLogger, "on_epoch_end", save)
    assert train(base / "cache", "--out", str(cut), "--resume") == 0
    records = _metrics(cut)
    assert [r["step"] for r in records] == [0, 3, 6]
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    stored = json.loads((cut / "run.json").read_text())
    assert stored["init_from"]["kind"] == "run"
    assert stored["init_from"]["path"] == str((base / "base").resolve())
    assert stored["n_layers"] == 1 and stored["tokenizer"] == "char"
    assert (cut / "tokenizer" / "tokenizer.json").read_text() == (
        base / "base" / "tokenizer" / "tokenizer.json").read_text()
    model = keras.models.load_model(cut / "model.keras")
    assert (model.lora_rank, model.lora_targets) == (2, ("qkv", "down"))
    frozen = {_path(v): to_numpy(v) for v in source.model.weights}
    for v in model.weights:
        if "lora" not in v.path:  # bit-identical base after training
            np.testing.assert_array_equal(to_numpy(v), frozen[_path(v)])
    adapter = load_source(base / "base").model
    adapter.load_lora_weights(cut / "lora.safetensors")
    np.testing.assert_array_equal(to_numpy(adapter(IDS)),
                                  to_numpy(model(IDS)))
    assert main(["generate", str(cut), "--prompt", "def", "--temperature",
                 "0", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path_factory.mktemp("hf")
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator([ENGLISH, CODE], vocab_size=300, min_frequency=1,
                            special_tokens=["<|endoftext|>"],
                            show_progress=False)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    hf.eval()
    hf.save_pretrained(folder / "model_only")
    hf.save_pretrained(folder / "full")
    bpe.save_model(str(folder / "full"))
    with torch.no_grad():
        logits = hf(torch.as_tensor(IDS.astype("int64"))).logits.numpy()
    return folder, logits


def test_init_from_a_hugging_face_folder(base, hf_folder, tmp_path):
    folder, hf_logits = hf_folder
    source = load_source(folder / "full")
    model = build_model({}, source.model.config, source)
    np.testing.assert_allclose(to_numpy(model(IDS)), hf_logits, atol=1e-4)
    out = tmp_path / "from_hf"
    final = finetune(folder / "full", out, data=[str(base / "code.py")],
                     steps=4, eval_every=4, batch_size=4, eval_steps=2,
                     samples=0, learning_rate=1e-2,
                     cache_dir=base / "cache", verbose=0)
    assert final["val_loss"] < _metrics(out)[0]["val_loss"]
    stored = json.loads((out / "run.json").read_text())
    assert (stored["init_from"]["kind"], stored["tokenizer"]) == (
        "huggingface", "gpt2")


@pytest.mark.backend_independent
def test_a_hugging_face_folder_without_tokenizer_files(hf_folder, base,
                                                       tmp_path, capsys):
    from keras_gpt.convert import from_huggingface

    folder, _ = hf_folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, tokenizer = from_huggingface(folder / "model_only")
    assert tokenizer is None and model.config.vocab_size == 300
    assert "missing vocab.json, merges.txt" in str(caught[0].message)
    out = tmp_path / "run"
    assert train(base / "cache", "--init-from", str(folder / "model_only"),
                 "--data", str(base / "code.py"), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "no tokenizer (missing vocab.json, merges.txt" in err
    assert not out.exists()
    assert main(["convert", "--from", "hf", str(folder / "model_only"),
                 "--out", str(out)]) == 2
    assert "missing vocab.json, merges.txt" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.backend_independent
@pytest.mark.parametrize("args,message", [
    (["--init-from", "{tmp}/nowhere"], "{tmp}/nowhere: no such file or "
     "folder"),
    (["--init-from", "{tmp}/junk"], "is not a model to start from"),
    (["--init-from", "{base}", "--n-layers", "2"],
     "--n-layers cannot be used with --init-from"),
    (["--init-from", "{base}", "--tokenizer", "byte"],
     "--tokenizer cannot be used with --init-from"),
    (["--init-from", "{base}", "--data", "{tmp}/euro.txt"],
     "Character '€' (U+20AC)"),
    (["--init-from", "{base}", "--lora-rank", "0"],
     "--lora-rank: 0 is out of range: it must be >= 1"),
    (["--init-from", "{base}", "--lora-rank", "17"],
     "LoRA rank 17 is out of range"),
    (["--init-from", "{base}", "--lora-rank", "2", "--lora-targets",
      "qkv,attn"], "Unknown LoRA targets ['attn']"),
    (["--init-from", "{base}", "--lora-alpha", "4"],
     "--lora-alpha and --lora-targets need --lora-rank"),
    (["--lora-rank", "4", *BASE], "--lora-rank needs --init-from"),
    (["--init-from", "{base}", "--resume"], "--init-from starts a new run"),
    (["--init-from", "{tmp}/damaged"], "{tmp}/damaged/model.keras is "
     "damaged"),
])
def test_bad_init_from_input_is_one_line_and_no_run_dir(
        base, tmp_path, capsys, args, message):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a model")
    (tmp_path / "euro.txt").write_text(CODE + "price: €\n")
    damaged = shutil.copytree(base / "base", tmp_path / "damaged")
    checkpoint = bytearray((damaged / "model.keras").read_bytes())
    checkpoint[len(checkpoint) // 2:len(checkpoint) // 2 + 64] = b"x" * 64
    (damaged / "model.keras").write_bytes(bytes(checkpoint))
    fill = dict(tmp=tmp_path, base=base / "base")
    args = [a.format(**fill) for a in args]
    out = tmp_path / "run"
    data = [] if "--data" in args else ["--data", str(base / "code.py")]
    assert train(base / "cache", *data, *args, "--steps", "2",
                 "--eval-every", "2", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-gpt train: error:") and "Traceback" not in err
    assert message.format(**fill) in err
    assert not out.exists() or not any(out.iterdir())
