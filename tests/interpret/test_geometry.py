"""Embedding geometry on models whose W_E is set by hand, so the answers
are known. The arithmetic is NumPy on the weights: it cannot differ by
backend."""

import numpy as np
import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt import tokenizers as tk
from keras_gpt.interpret.geometry import (analogy, direction,
                                          embedding_matrix, nearest_tokens,
                                          project, token_id)

pytestmark = pytest.mark.backend_independent

WORDS = ["man", "woman", "king", "queen", "boy", "girl"]
# Every word follows a space ("x" starts each text), so GPT-2's tokens are
# " king" and never "king".
CORPUS = ["x " + " ".join(np.random.default_rng(i).permutation(WORDS * 20))
          for i in range(30)]
# The four tokens of the analogy in each kind: words after a space for the
# subword tokenizers (both keep the space in the word's token), single
# characters for char and byte.
QUAD = {"bpe": (" man", " king", " woman", " queen"),
        "gpt2": (" man", " king", " woman", " queen"),
        "char": ("m", "k", "w", "q"),
        "byte": ("m", "k", "w", "q")}


def _gpt2(directory):
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(CORPUS, vocab_size=300, show_progress=False,
                                special_tokens=[tk.EOT_TOKEN])
    trainer.save_model(str(directory))
    return tk.GPT2Tokenizer.from_files(directory / "vocab.json",
                                       directory / "merges.txt")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    return {"bpe": tk.BPETokenizer.train(CORPUS, 300),
            "byte": tk.ByteTokenizer(),
            "char": tk.CharTokenizer.train(CORPUS),
            "gpt2": _gpt2(tmp_path_factory.mktemp("gpt2"))}


def model_with_known_embeddings(tokenizer, quad, d_model=16):
    """W_E: noise (far from everything) except man = u, king = u + r,
    woman = u + f, queen = u + r + f (r: royal, f: female)."""
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=8,
                          d_model=d_model, n_layers=1, n_heads=2))
    rng = np.random.default_rng(0)
    table = rng.standard_normal((tokenizer.vocab_size, d_model)) * 3.0
    table[:, :3] = 0.0
    u, r, f = np.eye(d_model)[:3] * np.array([[1.0], [2.0], [1.5]])
    man, king, woman, queen = (token_id(tokenizer, t) for t in quad)
    table[man], table[king], table[woman], table[queen] = \
        u, u + r, u + f, u + r + f
    model.token_embedding.embeddings.assign(table.astype("float32"))
    return model, (man, king, woman, queen)


@pytest.mark.parametrize("kind", ["bpe", "byte", "char", "gpt2"])
def test_analogy_nearest_and_projection_on_known_embeddings(tokenizers, kind):
    tokenizer = tokenizers[kind]
    a, b, c, want = QUAD[kind]
    model, (man, king, woman, queen) = model_with_known_embeddings(
        tokenizer, QUAD[kind])
    # king - man + woman = queen exactly; the inputs are left out.
    best = analogy(model, tokenizer, a, b, c, k=3)
    assert best[0].id == queen and best[0].token == tokenizer.decode([queen])
    assert best[0].score == pytest.approx(1.0, abs=1e-6)
    assert {man, king, woman}.isdisjoint(s.id for s in best)
    assert best[1].score < 0.9
    # Ids work as well as text.
    assert analogy(model, tokenizer, man, king, woman, k=1)[0].id == queen
    # Nearest to queen's own vector (given as a vector): queen, then king
    # and woman, which share two of its three parts.
    table = embedding_matrix(model)
    near = nearest_tokens(model, table[queen], tokenizer, k=3)
    assert near[0].id == queen
    assert near[0].score == pytest.approx(1.0, abs=1e-6)
    assert {near[1].id, near[2].id} == {king, woman}
    expected = table[near[1].id] @ table[queen] / (
        np.linalg.norm(table[near[1].id]) * np.linalg.norm(table[queen]))
    assert near[1].score == pytest.approx(expected, rel=1e-5)
    # A token as the query leaves itself out.
    assert nearest_tokens(model, want, tokenizer, k=1)[0].id != queen
    # Projection on woman - man: female tokens lie |f| = 1.5 further.
    values = {s.id: s.score for s in project(
        model, tokenizer, (a, c), [a, b, c, want])}
    assert values[woman] - values[man] == pytest.approx(1.5, abs=1e-5)
    assert values[queen] - values[king] == pytest.approx(1.5, abs=1e-5)
    np.testing.assert_allclose(direction(model, tokenizer, a, c),
                               table[woman] - table[man])
    # Whole vocabulary: k from each end, highest first.
    ends = project(model, tokenizer, (a, c), k=2)
    assert len(ends) == 4
    assert [s.score for s in ends] == sorted((s.score for s in ends),
                                             reverse=True)
    everything = table @ (table[woman] - table[man]) / 1.5
    assert ends[0].score == pytest.approx(everything.max(), rel=1e-5)
    assert ends[-1].score == pytest.approx(everything.min(), rel=1e-5)


