import importlib.util
import os

import pytest

# A smoke test of examples/preference_tuning.py with a few steps: it keeps
# running as the pieces it shows change (what they compute is tested on
# every backend in test_dpo.py and tests/training/test_sft.py).
pytestmark = pytest.mark.backend_independent


def test_preference_tuning_example_runs(tmp_path, capsys):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                        "preference_tuning.py")
    spec = importlib.util.spec_from_file_location("preference_tuning", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "out"
    example.main(["--out", str(out), "--sft-steps", "2", "--dpo-steps", "2",
                  "--lora-rank", "2"])
    printed = capsys.readouterr().out
    assert "Warm answers to the 20 held-out names:" in printed
    assert "reward accuracy" in printed
    for run in ("sft", "dpo"):
        assert (out / run / "model.keras").is_file()
    assert (out / "dpo" / "lora.safetensors").is_file()
    with pytest.raises(SystemExit, match="already holds files"):
        example.main(["--out", str(out)])
