import numpy as np
import pytest
from keras import ops

from keras_gpt import GPT, GPTConfig, activations
from tests.conftest import to_numpy


def tiny_model(**overrides):
    config = dict(vocab_size=50, context_length=16, d_model=32, n_layers=2,
                  n_heads=4)
    return GPT(GPTConfig(**{**config, **overrides}))


def ids(batch=2, length=9, vocab=50, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (batch, length))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_cache_of_every_name_and_logits_equal_the_forward_pass(positions):
    model = tiny_model(positions=positions)
    x = ids()
    logits, cache = model.run_with_cache(x)
    np.testing.assert_allclose(to_numpy(logits), to_numpy(model(x)),
                               atol=1e-5)
    assert list(cache) == model.hook_names()
    assert ("pos_embed" in cache) == (positions == "learned")
    shapes = {name: tuple(value.shape) for name, value in cache.items()}
    assert shapes["blocks.1.attn.q"] == (2, 9, 4, 8)
    assert shapes["blocks.1.attn.pattern"] == (2, 4, 9, 9)
    assert shapes["blocks.0.attn.result"] == (2, 9, 4, 32)
    assert shapes["blocks.0.mlp.post"] == (2, 9, 128)
    # The stream adds up: resid_post = resid_pre + attn_out + mlp_out, and
    # the heads' results plus W_O's bias are attn_out.
    c = {name: to_numpy(value) for name, value in cache.items()}
    np.testing.assert_allclose(
        c["blocks.1.resid_post"],
        c["blocks.1.resid_pre"] + c["blocks.1.attn_out"]
        + c["blocks.1.mlp_out"], atol=1e-5)
    bias = to_numpy(model.blocks[0].attention.out.bias)
    np.testing.assert_allclose(c["blocks.0.attn.result"].sum(2) + bias,
                               c["blocks.0.attn_out"], atol=1e-5)
    np.testing.assert_allclose(c["blocks.1.resid_pre"],
                               c["blocks.0.resid_post"])


def test_patterns_equal_inspect_attention_weights():
    model = tiny_model()
    x = ids()
    _, cache = model.run_with_cache(x, names=lambda n: n.endswith("pattern"))
    weights = model.inspect(x)["attention_weights"]
    assert list(cache) == ["blocks.0.attn.pattern", "blocks.1.attn.pattern"]
    for i, expected in enumerate(weights):
        np.testing.assert_allclose(to_numpy(cache[f"blocks.{i}.attn.pattern"]),
                                   to_numpy(expected), atol=1e-6)


def test_one_name_is_all_the_compiled_program_returns(monkeypatch):
    # What leaves the compiled program is counted: building the whole cache
    # and dropping most of it afterwards would return 33 tensors, not 2.
    returned = []
    compile_inference = activations.compile_inference

    def counting(model, fn, **kwargs):
        program = compile_inference(model, fn, **kwargs)

        def run(*args):
            logits, cache = program(*args)
            returned.append(1 + len(cache))
            return logits, cache

        return run

    monkeypatch.setattr(activations, "compile_inference", counting)
    model = tiny_model()
    logits, cache = model.run_with_cache(ids(), names=["blocks.1.mlp.pre"])
    assert list(cache) == ["blocks.1.mlp.pre"]
    assert returned == [2]
    _, cache = model.run_with_cache(ids(), names=[])
    assert cache == {} and returned == [2, 1]


def test_zeroing_a_head_equals_removing_its_output_by_hand():
    model = tiny_model()
    x = ids()
    head, d_head = 2, 8
    keep = np.ones((4, 1), "float32")
    keep[head] = 0.0
    hooked = model.run_with_hooks(x, {"blocks.1.attn.z": lambda z: z * keep})
    # By hand: the head's rows of W_O set to zero, the plain forward pass.
    out = model.blocks[1].attention.out.kernel
    saved = to_numpy(out)
    edited = saved.copy()
    edited[head * d_head:(head + 1) * d_head] = 0.0
    out.assign(edited)
    try:
        by_hand = to_numpy(model(x))
    finally:
        out.assign(saved)
    np.testing.assert_allclose(to_numpy(hooked), by_hand, atol=1e-5)
    assert np.abs(by_hand - to_numpy(model(x))).max() > 1e-4


def test_hooks_steer_and_the_cache_sees_the_hooked_value():
    model = tiny_model()
    x = ids()
    identity = model.run_with_hooks(x, {"blocks.0.resid_mid": lambda v: v})
    np.testing.assert_allclose(to_numpy(identity), to_numpy(model(x)),
                               atol=1e-5)
    steer = np.zeros(32, "float32")
    steer[3] = 5.0
    steered = model.run_with_hooks(
        x, {"blocks.0.resid_post": lambda v: v + steer})
    logits, cache = activations.run(
        model, x, names=["blocks.1.resid_pre"],
        hooks={"blocks.0.resid_post": lambda v: v + steer})
    np.testing.assert_allclose(to_numpy(logits), to_numpy(steered), atol=1e-5)
    _, plain = model.run_with_cache(x, names=["blocks.1.resid_pre"])
    np.testing.assert_allclose(
        to_numpy(cache["blocks.1.resid_pre"])
        - to_numpy(plain["blocks.1.resid_pre"]),
        np.broadcast_to(steer, (2, 9, 32)), atol=1e-5)


def test_hook_args_share_one_program(monkeypatch):
    built = []
    compile_inference = activations.compile_inference
    monkeypatch.setattr(activations, "compile_inference",
                        lambda model, fn, **kwargs: built.append(1)
                        or compile_inference(model, fn, **kwargs))
    model = tiny_model()
    x = ids()

    def scale(value, args):
        return value * args

    results = [activations.run(model, x, hooks={"blocks.0.mlp.post": scale},
                               hook_args=ops.convert_to_tensor(s))[0]
               for s in (np.float32(1.0), np.float32(0.0))]
    assert len(built) == 1
    np.testing.assert_allclose(to_numpy(results[0]), to_numpy(model(x)),
                               atol=1e-5)
    no_mlp = model.run_with_hooks(x, {"blocks.0.mlp.post": lambda v: v * 0.0})
    np.testing.assert_allclose(to_numpy(results[1]), to_numpy(no_mlp),
                               atol=1e-5)


def test_bad_names_shapes_and_ids_name_value_and_limit():
    model = tiny_model()
    x = ids()
    with pytest.raises(ValueError, match=r"Unknown activation name "
                       r"'blocks\.0\.attn_pattern'.*blocks\.\{i\}\..*"
                       r"attn\.pattern.*0\.\.1"):
        model.run_with_cache(x, names=["blocks.0.attn_pattern"])
    with pytest.raises(ValueError, match=r"Layer 2 .* out of range: the "
                       r"model has 2 blocks \(0\.\.1\)"):
        model.run_with_hooks(x, {"blocks.2.resid_pre": lambda v: v})
    with pytest.raises(ValueError, match=r"hook on 'blocks\.0\.attn\.z' "
                       r"returned shape \(2, 9, 4\).*\(2, 9, 4, 8\)"):
        model.run_with_hooks(x, {"blocks.0.attn.z": lambda z: z[..., 0]})
    with pytest.raises(ValueError, match="Token id 50 is out of range"):
        model.run_with_cache(np.array([[1, 50]]))
    with pytest.raises(ValueError, match="exceeds context_length=16"):
        model.run_with_cache(ids(1, 17))
