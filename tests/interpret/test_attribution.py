import numpy as np
import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt.interpret import direct_logit_attribution
from tests.conftest import to_numpy


def test_attributions_add_up_to_the_logit_difference():
    model = GPT(GPTConfig(vocab_size=50, context_length=16, d_model=32,
                          n_layers=2, n_heads=4))
    x = np.random.default_rng(0).integers(0, 50, 9)
    logits = to_numpy(model(x[None]))[0]
    for answer, wrong, position in ((7, 3, -1), (11, None, 4)):
        a = direct_logit_attribution(model, x, answer, wrong,
                                     position=position)
        assert a.heads.shape == (2, 4) and a.mlp.shape == (2,)
        expected = logits[position, answer] - (
            0.0 if wrong is None else logits[position, wrong])
        np.testing.assert_allclose(a.total, expected, atol=1e-5)
        np.testing.assert_allclose(
            a.heads.sum() + a.mlp.sum() + a.embed + a.rest, a.total,
            atol=1e-4)
    layer, head, effect = a.top_heads(1)[0]
    assert abs(effect) == np.abs(a.heads).max() and effect == a.heads[
        layer, head]


def test_a_head_scaled_up_has_its_attribution_scaled_the_same_way():
    # The head's direct effect is linear in its output: doubling its W_O
    # rows doubles its attribution (the LayerNorm scale is re-measured).
    model = GPT(GPTConfig(vocab_size=50, context_length=16, d_model=32,
                          n_layers=1, n_heads=4))
    x = np.random.default_rng(1).integers(0, 50, 9)
    kernel = model.blocks[0].attention.out.kernel
    before = direct_logit_attribution(model, x, 5, 6)
    edited = to_numpy(kernel).copy()
    edited[8:16] *= 2.0
    kernel.assign(edited)
    after = direct_logit_attribution(model, x, 5, 6)
    # Every other head's effect changes by the LayerNorm scale's ratio only.
    ratio = (after.heads[0, 1] / before.heads[0, 1]) / 2.0
    np.testing.assert_allclose(after.heads[0, [0, 2, 3]],
                               before.heads[0, [0, 2, 3]] * ratio, rtol=1e-4)


def test_bad_answers_positions_and_batches_are_refused():
    model = GPT(GPTConfig(vocab_size=50, context_length=16, d_model=32,
                          n_layers=1, n_heads=4))
    x = np.arange(6)
    with pytest.raises(ValueError, match=r"answer=50 is out of range.*"
                       r"\[0, 50\)"):
        direct_logit_attribution(model, x, 50)
    with pytest.raises(ValueError, match=r"wrong=-1 is out of range"):
        direct_logit_attribution(model, x, 1, wrong=-1)
    with pytest.raises(ValueError, match=r"position=6 is out of range for a "
                       r"prompt of 6 tokens: \[-6, 5\]"):
        direct_logit_attribution(model, x, 1, position=6)
    with pytest.raises(ValueError, match=r"one prompt.*\(2, 6\)"):
        direct_logit_attribution(model, np.stack([x, x]), 1)
