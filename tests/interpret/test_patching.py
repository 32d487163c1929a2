import numpy as np
import pytest
from keras import ops

from keras_gpt import GPT, GPTConfig
from keras_gpt.interpret import activation_patching
from tests.conftest import to_numpy


def setup():
    model = GPT(GPTConfig(vocab_size=50, context_length=16, d_model=32,
                          n_layers=2, n_heads=4))
    clean = np.array([[3, 14, 15, 9, 26, 5]])
    corrupted = clean.copy()
    corrupted[0, 2] = 40
    target = to_numpy(model(clean))[0, -1]

    def metric(logits):  # 0 when the last position's output is clean's
        return float(np.abs(logits[0, -1] - target).sum())

    return model, clean, corrupted, metric


def test_patching_the_residual_stream_finds_the_changed_token():
    model, clean, corrupted, metric = setup()
    effects = activation_patching(model, clean, corrupted, metric)
    assert effects.shape == (2, 6)
    broken = metric(to_numpy(model(corrupted)))
    assert broken > 1e-3
    # Block 0's input at the changed position is the clean prompt's whole
    # difference: patched, the output is clean's; elsewhere nothing changes.
    assert effects[0, 2] < 1e-3 * broken
    np.testing.assert_allclose(np.delete(effects[0], 2), broken, rtol=1e-4)
    # Positions before the change never differed.
    np.testing.assert_allclose(effects[:, :2], broken, rtol=1e-4)


# attn_out takes mlp_out's path (a position of a (batch, pos, d) value).
@pytest.mark.parametrize("over", ["mlp_out", "head"])
def test_each_entry_is_one_patched_run(over):
    model, clean, corrupted, metric = setup()
    effects = activation_patching(model, clean, corrupted, metric, over=over)
    assert effects.shape == ((2, 4) if over == "head" else (2, 6))
    point = "attn.z" if over == "head" else over
    name = f"blocks.1.{point}"
    _, cache = model.run_with_cache(clean, names=[name])
    clean_value = to_numpy(cache[name])
    column = 3

    mask = np.zeros(clean_value.shape, bool)
    if over == "head":
        mask[:, :, column] = True
    else:
        mask[:, column] = True

    def by_hand(value):  # runs compiled: keras.ops on the traced value
        return ops.where(mask, clean_value, value)

    expected = metric(to_numpy(model.run_with_hooks(corrupted,
                                                    {name: by_hand})))
    np.testing.assert_allclose(effects[1, column], expected, rtol=1e-4)


def test_bad_patching_arguments_are_refused():
    model, clean, corrupted, metric = setup()
    with pytest.raises(ValueError, match=r"over='heads' is not one of"):
        activation_patching(model, clean, corrupted, metric, over="heads")
    with pytest.raises(ValueError, match=r"one shape.*\(1, 6\) and \(1, 5\)"):
        activation_patching(model, clean, corrupted[:, :5], metric)
