import pytest

from keras_gpt.config import PRESETS, GPTConfig

pytestmark = pytest.mark.backend_independent


def test_defaults_follow_d_model():
    c = GPTConfig(vocab_size=10, context_length=8, d_model=64, n_layers=1,
                  n_heads=4)
    assert (c.d_head, c.d_mlp, c.d_attention) == (16, 256, 64)


@pytest.mark.parametrize("name,shape", [
    ("gpt2-small", (12, 768, 12, 64, 1024)),
    ("gpt2-medium", (24, 1024, 16, 64, 1024)),
    ("gpt2-large", (36, 1280, 20, 64, 1024)),
    ("gpt2-xl", (48, 1600, 25, 64, 1024)),
    ("gpt3-small", (12, 768, 12, 64, 2048)),
    ("gpt3-medium", (24, 1024, 16, 64, 2048)),
    ("gpt3-large", (24, 1536, 16, 96, 2048)),
    ("gpt3-xl", (24, 2048, 24, 128, 2048)),
    ("gpt3-2.7b", (32, 2560, 32, 80, 2048)),
    ("gpt3-6.7b", (32, 4096, 32, 128, 2048)),
    ("gpt3-13b", (40, 5140, 40, 128, 2048)),
    ("gpt3-175b", (96, 12288, 96, 128, 2048)),
])
def test_published_presets(name, shape):
    c = GPTConfig.from_preset(name)
    assert (c.n_layers, c.d_model, c.n_heads, c.d_head,
            c.context_length) == shape
    assert c.vocab_size == 50257 and c.d_mlp == 4 * c.d_model


def test_preset_overrides_and_json_round_trip():
    c = GPTConfig.from_preset("tiny", vocab_size=99, positions="rotary")
    assert c.vocab_size == 99 and c.positions == "rotary"
    assert GPTConfig.from_json(c.to_json()) == c
    assert set(GPTConfig.presets()) == set(PRESETS)


@pytest.mark.parametrize("kwargs,message", [
    (dict(d_model=30, n_heads=4), "d_model=30 is not divisible by n_heads=4"),
    (dict(activation="swish"), "Unknown activation 'swish'"),
    (dict(positions="alibi"), "Unknown positions 'alibi'"),
    (dict(vocab_size=0), "vocab_size=0 must be a positive integer"),
    (dict(n_layers=2.5), "n_layers=2.5 must be a positive integer"),
    (dict(dropout=1.0), r"dropout=1.0 must be in \[0, 1\)"),
    (dict(positions="rotary", d_head=7), "even d_head; got d_head=7"),
])
def test_impossible_configs_name_the_value(kwargs, message):
    base = dict(vocab_size=10, context_length=8, d_model=32, n_layers=1,
                n_heads=4)
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**base, **kwargs})


def test_explicit_d_head_allows_any_d_model():
    c = GPTConfig(vocab_size=10, context_length=8, d_model=30, n_layers=1,
                  n_heads=4, d_head=8)
    assert c.d_attention == 32


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match="Unknown preset 'gpt4'.*gpt2-small"):
        GPTConfig.from_preset("gpt4")


def test_unknown_fields_rejected():
    with pytest.raises(ValueError, match="Unknown GPTConfig fields"):
        GPTConfig.from_dict({"vocab_size": 1, "n_embd": 3})
