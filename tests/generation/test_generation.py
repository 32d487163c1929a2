import argparse
import io
import math

import keras
import numpy as np
import pytest
from tests.conftest import to_numpy

import keras_gpt
from keras_gpt import GPT, GPTConfig
from keras_gpt.generation import decoding, generator, samplers
from keras_gpt.commands import generate as generate_command

VOCAB = 37


def tiny(**overrides):
    base = dict(vocab_size=VOCAB, context_length=32, d_model=16, n_layers=2,
                n_heads=2)
    return GPTConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(7)
    return GPT(tiny())


@pytest.fixture(scope="module")
def peaked():
    """A model whose next-token distribution after [5, 9, 2] (the prompt of
    the test that uses it) is far from uniform: its logits' std is 1.2."""
    keras.utils.set_random_seed(11)
    m = GPT(tiny(n_layers=1, tie_embeddings=False))
    logits = to_numpy(m(np.array([[5, 9, 2]])))[0, -1]
    m.unembedding.kernel.assign(m.unembedding.kernel * (1.2 / logits.std()))
    return m


class ByteTokenizer:
    """ids 0..255 are bytes, 256 is end-of-text (UTF-8, like the real one)."""

    vocab_size = 257
    eot_id = 256

    def __init__(self, encoding="utf-8"):
        self.encoding = encoding

    def encode(self, text):
        return list(text.encode(self.encoding))

    def decode(self, ids):
        parts, data = [], []
        for i in list(ids) + [256]:
            if i == 256:
                parts.append(bytes(data).decode(self.encoding,
                                                errors="replace"))
                data = []
            else:
                data.append(i)
        return "<|endoftext|>".join(parts)


@pytest.fixture(scope="module")
def byte_model():
    keras.utils.set_random_seed(3)
    return GPT(tiny(vocab_size=257))


RAGGED = [[1, 2, 3, 4, 5], [7], [3, 3, 3, 3, 3, 3, 3, 3, 9]]


def greedy_reference(model, row, n):
    """The plain loop: full forward pass, argmax, append."""
    ids = list(row)
    for _ in range(n):
        logits = to_numpy(model(np.array([ids], "int32")))
        ids.append(int(np.argmax(logits[0, -1])))
    return ids[len(row):]


# Decoding is exact ------------------------------------------------------------

@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_cached_greedy_equals_uncached_greedy(positions):
    m = GPT(tiny(positions=positions))
    cached = keras_gpt.generate(m, RAGGED, max_new_tokens=7, temperature=0,
                                eot_id=None)
    uncached = keras_gpt.generate(m, RAGGED, max_new_tokens=7, temperature=0,
                                  eot_id=None, use_cache=False)
    assert cached == uncached
    assert [len(r) for r in cached] == [7, 7, 7]


def test_temperature_zero_equals_top_k_one_equals_greedy(model):
    prompt = [[4, 8, 15, 16, 23]]
    zero = keras_gpt.generate(model, prompt, max_new_tokens=4, temperature=0,
                              eot_id=None)
    top1 = keras_gpt.generate(model, prompt, max_new_tokens=4, top_k=1,
                              seed=5, eot_id=None)
    min_p1 = keras_gpt.generate(model, prompt, max_new_tokens=4, min_p=1.0,
                                seed=5, eot_id=None)
    assert zero == top1 == min_p1 == [greedy_reference(model, prompt[0], 4)]


def test_ragged_batch_rows_equal_rows_alone(model):
    batch = keras_gpt.generate(model, RAGGED, max_new_tokens=6, temperature=0,
                               eot_id=None)
    for row, out in zip(RAGGED, batch):
        assert keras_gpt.generate(model, row, max_new_tokens=6,
                                  temperature=0, eot_id=None) == out


