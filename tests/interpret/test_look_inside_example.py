import importlib.util
import os
import sys

import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt.tokenizers.simple import ByteTokenizer

# A smoke test of examples/look_inside.py: it keeps running as the tools it
# shows change (their numbers are tested on every backend elsewhere).
pytestmark = pytest.mark.backend_independent


def test_look_inside_runs_every_section_on_a_run_directory(
        tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    GPT(GPTConfig(vocab_size=257, context_length=16, d_model=16, n_layers=1,
                  n_heads=2)).save(run / "model.keras")
    ByteTokenizer().save(run / "tokenizer")
    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                        "look_inside.py")
    spec = importlib.util.spec_from_file_location("look_inside", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setattr(sys, "argv", ["look_inside.py", str(run), "--prompt",
                                      "ab ab a"])
    example.main()
    out = capsys.readouterr().out
    for title in ("§5 Word embeddings", "§12 Masking", "§14 The MLP",
                  "Logit lens", "Heads"):
        assert f"=== {title}" in out
    assert "largest weight on a future token (masked to -inf before the " \
           "softmax): 0.0e+00" in out
    assert sorted(p.name for p in (run / "look_inside").iterdir()) == [
        "attention.html", "attention.png", "logit_lens.png", "patching.png"]
