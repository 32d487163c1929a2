import numpy as np
import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt.interpret import (detect_heads, detection_pattern,
                                 repeated_random_tokens)
from keras_gpt.interpret.heads import head_scores
from keras_gpt.training import compile_for_pretraining


@pytest.mark.backend_independent
def test_detection_patterns_follow_transformer_lens_definitions():
    tokens = np.array([4, 7, 9, 4, 7, 9])
    previous = detection_pattern(tokens, "previous_token")
    assert previous[3, 2] == 1 and previous.sum() == 5
    duplicate = detection_pattern(tokens, "duplicate_token")
    assert np.argwhere(duplicate).tolist() == [[3, 0], [4, 1], [5, 2]]
    induction = detection_pattern(tokens, "induction")
    assert np.argwhere(induction).tolist() == [[3, 1], [4, 2], [5, 3]]
    rows = repeated_random_tokens(50, 8, n_sequences=3, seed=1)
    assert rows.shape == (3, 16)
    np.testing.assert_array_equal(rows[:, :8], rows[:, 8:])
    assert all(len(set(row[:8])) == 8 for row in rows)


@pytest.mark.backend_independent
def test_scores_are_the_share_of_attention_on_the_pattern():
    tokens = repeated_random_tokens(50, 4, n_sequences=2)
    length = tokens.shape[1]
    perfect = np.stack([detection_pattern(row, "induction") for row in tokens])
    perfect[:, :4, 0] = 1.0  # first-half rows: no target, attend anywhere
    uniform = np.tril(np.ones((length, length)))
    uniform /= uniform.sum(-1, keepdims=True)
    patterns = np.stack([perfect, np.broadcast_to(uniform, perfect.shape)],
                        axis=1)[None]  # (1 layer, batch, 2 heads, q, k)
    scores = head_scores(patterns, tokens, "induction")
    np.testing.assert_allclose(scores[0, 0], 1.0)
    expected = np.mean([1 / (q + 1) for q in range(4, 8)])
    np.testing.assert_allclose(scores[0, 1], expected)
    with pytest.raises(ValueError, match="no token repeats"):
        head_scores(patterns[..., :4, :4], tokens[:, :4], "duplicate_token")


def test_training_on_repeated_halves_grows_an_induction_head():
    # Each sequence is 8 random ids repeated: the second half is predictable
    # only by looking back one period and one step on, which some head
    # learns (here it is enough for a layer-0 head to do it by position).
    config = GPTConfig(vocab_size=64, context_length=16, d_model=32,
                       n_layers=2, n_heads=2, d_mlp=64)
    model = GPT(config)
    untrained = detect_heads(model, "induction")
    assert untrained.shape == (2, 2) and untrained.max() <= 0.2
    # 60 steps of 128 (few, large batches: PyTorch's cost is per step).
    steps, batch = 60, 128
    sequences = repeated_random_tokens(64, 8, steps * batch, seed=3)
    compile_for_pretraining(model, total_steps=steps, learning_rate=3e-2,
                            warmup_steps=6)
    model.fit(sequences[:, :-1], sequences[:, 1:], batch_size=batch,
              verbose=0)
    trained = detect_heads(model, "induction", seed=4)
    assert trained.max() >= 0.8, trained
    assert ((trained >= 0) & (trained <= 1)).all()


def test_bad_kinds_and_lengths_are_refused():
    model = GPT(GPTConfig(vocab_size=64, context_length=16, d_model=32,
                          n_layers=1, n_heads=2))
    with pytest.raises(ValueError, match=r"Unknown head kind 'induction_head'"
                       r".*'previous_token'"):
        detect_heads(model, "induction_head")
    with pytest.raises(ValueError, match=r"half=9 is out of range: .* "
                       r"\(16\), so 2 <= half <= 8"):
        detect_heads(model, "induction", half=9)
    scores = detect_heads(model, "previous_token",
                          token_ids=np.arange(10)[None])
    assert scores.shape == (1, 2)