def test_prompt_forms_and_include_prompt(model):
    direct = keras_gpt.generate(model, [1, 2], max_new_tokens=3,
                                temperature=0, eot_id=None)
    whole = keras_gpt.generate(model, [1, 2], max_new_tokens=3, temperature=0,
                               eot_id=None, include_prompt=True)
    assert whole == [1, 2] + direct
    for prompts in (np.array([[1, 2], [1, 2]]),
                    keras.ops.convert_to_tensor(np.array([[1, 2]] * 2))):
        assert keras_gpt.generate(model, prompts, max_new_tokens=3,
                                  temperature=0, eot_id=None) == [direct] * 2


def test_mixed_precision_generates():
    m = GPT(tiny(), dtype="mixed_bfloat16")
    out = keras_gpt.generate(m, [[1, 2, 3], [4]], max_new_tokens=4,
                             top_k=5, seed=1, eot_id=None)
    assert [len(r) for r in out] == [4, 4]
    assert all(0 <= t < VOCAB for r in out for t in r)


# Sampling is right ------------------------------------------------------------

def chi_square(counts, probs):
    """Pearson's statistic and degrees of freedom; bins expecting < 5 draws
    are pooled, and a draw of a probability-0 token fails at once."""
    expected = probs * counts.sum()
    assert counts[expected == 0].sum() == 0, "drew a token of probability 0"
    small = (expected > 0) & (expected < 5)
    big = expected >= 5
    observed = np.append(counts[big], counts[small].sum())
    expected = np.append(expected[big], expected[small].sum())
    if not small.any():
        observed, expected = observed[:-1], expected[:-1]
    return float(((observed - expected) ** 2 / expected).sum()), \
        len(expected) - 1


