import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from tests.conftest import to_numpy

import keras_gpt
from keras_gpt import GPT, GPTConfig, compile_for_pretraining
from keras_gpt.commands.main import main
from keras_gpt.parallel.distribution import check_backend
from keras_gpt.parallel.plan import estimate
from keras_gpt.sharding import check_layout, layout_map

BACKEND = keras.backend.backend()
CONFIG = dict(vocab_size=48, context_length=16, d_model=32, n_layers=2,
              n_heads=4)
STEPS = 3
TEXT = ("The quick brown fox jumps over the lazy dog. PACK MY BOX WITH FIVE "
        "DOZEN LIQUOR JUGS! 0123456789\n") * 30  # > 40 characters: top_k
TINY_RUN = ["--tokenizer", "char", "--n-layers", "1", "--n-heads", "2",
            "--d-model", "16", "--context-length", "16", "--batch-size", "4",
            "--eval-steps", "1", "--steps", "2", "--eval-every", "2"]

# `keras-gpt train` with the layout flags in argv[3:], then the same
# training on one device and on each layout of argv[2], in one process whose
# backend has several devices; results are written to argv[1] as JSON.
TRAIN_SCRIPT = """
import json, os, sys
from pathlib import Path
import keras, numpy as np
from keras_gpt import GPT, GPTConfig, compile_for_pretraining, generate
from keras_gpt.commands.main import main
from keras_gpt.parallel.distribution import Parallelism, unsharded_copy

out = Path(sys.argv[1])
layouts = json.loads(sys.argv[2])
config = GPTConfig(**{config!r})

def nbytes(value):
    return int(np.asarray(keras.ops.convert_to_numpy(value)).nbytes)

def shard_bytes(variables):  # what the first device holds (JAX shards)
    total = 0
    for v in variables:
        shards = getattr(v.value, "addressable_shards", None)
        total += shards[0].data.nbytes if shards else nbytes(v.value)
    return int(total)

# First the command line, which finds (TensorFlow: makes) its devices
# before anything else starts the backend.
results = {{}}
corpus = out / "corpus.txt"
corpus.write_text({text!r})
run = out / "run"
results["cli"] = main(["train", "--data", str(corpus), "--cache-dir",
                       str(out / "cache"), *{tiny!r}, "--samples", "0",
                       *sys.argv[3:], "--out", str(run)])
results["cli_distribution"] = json.loads(
    (run / "distribution.json").read_text())

rng = np.random.default_rng(0)
x = rng.integers(0, config.vocab_size, (8, config.context_length))
x = x.astype("int32")
y = np.roll(x, -1, axis=1)
keras.utils.set_random_seed(0)
initial = GPT(config).get_weights()
prompt = [[1, 2, 3, 4]]
for name, (data, model_axis) in layouts.items():
    parallel = Parallelism(data, model_axis)
    with parallel.scope(config):
        model = GPT(config)
        model.set_weights(initial)
        compile_for_pretraining(model, total_steps={steps},
                                learning_rate=1e-2, warmup_steps=1)
        parallel.prepare(model)
        history = model.fit(x, y, batch_size=8, epochs={steps},
                            shuffle=False, verbose=0)
        last = name == list(layouts)[-1]  # generate with the last layout
        tokens = generate(model, prompt, max_new_tokens=6, temperature=0) \
            if last else None
        described = parallel.describe(model)
    copy_tokens = generate(unsharded_copy(model), prompt, max_new_tokens=6,
                           temperature=0) if last else None
    results[name] = dict(
        losses=history.history["loss"], tokens=tokens,
        copy_tokens=copy_tokens,
        engine=described["engine"], devices=described["devices"],
        variables=described["variables"],
        weight_bytes=shard_bytes(model.weights),
        optimizer_bytes=shard_bytes(model.optimizer.variables),
        step_counter_bytes=nbytes(model.optimizer.iterations))
    if last:
        model.save(out / "model.keras")

(out / "results.json").write_text(json.dumps(results))
sys.stdout.flush()
os._exit(0)  # skip the interpreter's slow teardown of TF/JAX threads
"""


def _run_script(tmp_path, env, layouts, cli_args):
    script = TRAIN_SCRIPT.format(
        config=CONFIG, steps=STEPS, text=TEXT, tiny=TINY_RUN)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), json.dumps(layouts),
         *cli_args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "results.json").read_text())


def _assert_same_training(results, names):
    single = results["single"]
    for name in names:
        np.testing.assert_allclose(results[name]["losses"], single["losses"],
                                   atol=1e-4, err_msg=name)
    # Greedy tokens of the model trained with the last layout, generated
    # in its scope and from its weights gathered onto one device.
    last = results[names[-1]]
    assert len(last["tokens"][0]) == 6
    assert last["tokens"] == last["copy_tokens"]


