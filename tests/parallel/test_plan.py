import keras
import numpy as np
import pytest

from keras_gpt import GPT, GPTConfig, compile_for_pretraining
from keras_gpt.commands.main import main
from keras_gpt.config import PRESETS
from keras_gpt.params import parameter_table
from keras_gpt.parallel.plan import (estimate, format_bytes, parameters_per_device,
                            parse_bytes, smallest_layout, variable_shapes)

GB = 10**9


@pytest.mark.backend_independent
@pytest.mark.parametrize("text,value", [
    ("141GB", 141 * GB), ("80 GiB", 80 * 2**30), ("1.5TB", 1_500 * GB),
    ("512mb", 512 * 10**6)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.backend_independent
@pytest.mark.parametrize("text", ["141", "lots", "12 parsecs", "0GB"])
def test_parse_bytes_refuses(text):
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes(text)


@pytest.mark.backend_independent
@pytest.mark.parametrize("config", [
    GPTConfig(vocab_size=50, context_length=8, d_model=16, n_layers=2,
              n_heads=2),
    GPTConfig(vocab_size=50, context_length=8, d_model=16, n_layers=1,
              n_heads=4, d_head=6, d_mlp=40, positions="rotary",
              tie_embeddings=False, use_bias=False),
])
def test_variable_shapes_are_the_models(config):
    model = GPT(config, name="gpt")
    assert variable_shapes(config) == [(v.path, tuple(v.shape))
                                       for v in model.weights]


@pytest.mark.backend_independent
@pytest.mark.parametrize("name", list(PRESETS))
def test_per_device_count_agrees_with_the_parameter_table(name):
    config = GPTConfig.from_preset(name)
    assert parameters_per_device(config, 1) == parameter_table(config).total


def _gpt3_175b_by_hand():
    """GPT-3 175B written out: L=96, d=12288, 96 heads of 128 (d_attn =
    12288), d_mlp=49152, vocab 50257, context 2048, tied W_U, biases."""
    L, d, a, m, v, s = 96, 12288, 12288, 49152, 50257, 2048
    per_layer = (4 * d + d * 3 * a + 3 * a + a * d + d + d * m + m + m * d
                 + d)
    n = v * d + s * d + L * per_layer + 2 * d
    # 48-way model axis: 50257 % 48 != 0 but 12288 % 48 == 0, so W_E is
    # split by d_model columns; position embeddings, LayerNorms and the
    # W_O and down-projection biases stay whole on every device.
    split = d * 3 * a + 3 * a + a * d + d * m + m + m * d
    n48 = v * d // 48 + s * d + L * (4 * d + 2 * d + split // 48) + 2 * d
    return n, n48


@pytest.mark.backend_independent
def test_gpt3_175b_against_hand_arithmetic():
    n, n48 = _gpt3_175b_by_hand()
    assert n == 174_604_259_328
    one = estimate("gpt3-175b", 1, 1, batch_size=1, dtype="mixed_bfloat16")
    assert one.total_parameters == one.parameters == n
    # float32 master weights, float32 gradients, AdamW m and v in float32.
    assert (one.weights, one.gradients, one.optimizer) == (4 * n, 4 * n,
                                                           8 * n)
    assert one.state == 16 * n == 2_793_668_149_248
    # Korthikanti et al. (2022): sbh(34 + 5as/h) bytes per layer in 16-bit,
    # plus the float32 logits 4sbv; with full recomputation 2sbh per layer
    # plus one layer being recomputed.
    s, b, h, a, L, v = 2048, 1, 12288, 96, 96, 50257
    layer = 34 * s * b * h + 5 * a * s * s * b
    assert one.activations == L * layer + 4 * s * b * v
    assert one.activations_recompute == L * 2 * s * b * h + layer \
        + 4 * s * b * v
    assert one.activations == 275_826_483_200  # 275.8 GB per sequence

    # The layout `keras-gpt plan gpt3-175b --device-memory 141GB` picks for
    # a batch of 16, without recomputation: 8 x 48 (two sequences each).
    usable = 141 * GB * 0.9
    best = smallest_layout(GPTConfig.from_preset("gpt3-175b"), 141 * GB,
                           batch_size=16)
    assert (best.data_parallel, best.model_parallel) == (8, 48)
    assert best.parameters == n48
    assert best.state == 16 * n48
    b = 2
    layer48 = (10 * s * b * h + s * b * (4 * h + 2 * 4 * h) * 2 // 48
               + 5 * a * s * s * b // 48)
    assert best.activations == L * layer48 + 4 * s * b * v
    assert best.total() <= usable
    assert format_bytes(best.total()) == "118.32 GB"
    # Nothing with fewer devices (or as few, with a smaller model axis)
    # fits: 16 x 24 holds 1/24 of the state (116.4 GB) plus one sequence.
    for d, m in [(4, 48), (16, 24), (8, 32), (2, 96), (16, 16)]:
        assert estimate("gpt3-175b", d, m, 16).total() > usable, (d, m)

    remat = smallest_layout(best.config, 141 * GB, batch_size=16,
                            recompute=True)
    assert (remat.data_parallel, remat.model_parallel) == (2, 48)
    b = 8
    layer48 = (10 * s * b * h + s * b * 12 * h * 2 // 48
               + 5 * a * s * s * b // 48)
    assert remat.activations_recompute == (L * 2 * s * b * h + layer48
                                           + 4 * s * b * v)
    assert remat.total(recompute=True) <= usable
    assert estimate("gpt3-175b", 1, 48, 16).total(recompute=True) > usable
    assert estimate("gpt3-175b", 1, 96, 16).total(recompute=True) <= usable
    # 1 x 96 also has 96 devices; the smaller model axis wins the tie.


@pytest.mark.backend_independent
def test_data_parallel_divides_activations_not_weights():
    a = estimate("gpt2-small", 1, 1, batch_size=8, dtype="float32")
    b = estimate("gpt2-small", 4, 1, batch_size=8, dtype="float32")
    assert b.state == a.state
    assert b.activations < a.activations / 3
    c = estimate("gpt2-small", 1, 4, batch_size=8, dtype="float32")
    assert c.parameters < a.parameters / 3 and c.activations < a.activations


@pytest.mark.backend_independent
def test_no_layout_fits_a_tiny_device(capsys):
    config = GPTConfig.from_preset("gpt3-175b")
    assert smallest_layout(config, 1 * GB) is None
    assert main(["plan", "gpt3-175b", "--device-memory", "1GB"]) == 0
    out = capsys.readouterr().out
    assert out.count("no fit") == 2
    assert "needs pipeline parallelism or sharded optimizer state" in out


@pytest.mark.backend_independent
@pytest.mark.parametrize("kwargs,message", [
    (dict(model_parallel=5), "does not divide n_heads=96"),
    (dict(data_parallel=3), "does not divide the batch of 16"),
    (dict(dtype="float8"), "Unknown dtype 'float8'"),
    (dict(batch_size=0), "batch_size=0 must be a positive integer"),
])
def test_estimate_refuses_bad_layouts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        estimate("gpt3-175b", **kwargs)


@pytest.mark.backend_independent
def test_plan_command(capsys):
    assert main(["plan", "gpt3-175b", "--device-memory", "141GB"]) == 0
    out = capsys.readouterr().out
    assert "174,604,259,328 parameters" in out
    assert "698.42 GB" in out  # weights: N x 4 bytes
    assert "1,396.83 GB" in out  # AdamW m and v
    lines = {line.split()[0]: line for line in out.splitlines()
             if line.strip().startswith(("without", "with "))}
    assert "8 x 48" in lines["without"] and "118.32 GB" in lines["without"]
    assert "2 x 48" in lines["with"] and " 96 " in lines["with"]

    assert main(["plan", "all", "--device-memory", "141GB"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[0] for r in rows[3:]] == list(PRESETS)


@pytest.mark.backend_independent
@pytest.mark.parametrize("args,message", [
    (["--device-memory", "141"], "give a number and a unit"),
    (["--device-memory", "141GB", "--batch-size", "0"],
     "--batch-size: 0 is out of range: it must be >= 1"),
    (["--device-memory", "141GB", "--headroom", "1.5"],
     "--headroom: 1.5 is out of range: it must be in [0, 1)"),
    (["--device-memory", "141GB", "--context-length", "0"],
     "--context-length: 0 is out of range: it must be >= 1"),
])
def test_plan_command_bad_input(capsys, args, message):
    assert main(["plan", "gpt3-13b", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-gpt plan: error:") and message in err


def _compiled_step_memory(model, batch):
    """XLA's memory analysis of one jitted AdamW training step (JAX)."""
    import jax

    x = np.zeros((batch, model.config.context_length), "int32")

    def step(trainable, non_trainable, optimizer_state, x, y):
        def loss(trainable):
            logits, _ = model.stateless_call(trainable, non_trainable, x,
                                             training=True)
            return model.loss(y, logits)

        value, grads = jax.value_and_grad(loss)(trainable)
        return (value, *model.optimizer.stateless_apply(optimizer_state,
                                                        grads, trainable))

    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in model.optimizer.variables])
    return jax.jit(step, donate_argnums=(0, 2)).lower(
        *state, x, x).compile().memory_analysis()


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_planner_against_measured_memory_of_a_train_step(dtype):
    if keras.backend.backend() != "jax":
        pytest.skip("measures XLA's compiled memory analysis: JAX pass only")
    config = GPTConfig(vocab_size=256, context_length=64, d_model=64,
                       n_layers=2, n_heads=4)
    model = GPT(config, dtype=dtype)
    compile_for_pretraining(model, total_steps=10)
    model.optimizer.build(model.trainable_variables)
    measured = _compiled_step_memory(model, batch=8)
    plan = estimate(config, batch_size=8, dtype=dtype)
    step_counter = model.optimizer.iterations.value.nbytes
    # The buffers a step updates in place: weights and AdamW m, v (+ the
    # step counter): exactly the planner's figures.
    assert measured.alias_size_in_bytes == (plan.weights + plan.optimizer
                                            + step_counter)
    if dtype == "float32":
        # Temporaries (gradients, activations, workspace): XLA on CPU keeps
        # more than Megatron's kernels; the formula is a floor within 2x.
        ratio = measured.temp_size_in_bytes / (plan.gradients
                                               + plan.activations)
        print(f"measured temporaries / planned gradients+activations: "
              f"{ratio:.2f}")
        assert 1.0 <= ratio <= 2.0, ratio