def chi_square_critical(dof, z=3.09):
    """Wilson-Hilferty upper quantile (z=3.09: p = 0.001)."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def reference_filter(logits, top_k=None, top_p=None, min_p=None):
    """NumPy: the kept logits, -inf elsewhere (top-k, top-p, min-p)."""
    out = logits.astype("float64").copy()
    for row in out:
        if top_k is not None:
            row[row < np.sort(row)[::-1][top_k - 1]] = -np.inf
        if top_p is not None:
            order = np.argsort(-row, kind="stable")
            probs = np.exp(row[order] - row[order][0])
            probs /= probs.sum()
            before = np.cumsum(probs) - probs
            row[order[before >= top_p]] = -np.inf
        if min_p is not None:
            row[row < row.max() + np.log(min_p)] = -np.inf
    return out


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.mark.parametrize("settings", [
    dict(temperature=0.7),
    dict(temperature=1.5),
    dict(temperature=0.8, top_k=6, top_p=0.9),
])
def test_sampled_distribution_matches_softmax(peaked, settings):
    prompt = [5, 9, 2]
    n = 3000
    logits = to_numpy(peaked(np.array([prompt])))[0, -1].astype("float64")
    temperature = settings["temperature"]
    probs = softmax(reference_filter(
        logits[None] / temperature, top_k=settings.get("top_k"),
        top_p=settings.get("top_p"))[0])
    drawn = keras_gpt.generate(peaked, [prompt] * n, max_new_tokens=1,
                               seed=123, eot_id=None, **settings)
    counts = np.bincount([row[0] for row in drawn], minlength=VOCAB)
    stat, dof = chi_square(counts, probs)
    assert stat < chi_square_critical(dof), (stat, dof)
    # The test has power: the untempered distribution is rejected.
    wrong = softmax(logits / (1.0 if temperature != 1.0 else 2.0))
    assert chi_square(counts, wrong)[0] > 3 * chi_square_critical(VOCAB - 1)


@pytest.mark.parametrize("top_k,top_p,min_p", [
    (5, None, None), (1, None, None), (None, 0.5, None), (None, 0.95, None),
    (10, 0.7, None), (None, None, 0.2), (20, 0.9, 0.05)])
def test_filtering_matches_numpy_reference(top_k, top_p, min_p):
    logits = np.random.default_rng(0).normal(0, 2, (4, 50)).astype("float32")
    values, indices = samplers.filter_candidates(
        keras.ops.convert_to_tensor(logits), top_k=top_k, top_p=top_p,
        min_p=min_p)
    values = to_numpy(values)
    filtered = np.full(logits.shape, -np.inf)
    if indices is None:
        filtered = values
    else:
        np.put_along_axis(filtered, to_numpy(indices), values, axis=-1)
    expected = reference_filter(logits, top_k, top_p, min_p)
    np.testing.assert_array_equal(np.isinf(filtered), np.isinf(expected))
    kept = ~np.isinf(expected)
    np.testing.assert_allclose(filtered[kept], expected[kept], rtol=1e-6)


def test_noise_is_uniform_and_keyed():
    keys = samplers.row_keys(42, [0, 1])
    u = to_numpy(samplers.uniform_noise(keys, np.array([5, 5], "int32"),
                                        20000))
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    assert abs(np.corrcoef(u[0], u[1])[0, 1]) < 0.03
    again = to_numpy(samplers.uniform_noise(keys[:1], np.array([5], "int32"),
                                            20000))
    np.testing.assert_array_equal(again[0], u[0])


def test_same_seed_repeats_and_rows_ignore_batch_mates(model):
    kwargs = dict(max_new_tokens=8, temperature=1.0, top_p=0.95, eot_id=None)
    first = keras_gpt.generate(model, [[1, 2, 3], [4]], seed=9, **kwargs)
    assert keras_gpt.generate(model, [[1, 2, 3], [4]], seed=9,
                              **kwargs) == first
    assert keras_gpt.generate(model, [[1, 2, 3], [4]], seed=10,
                              **kwargs) != first
    # Row 0 with another batch-mate (other length, so other padding).
    other = keras_gpt.generate(model, [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11]],
                               seed=9, **kwargs)
    assert other[0] == first[0]
    assert keras_gpt.generate(model, [1, 2, 3], seed=9, **kwargs) == first[0]


def test_repetition_penalty_avoids_repeats(model):
    out = keras_gpt.generate(model, [[3]], max_new_tokens=12, temperature=0,
                             repetition_penalty=1e6, eot_id=None)[0]
    assert len(set(out + [3])) == 13
    plain = keras_gpt.generate(model, [[3]], max_new_tokens=12, temperature=0,
                               repetition_penalty=1.0, eot_id=None)[0]
    assert plain == keras_gpt.generate(model, [3], max_new_tokens=12,
                                       temperature=0, eot_id=None)
    assert len(set(plain)) < 12  # this tiny model repeats when free to


# Stopping ---------------------------------------------------------------------

def test_stop_ids_end_rows_independently(model):
    prompts = [[1, 2, 3, 4, 5], [7]]
    free = keras_gpt.generate(model, prompts, max_new_tokens=10,
                              temperature=0, eot_id=None)
    stop = next(t for t in free[0] if t not in free[1])
    cut = free[0].index(stop)
    out = keras_gpt.generate(model, prompts, max_new_tokens=10, temperature=0,
                             eot_id=None, stop=[stop])
    assert out == [free[0][:cut], free[1]]
    # End-of-text is a stop id by default, beside those given; once every
    # row has stopped the loop ends.
    stops = {stop, free[1][0]}
    cuts = [min(row.index(s) for s in stops if s in row) for row in free]
    both = keras_gpt.generate(model, prompts, max_new_tokens=10,
                              temperature=0, eot_id=stop,
                              stop=[free[1][0]])
    assert both == [row[:c] for row, c in zip(free, cuts)]
    ends = [len(p) + c + 1 for p, c in zip(prompts, cuts)]  # positions + 1
    assert decoding.decoder_for(model).last_steps == max(ends) - 1  # from 1


def test_text_prompts_stream_and_stop_strings(byte_model):
    tok = ByteTokenizer("latin-1")
    free = keras_gpt.generate(byte_model, ["ab", "xyz!"], tokenizer=tok,
                              max_new_tokens=12, temperature=0)
    assert all(isinstance(t, str) for t in free)
    pieces = {0: [], 1: []}
    tokens = {0: [], 1: []}

    def stream(row, token, text):
        pieces[row].append(text)
        if token is not None:
            tokens[row].append(token)

    stop = free[0][4:6]
    out = keras_gpt.generate(byte_model, ["ab", "xyz!"], tokenizer=tok,
                             max_new_tokens=12, temperature=0, stop=[stop],
                             stream=stream)
    expected = [t[:t.find(stop)] if stop in t else t for t in free]
    assert out == expected
    assert ["".join(pieces[r]) for r in (0, 1)] == expected
    assert tok.decode(tokens[0]).startswith(expected[0])
    single = keras_gpt.generate(byte_model, "ab", tokenizer=tok,
                                max_new_tokens=12, temperature=0,
                                include_prompt=True)
    assert single == "ab" + free[0]


@pytest.mark.backend_independent
def test_stream_holds_back_incomplete_utf8():
    watch = generator._Watch(1, ByteTokenizer(), [], lambda *a: seen.append(a))
    seen = []
    for token in "é!".encode():  # 0xC3 0xA9 0x21
        watch.push(0, token)
    watch.finish(0)
    assert [text for _, _, text in seen] == ["", "é", "!"]


def test_empty_prompt_starts_from_end_of_text(byte_model):
    tok = ByteTokenizer("latin-1")
    out = keras_gpt.generate(byte_model, "", tokenizer=tok, max_new_tokens=4,
                             temperature=0, stop=[])
    alone = keras_gpt.generate(byte_model, [256], max_new_tokens=4,
                               temperature=0, eot_id=256)
    assert out == tok.decode(alone)
    assert keras_gpt.generate(byte_model, [[]], max_new_tokens=4,
                              temperature=0, eot_id=256,
                              include_prompt=True) == [alone]


# Context length ---------------------------------------------------------------

def test_context_length_errors_truncation_and_sliding(model):
    long = list(np.arange(40) % VOCAB)
    with pytest.raises(ValueError, match="has 40 tokens, more than "
                                         "context_length=32"):
        keras_gpt.generate(model, long, max_new_tokens=2, temperature=0)
    with pytest.raises(ValueError, match=r"\(30 tokens\) \+ max_new_tokens=5 "
                                         "= 35 exceeds context_length=32"):
        keras_gpt.generate(model, long[:30], max_new_tokens=5, temperature=0)
    truncated = keras_gpt.generate(model, long, max_new_tokens=4,
                                   temperature=0, truncate_prompt=True,
                                   eot_id=None)
    assert truncated == keras_gpt.generate(model, long[-28:],
                                           max_new_tokens=4, temperature=0,
                                           eot_id=None)
    slid = keras_gpt.generate(model, [1, 2], max_new_tokens=50, temperature=0,
                              sliding_window=True, eot_id=None)
    assert len(slid) == 50
    assert slid[:30] == keras_gpt.generate(model, [1, 2], max_new_tokens=30,
                                           temperature=0, eot_id=None)


@pytest.mark.parametrize("kwargs,message", [
    (dict(temperature=-0.5), r"temperature=-0.5 is invalid: it must be a "
                             "finite number >= 0"),
    (dict(top_p=0.0), r"top_p=0.0 is out of range: it must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p=1.5 is out of range"),
    (dict(top_k=-1), r"top_k=-1 is out of range: it must be an integer in "
                     r"\[0, vocab_size=37\] \(0 is off\)"),
    (dict(top_k=38), r"top_k=38 is out of range"),
    (dict(min_p=2.0), r"min_p=2.0 is out of range"),
    (dict(repetition_penalty=0), r"repetition_penalty=0 is invalid"),
    (dict(max_new_tokens=0), r"max_new_tokens=0 is out of range: it must be "
                             "an integer >= 1"),
    (dict(prompts=[[1, 37]]), r"Token id 37 in prompt 0 is out of range: ids "
                              r"must be in \[0, 37\)"),
    (dict(prompts=[[-1]]), r"Token id -1 in prompt 0 is out of range"),
    (dict(prompts="hello"), "The prompts are strings but no tokenizer was "
                            "given"),
    (dict(prompts=[[1], []]), "Prompt 1 is empty and there is no end-of-text "
                              "id"),
    (dict(prompts=[]), "prompts is empty"),
    (dict(stop=[40]), r"Stop id 40 is out of range"),
    (dict(stop=["x"]), "Stop string 'x' needs a tokenizer"),
    (dict(seed=1.5), "seed=1.5 is invalid"),
])
def test_bad_input_names_value_and_limit(model, kwargs, message):
    kwargs = {"prompts": [[1, 2]], "max_new_tokens": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        keras_gpt.generate(model, kwargs.pop("prompts"), **kwargs)


# Compiled once ----------------------------------------------------------------

@pytest.mark.skipif(keras.backend.backend() == "torch",
                    reason="torch decodes eagerly (nothing is traced)")
def test_same_shapes_do_not_retrace(model):
    decoder = decoding.decoder_for(model)
    keras_gpt.generate(model, [[1, 2, 3]], max_new_tokens=5, temperature=0,
                       eot_id=None)
    traces = decoder.traces
    # Same buckets: other prompt lengths, other lengths to generate, stops.
    keras_gpt.generate(model, [[4, 5, 6, 7]], max_new_tokens=3,
                       temperature=0, eot_id=None)
    keras_gpt.generate(model, [[9, 9]], max_new_tokens=6, temperature=0,
                       stop=[3])
    assert decoder.traces == traces


# The lean PyTorch path the loop uses ------------------------------------------

# The command --------------------------------------------------------------------

def command_args(run_dir, **overrides):
    parser = argparse.ArgumentParser()
    generate_command.register(parser.add_subparsers())
    argv = ["generate", str(run_dir), "--temperature", "0",
            "--max-new-tokens", "5"]
    for flag, value in overrides.items():
        argv += [f"--{flag.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


class FakeStdin(io.StringIO):
    def __init__(self, text, tty=False):
        super().__init__(text)
        self.tty = tty

    def isatty(self):
        return self.tty


def test_command_streams_a_run(tmp_path, byte_model, monkeypatch):
    tok = ByteTokenizer("latin-1")
    byte_model.save(tmp_path / "model.keras")
    monkeypatch.setattr(generate_command, "load_tokenizer", lambda d: tok)
    expected = keras_gpt.generate(byte_model, "hi", tokenizer=tok,
                                  max_new_tokens=5, temperature=0)
    out = io.StringIO()
    args = command_args(tmp_path, prompt="hi")
    assert generate_command.run(args, stdin=FakeStdin(""), stdout=out) == 0
    assert out.getvalue() == expected + "\n"
    out = io.StringIO()  # stdin (one trailing newline dropped), 2 samples
    args = command_args(tmp_path, num_samples=2)
    generate_command.run(args, stdin=FakeStdin("hi\n"), stdout=out)
    assert out.getvalue() == ("--- sample 1 ---\n" + expected + "\n"
                              "--- sample 2 ---\n" + expected + "\n")


def test_command_interactive_prompt(tmp_path, byte_model, monkeypatch):
    tok = ByteTokenizer("latin-1")
    byte_model.save(tmp_path / "model.keras")
    monkeypatch.setattr(generate_command, "load_tokenizer", lambda d: tok)
    lines = iter(["hi"])

    def fake_input(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    out = io.StringIO()
    generate_command.run(command_args(tmp_path),
                         stdin=FakeStdin("", tty=True), stdout=out)
    expected = keras_gpt.generate(byte_model, "hi", tokenizer=tok,
                                  max_new_tokens=5, temperature=0)
    assert out.getvalue() == expected + "\n\n"


@pytest.mark.backend_independent
def test_command_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        generate_command.run(command_args(tmp_path / "nope", prompt="x"))
    with pytest.raises(FileNotFoundError, match="No model.keras in"):
        generate_command.run(command_args(tmp_path, prompt="x"))
    GPT(tiny()).save(tmp_path / "model.keras")
    with pytest.raises(FileNotFoundError, match="No tokenizer in"):
        generate_command.run(command_args(tmp_path, prompt="x"))
    with pytest.raises(SystemExit):  # argparse: before anything loads
        command_args(tmp_path, prompt="x", num_samples=0)