def test_jax_data_and_model_parallel_match_one_device(tmp_path):
    if BACKEND != "jax":
        pytest.skip("starts its own 8-device JAX process: JAX pass only")
    results = _run_script(
        tmp_path, {"KERAS_BACKEND": "jax", "JAX_NUM_CPU_DEVICES": "8"},
        {"single": [1, 1], "data": [8, 1], "model": [2, 4]},
        ["--data-parallel", "2", "--model-parallel", "2"])
    _assert_same_training(results, ["data", "model"])
    config = GPTConfig(**CONFIG)
    assert results["data"]["engine"] == "keras.distribution.DataParallel"
    assert results["model"]["engine"] == "keras.distribution.ModelParallel"
    assert len(results["model"]["devices"]) == 8

    # The sharding specs the variables really carry (vocab 48 divides by 4:
    # W_E is split by vocabulary rows).
    specs = {path.split("/", 1)[1]: axes  # without the model's name
             for path, axes in results["model"]["variables"].items()}
    expected = {
        "token_embedding/embeddings": ["model", None],
        "position_embedding/embeddings": [None, None],
        "block_0/ln1/gamma": [None],
        "block_0/attention/qkv/kernel": [None, "model"],
        "block_0/attention/qkv/bias": ["model"],
        "block_0/attention/out/kernel": ["model", None],
        "block_0/attention/out/bias": [None],
        "block_1/mlp/up/kernel": [None, "model"],
        "block_1/mlp/up/bias": ["model"],
        "block_1/mlp/down/kernel": ["model", None],
        "block_1/mlp/down/bias": [None],
        "final_norm/beta": [None],
    }
    for path, axes in expected.items():
        assert specs[path] == axes, path
    assert all(axes == [None] * len(axes)
               for axes in results["data"]["variables"].values())

    # What one device holds, measured on the shards, is the planner's.
    for name, (d, m) in (("single", (1, 1)), ("data", (8, 1)),
                         ("model", (2, 4))):
        plan = estimate(config, d, m, batch_size=8, dtype="float32")
        r = results[name]
        assert r["weight_bytes"] == plan.weights, name
        assert r["optimizer_bytes"] == plan.optimizer + \
            r["step_counter_bytes"], name
    assert results["model"]["weight_bytes"] < \
        results["single"]["weight_bytes"] / 3

    # Weights trained sharded load in this plain one-device process and
    # generate the same greedy tokens.
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert keras_gpt.generate(loaded, [[1, 2, 3, 4]], max_new_tokens=6,
                              temperature=0) == results["model"]["tokens"]
    fresh = GPT(config)
    compile_for_pretraining(fresh, total_steps=STEPS)
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(tmp_path / "model.keras")  # as --resume does
    assert int(to_numpy(fresh.optimizer.iterations)) == STEPS
    for a, b in zip(fresh.weights, loaded.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), a.path)

    # keras-gpt train --data-parallel 2 --model-parallel 2.
    assert results["cli"] == 0
    run = results["cli_distribution"]
    assert run["engine"] == "keras.distribution.ModelParallel"
    assert run["mesh"] == {"batch": 2, "model": 2}
    assert any(axes == [None, "model"] for path, axes in
               run["variables"].items() if path.endswith("qkv/kernel"))
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert model.config.n_heads == 2


def test_tensorflow_mirrored_strategy_matches_one_device(tmp_path):
    if BACKEND != "tensorflow":
        pytest.skip("starts its own TensorFlow process with 2 logical CPUs: "
                    "TensorFlow pass only")
    results = _run_script(tmp_path, {"KERAS_BACKEND": "tensorflow"},
                          {"single": [1, 1], "mirrored": [2, 1]},
                          ["--data-parallel", "2"])
    _assert_same_training(results, ["mirrored"])
    assert results["mirrored"]["engine"] == "tf.distribute.MirroredStrategy"
    assert len(results["mirrored"]["devices"]) == 2
    assert results["cli"] == 0
    assert results["cli_distribution"]["engine"] == \
        "tf.distribute.MirroredStrategy"
    assert results["cli_distribution"]["devices"] == \
        results["mirrored"]["devices"]
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert model.config.d_model == 16


def _mesh(shape):
    devices = [f"cpu:{i}" for i in range(int(np.prod(shape)))]
    return keras.distribution.DeviceMesh(shape, ("batch", "model"),
                                         devices=devices)


def _axes(layout, path):
    found = layout[path]
    return None if found is None else tuple(found.axes)


def test_layout_map_shards_megatron_style():
    config = GPTConfig(vocab_size=50, context_length=8, d_model=16,
                       n_layers=1, n_heads=4, tie_embeddings=False)
    layout = GPT.get_layout_map(_mesh((2, 4)), config=config)
    # vocab 50 is not a multiple of 4, so W_E and W_U split by d_model.
    assert _axes(layout, "gpt/token_embedding/embeddings") == (None, "model")
    assert _axes(layout, "gpt/unembedding/kernel") == ("model", None)
    assert _axes(layout, "gpt/block_0/attention/qkv/kernel") == (None,
                                                                 "model")
    assert _axes(layout, "gpt/block_0/attention/out/kernel") == ("model",
                                                                 None)
    assert _axes(layout, "gpt/block_0/mlp/up/kernel") == (None, "model")
    assert _axes(layout, "gpt/block_0/mlp/up/bias") == ("model",)
    assert _axes(layout, "gpt/block_0/mlp/down/kernel") == ("model", None)
    for path in ("gpt/block_0/mlp/down/bias", "gpt/block_0/ln1/gamma",
                 "gpt/position_embedding/embeddings"):
        assert _axes(layout, path) is None, path  # replicated
    model = GPT(config)  # every model variable matches at most one key
    assert sum(layout[v.path] is not None for v in model.weights) == 8

    vocab_split = GPT.get_layout_map(_mesh((1, 2)), config="tiny")
    assert _axes(vocab_split, "gpt/token_embedding/embeddings") == (
        "model", None)  # 512 % 2 == 0: vocabulary-parallel
    odd = GPTConfig(vocab_size=51, context_length=8, d_model=18,
                    n_layers=1, n_heads=4, d_head=4, d_mlp=64)
    whole = GPT.get_layout_map(_mesh((1, 4)), config=odd)
    assert _axes(whole, "gpt/token_embedding/embeddings") == (None, None)


