"""`keras-gpt generate`: the default fits the run, flags are checked before
the model loads, and --top-k 0 is off as everywhere else (issue 17: items
1, 9 and 10)."""

import zipfile

import numpy as np
import pytest

import keras_gpt
from keras_gpt import GPT, GPTConfig
from keras_gpt.checkpoints import load_model
from keras_gpt.commands.main import main
from keras_gpt.tokenizers import ByteTokenizer

CONTEXT = 16


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    GPT(GPTConfig(vocab_size=257, context_length=CONTEXT, d_model=16,
                  n_layers=1, n_heads=2)).save(folder / "model.keras")
    ByteTokenizer().save(folder / "tokenizer")
    return folder


def test_the_default_fits_the_context_and_top_k_0_is_off(run_dir, capsys):
    # "The return" is 10 byte tokens: the default (200) would not fit in 16.
    assert main(["generate", str(run_dir), "--prompt", "The return",
                 "--seed", "3", "--top-k", "0"]) == 0
    assert capsys.readouterr().err == ""
    model = load_model(run_dir / "model.keras")
    ids = [[5, 6, 7]]
    off = keras_gpt.generate(model, ids, max_new_tokens=5, temperature=1.0,
                             seed=2)
    assert keras_gpt.generate(model, ids, max_new_tokens=5, temperature=1.0,
                              top_k=0, seed=2) == off
    np.testing.assert_array_less(np.asarray(off), 257)


@pytest.mark.backend_independent
def test_a_prompt_that_fills_the_context_names_the_flags(run_dir, capsys):
    assert main(["generate", str(run_dir), "--prompt", "x" * CONTEXT]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"keras-gpt generate: error: The prompt has {CONTEXT} tokens, which "
        f"fill the model's context of {CONTEXT}: shorten it, or pass "
        "--truncate-prompt (keep its end) or --sliding-window (approximate)."]
    assert main(["generate", str(run_dir), "--prompt", "hi",
                 "--max-new-tokens", str(CONTEXT)]) == 2
    err = capsys.readouterr().err
    assert "--max-new-tokens 16 leaves no room" in err
    assert "--sliding-window" in err and "=True" not in err
    assert main(["generate", str(run_dir), "--prompt", "a long prompt",
                 "--max-new-tokens", "8"]) == 2
    err = capsys.readouterr().err
    assert "max_new_tokens" not in err and "truncate_prompt" not in err
    assert "--max-new-tokens 8" in err and "--truncate-prompt" in err


@pytest.mark.backend_independent
def test_flags_are_checked_before_the_model_loads(run_dir, tmp_path, capsys):
    """A model.keras whose config is whole but whose weights are not: a bad
    flag is reported, not the weights (which loading would hit)."""
    broken = tmp_path / "run"
    broken.mkdir()
    with zipfile.ZipFile(run_dir / "model.keras") as source, \
            zipfile.ZipFile(broken / "model.keras", "w") as target:
        for name in ("metadata.json", "config.json"):
            target.writestr(name, source.read(name))
        target.writestr("model.weights.h5", b"not weights")
    ByteTokenizer().save(broken / "tokenizer")
    assert main(["generate", str(broken), "--prompt", "a", "--top-k",
                 "300"]) == 2
    err = capsys.readouterr().err
    assert ("--top-k 300 is out of range: the model has 257 tokens, so k "
            "must be in [0, 257] (0 is off).") in err
    assert main(["generate", str(broken), "--prompt", "a",
                 "--max-new-tokens", "99"]) == 2
    assert "leaves no room" in capsys.readouterr().err
    assert main(["generate", str(broken), "--prompt", "a"]) == 2
    err = capsys.readouterr().err
    assert f"{broken / 'model.keras'} cannot be loaded" in err