def test_unembed_space_reads_w_u_when_untied(tokenizers):
    tokenizer = tokenizers["char"]
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=8,
                          d_model=8, n_layers=1, n_heads=2,
                          tie_embeddings=False))
    kernel = np.asarray(model.unembedding.kernel)
    np.testing.assert_allclose(embedding_matrix(model, "unembed"), kernel.T)
    np.testing.assert_allclose(
        embedding_matrix(model), np.asarray(model.token_embedding.embeddings))


def test_tokens_the_tokenizer_lacks_are_errors_naming_them(tokenizers):
    model, _ = model_with_known_embeddings(tokenizers["bpe"], QUAD["bpe"])
    bpe, char = tokenizers["bpe"], tokenizers["char"]
    with pytest.raises(ValueError, match=r"'riverbank' is \d+ tokens in this "
                       r"'bpe' tokenizer \(ids .*, pieces .*\), not one\."):
        analogy(model, bpe, " man", " king", "riverbank")
    for kind in ("bpe", "gpt2"):
        with pytest.raises(ValueError, match=rf"'king' is 2 tokens in this "
                           rf"'{kind}' tokenizer .* \(try ' king'\)"):
            analogy(model, tokenizers[kind], " man", "king", " woman")
    with pytest.raises(ValueError, match="'' is 0 tokens"):
        nearest_tokens(model, "", bpe)
    with pytest.raises(ValueError, match=r"Token id 300 is out of range: ids "
                       r"run from 0 to 299 \(vocab_size=300\)"):
        analogy(model, bpe, 300, " king", " woman")
    with pytest.raises(ValueError, match="Token id -1 is out of range"):
        project(model, bpe, (" man", " woman"), [-1])
    char_model, _ = model_with_known_embeddings(char, QUAD["char"])
    with pytest.raises(ValueError, match="'char' tokenizer does not have "
                       "token 'Z'"):
        analogy(char_model, char, "m", "k", "Z")
    with pytest.raises(ValueError, match=r"shape \(16,\) \(d_model\); got "
                       r"\(3,\)"):
        nearest_tokens(model, np.ones(3), bpe)
    with pytest.raises(ValueError, match="length 0"):
        project(model, bpe, (" man", " man"))
    with pytest.raises(ValueError, match="k must be an integer >= 1; got 0"):
        nearest_tokens(model, " man", bpe, k=0)
    with pytest.raises(ValueError, match="space must be 'embed' or "
                       "'unembed'; got 'middle'"):
        embedding_matrix(model, "middle")
    # A model whose vocabulary is smaller than the tokenizer's: ids past
    # the model's table are out of range.
    small = GPT(GPTConfig(vocab_size=100, context_length=8, d_model=16,
                          n_layers=1, n_heads=2))
    with pytest.raises(ValueError, match=r"vocab_size=100\)"):
        nearest_tokens(small, 250, bpe)