@pytest.mark.parametrize("shape,changes,message", [
    ((2, 3), {}, "A model axis of 3 devices does not divide n_heads=4"),
    ((1, 4), {"d_mlp": 66}, "does not divide d_mlp=66"),
])
def test_layout_map_refuses_meshes_that_do_not_divide(shape, changes,
                                                      message):
    config = GPTConfig(vocab_size=50, context_length=8, d_model=16,
                       n_layers=1, n_heads=4, **changes)
    with pytest.raises(ValueError, match=message):
        GPT.get_layout_map(_mesh(shape), config=config)


def test_layout_map_refuses_unknown_axes():
    config = GPTConfig.from_preset("tiny")
    with pytest.raises(ValueError, match="model_dim='heads' is not an axis"):
        layout_map(config, _mesh((1, 2)), model_dim="heads")
    with pytest.raises(ValueError, match="both 'model'"):
        layout_map(config, _mesh((1, 2)), batch_dim="model")


def test_check_layout_refuses_a_batch_the_data_axis_does_not_divide():
    with pytest.raises(ValueError, match="A data axis of 3 devices does not "
                       "divide the batch of 16 sequences"):
        check_layout(GPTConfig.from_preset("tiny"), 3, 1, batch_size=16)


def test_backends_refuse_what_they_cannot_do():
    check_backend("jax", 2, 4)
    check_backend("tensorflow", 2, 1)
    check_backend("torch", 1, 1)
    with pytest.raises(ValueError, match="not available on the torch"):
        check_backend("torch", 2, 1)
    with pytest.raises(ValueError, match="model_parallel=2 needs "
                       "KERAS_BACKEND=jax"):
        check_backend("tensorflow", 1, 2)


TORCH_REFUSAL = "not available on the torch backend"
TF_REFUSAL = "--model-parallel 3 needs KERAS_BACKEND=jax"


@pytest.mark.parametrize("args,messages", [
    (["--model-parallel", "3"],
     {"jax": "A model axis of 3 devices does not divide --n-heads 2",
      "tensorflow": TF_REFUSAL, "torch": TORCH_REFUSAL}),
    (["--data-parallel", "3"],
     {"jax": "A data axis of 3 devices does not divide the batch of 4",
      "tensorflow": "A data axis of 3 devices does not divide the batch",
      "torch": TORCH_REFUSAL}),
    (["--data-parallel", "0"], {b: "--data-parallel: 0 is out of range: "
                                   "it must be >= 1"
                                for b in ("jax", "tensorflow", "torch")}),
])
def test_train_refuses_bad_layouts_before_reading_data(tmp_path, capsys,
                                                       args, messages):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    out = tmp_path / "run"
    code = main(["train", "--data", str(corpus), "--cache-dir",
                 str(tmp_path / "cache"), *TINY_RUN, *args, "--out",
                 str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("keras-gpt train: error:") and "Traceback" not in err
    assert messages[BACKEND] in err
    assert not out.exists()
    assert not (tmp_path / "cache").exists()  # the corpus was never read


def test_jax_train_refuses_more_devices_than_it_sees(tmp_path, capsys):
    if BACKEND != "jax":
        pytest.skip("JAX device count; the other backends refuse earlier "
                    "or would split the CPU of this process")
    if len(keras.distribution.list_devices()) != 1:
        pytest.skip("this process already sees several JAX devices")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    assert main(["train", "--data", str(corpus), *TINY_RUN,
                 "--data-parallel", "2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "needs 2 devices, but JAX sees 1" in err
    assert "JAX_NUM_CPU_DEVICES=2" in err


def test_resume_may_change_the_layout_but_not_the_model():
    from keras_gpt.training.run import RunOptions, resolve_options

    stored = resolve_options(RunOptions(data_parallel=2, model_parallel=2))
    assert (stored["data_parallel"], stored["model_parallel"]) == (2, 2)
    resumed = resolve_options(RunOptions(data_parallel=1, model_parallel=1),
                              stored)
    assert (resumed["data_parallel"], resumed["model_parallel"]) == (1, 1)
    with pytest.raises(ValueError, match="--batch-size 8 differs"):
        resolve_options(RunOptions(batch_size=8), stored)
