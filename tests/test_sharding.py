"""`GPT.get_layout_map(device_mesh)` without a config, as KerasHub's
`Backbone.get_layout_map` is called; the checks that need the model run
when it is built in the distribution's scope (issue 17, item 14). Layout
maps and their checks are plain Python over device names, the same on
every backend."""

import keras
import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt.sharding import fit_layout_to_model

pytestmark = pytest.mark.backend_independent


def _mesh(shape):
    return keras.distribution.DeviceMesh(
        shape, ("batch", "model"),
        devices=[f"cpu:{i}" for i in range(shape[0] * shape[1])])


def _axes(layout, path):
    return tuple(layout[path].axes)


def test_a_layout_map_without_config_is_fitted_when_the_model_is_built():
    layout = GPT.get_layout_map(_mesh((2, 4)))
    assert _axes(layout, "gpt/block_0/attention/qkv/kernel") == (None,
                                                                 "model")
    assert _axes(layout, "gpt/token_embedding/embeddings") == ("model", None)
    config = GPTConfig(vocab_size=50, context_length=8, d_model=16,
                       n_layers=1, n_heads=4)
    scope = keras.distribution.ModelParallel(layout_map=layout,
                                             batch_dim_name="batch").scope()
    with scope:
        fit_layout_to_model(config)  # what GPT(config) does first
    # 4 does not divide the vocabulary (50): W_E is split by d_model.
    assert _axes(layout, "gpt/token_embedding/embeddings") == (None, "model")
    assert len(list(layout)) == 8  # replaced, not added
    fit_layout_to_model(config.replace(n_heads=3, d_head=4))  # no scope


@pytest.mark.parametrize("changes,message", [
    ({"n_heads": 3, "d_model": 18}, "does not divide n_heads=3"),
    ({"d_mlp": 66}, "does not divide d_mlp=66"),
])
def test_building_in_the_scope_checks_the_mesh(changes, message):
    layout = GPT.get_layout_map(_mesh((1, 4)))
    config = GPTConfig(**{**dict(vocab_size=64, context_length=8, d_model=16,
                                 n_layers=1, n_heads=4), **changes})
    scope = keras.distribution.ModelParallel(layout_map=layout,
                                             batch_dim_name="batch").scope()
    with scope, pytest.raises(ValueError, match=message):
        GPT(config)  # before any variable is placed on a device
    with pytest.raises(ValueError, match=message):
        GPT.get_layout_map(_mesh((1, 4)), config=config)
