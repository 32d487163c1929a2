import subprocess
import sys

import pytest

from keras_gpt import GPT, GPTConfig, parameter_table

pytestmark = pytest.mark.backend_independent


def test_gpt3_175b_reproduces_the_seed_table():
    table = parameter_table("gpt3-175b")
    seed = {
        "Embedding (W_E)": 617_558_016,
        "Query": 14_495_514_624,
        "Key": 14_495_514_624,
        "Value": 14_495_514_624,
        "Output": 14_495_514_624,
        "Up-projection": 57_982_058_496,
        "Down-projection": 57_982_058_496,
        "Unembedding (W_U)": 617_558_016,
    }
    assert [r.component for r in table.rows if r.in_seed] == list(seed)
    for component, count in seed.items():
        assert table.row(component).count == count
    assert table.seed_total == 175_181_291_520
    text = str(table)
    for figure in ("617,558,016", "14,495,514,624", "57,982,058,496",
                   "175,181,291,520"):
        assert figure in text
    # What the seed leaves out, by hand: positions 2048*12288; biases
    # 96*(3*12288+12288) + 96*(49152+12288); LayerNorms 96*4*12288 + 2*12288;
    # W_U shared with W_E.
    extra = (2048 * 12288 + 96 * 4 * 12288 + 96 * 61440 + 96 * 4 * 12288
             + 2 * 12288 - 617_558_016)
    assert table.total == 175_181_291_520 + extra


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(tie_embeddings=False),
    dict(use_bias=False),
    dict(use_bias=False, tie_embeddings=False, positions="rotary"),
    dict(positions="sinusoidal", d_mlp=48, activation="relu"),
    dict(n_heads=3, d_head=10, n_layers=3),
])
def test_full_total_equals_count_params(overrides):
    config = GPTConfig.from_preset("tiny", vocab_size=101, **overrides)
    assert parameter_table(config).total == GPT(config).count_params()


def test_params_command_prints_the_table():
    result = subprocess.run(
        [sys.executable, "-m", "keras_gpt.commands", "params", "gpt3-175b"],
        capture_output=True, text=True, check=True)
    assert "175,181,291,520" in result.stdout
    assert "Position embedding" in result.stdout


def test_params_command_rejects_unknown_preset():
    result = subprocess.run(
        [sys.executable, "-m", "keras_gpt.commands", "params", "gpt9"],
        capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice: 'gpt9'" in result.stderr
