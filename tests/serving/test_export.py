"""Tests for keras_gpt.serving (export and graph) and `keras-gpt export`.

The cross-backend tests train tiny runs under JAX (char tokenizer) and
PyTorch (BPE) in subprocesses, export them (from the JAX process through
`export_saved_model`, for PyTorch through `keras-gpt export` in a process
where torch and jax cannot be imported), then load both exports in a
process where keras, keras_gpt, jax and torch cannot be imported: only
tensorflow and TF Text's kernels.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from tests.conftest import KERAS_FREE, load_tool

from keras_gpt.commands.main import main

# One xdist worker runs this module (tools/test.sh: --dist loadgroup), so its
# module fixtures (three trained runs and an export) are built once.
pytestmark = pytest.mark.xdist_group("export")
BACKEND = keras.backend.backend()
ONCE = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="runs once, in the tensorflow pass; starts its own backends in "
           "subprocesses")
IN_TENSORFLOW = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="exports in this process, which takes the tensorflow backend "
           "(other backends export through a subprocess, tested once)")
ROOT = Path(__file__).resolve().parents[2]
TEXT = ("The quick brown fox jumps over the lazy dog.\n"
        "Pack my box with five dozen liquor jugs!\n") * 60
PROMPTS = ["The quick", "", "Pack my box with", "jumps"]
NEW = 12  # serving_default's max_new_tokens
# The invalid UTF-8 prompts of LOAD, as Python reads them (errors="replace").
ODD = ["", "caf\ufffd", "\ufffd\ufffdok", "ok"]
SAMPLING = dict(temperature=0.9, top_k=5, top_p=0.9)
SIGNATURES = ["detokenize", "generate", "logits", "serving_default",
              "tokenize"]


def _start(code, *args, backend=None):
    """Starts `python -c code *args` (KERAS_BACKEND=backend if given)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if backend:
        env["KERAS_BACKEND"] = backend
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                            env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait(process, timeout=300):
    """The stdout of a finished `_start`ed process (which must succeed)."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-4000:]
    return out


# Runs under JAX and PyTorch: train, reference outputs, export ----------------

TRAIN = """
import json, os, sys
import numpy as np
from keras_gpt.commands.main import main
work, tokenizer_kind, export = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
prompts, odd, new, sampling = json.loads(sys.argv[4])
args = ["train", "--data", work + "/corpus", "--tokenizer", tokenizer_kind,
        "--vocab-size", "300", "--n-layers", "1", "--n-heads", "2",
        "--d-model", "32", "--context-length", "32", "--batch-size", "8",
        "--steps", "40", "--eval-every", "40", "--eval-steps", "1",
        "--learning-rate", "0.01", "--samples", "0",
        "--cache-dir", work + "/cache", "--out", work + "/run"]
assert main(args) == 0
import keras, keras_gpt
from keras_gpt.commands.generate import load_run
model, tok = load_run(work + "/run")
ids = np.random.default_rng(0).integers(0, tok.vocab_size, (2, 9))
np.save(work + "/logits.npy", keras.ops.convert_to_numpy(model(ids)))
rows = [tok.encode(p) for p in prompts]
refs = {
    "backend": keras.backend.backend(), "logit_ids": ids.tolist(),
    "encoded": rows,
    "greedy": keras_gpt.generate(model, prompts, tokenizer=tok,
                                 max_new_tokens=new, temperature=0),
    "greedy_ids": keras_gpt.generate(model, rows, max_new_tokens=new,
                                     temperature=0, eot_id=tok.eot_id),
    "sampled_ids": keras_gpt.generate(model, rows, max_new_tokens=new,
                                      eot_id=tok.eot_id, seed=7, **sampling),
}
try:
    refs["odd"] = keras_gpt.generate(model, odd, tokenizer=tok,
                                     max_new_tokens=new, temperature=0)
except ValueError as error:
    refs["odd"] = str(error)
if export:
    refs["target"] = str(keras_gpt.export_saved_model(
        model, tok, work + "/served", max_new_tokens=new))
json.dump(refs, open(work + "/refs.json", "w"))
sys.stdout.flush()
os._exit(0)  # skips the slow teardown of TensorFlow's and JAX's threads
"""

# Exports a run with the CLI, in a process where torch and jax cannot be
# imported (the export must not need the training backend).
CLI_EXPORT = """
import os, sys
sys.modules["torch"] = sys.modules["jax"] = None  # import -> ImportError
from keras_gpt.commands.main import main
work = sys.argv[1]
code = main(["export", work + "/run", work + "/served", "--max-new-tokens",
             sys.argv[2]])
import keras
assert keras.backend.backend() == "tensorflow", keras.backend.backend()
sys.stdout.flush()
os._exit(code)
"""

# Loads each export (WORK/served/1) in a process where keras, keras_gpt, jax
# and torch cannot be imported: only tensorflow and TF Text's kernels (its
# Python package needs tf.keras, so its op libraries are loaded directly,
# as tensorflow_model_server links them).
LOAD = KERAS_FREE + """
import glob, importlib.util, json, os
import numpy as np
import tensorflow as tf
text = importlib.util.find_spec("tensorflow_text").submodule_search_locations
for library in glob.glob(os.path.join(text[0], "python", "ops", "*.so")):
    tf.load_op_library(library)

prompts, odd, new, sampling = json.loads(sys.argv[1])

def strings(t):
    return [s.decode("utf-8") for s in t.numpy()]

def call(fn, **kwargs):
    try:
        out = fn(**kwargs)
    except tf.errors.InvalidArgumentError as error:
        return {"error": error.message}
    return {k: strings(v) if v.dtype == tf.string else v.numpy().tolist()
            for k, v in out.items()}

def spec(t):
    return [t.dtype.name, t.shape.as_list()]

results = {}
for work in sys.argv[2:]:
    served = tf.saved_model.load(work + "/served/1")
    sigs = served.signatures
    r = results[work] = {"signatures": {
        name: {"inputs": {k: spec(v) for k, v in
                          fn.structured_input_signature[1].items()},
               "outputs": {k: spec(v) for k, v in
                           fn.structured_outputs.items()}}
        for name, fn in sigs.items()}}

    def generate(prompts=prompts, max_new_tokens=new, seed=7, **settings):
        settings = {**sampling, **settings}
        return call(sigs["generate"], prompts=tf.constant(prompts),
                    max_new_tokens=tf.constant(max_new_tokens, tf.int32),
                    temperature=tf.constant(settings["temperature"]),
                    top_k=tf.constant(settings["top_k"]),
                    top_p=tf.constant(settings["top_p"]),
                    seed=tf.constant(seed, tf.int64))

    r["default"] = call(sigs["serving_default"], prompts=tf.constant(prompts))
    r["sampled"] = [generate(), generate(), generate(seed=8)]
    r["generate_greedy"] = generate(temperature=0.0)
    # Invalid UTF-8: "caf" + a lone Latin-1 byte, two bytes that never
    # start a character.
    odd_bytes = ["", "caf\\xe9".encode("latin-1"), b"\\xff\\xfeok", "ok"]
    r["odd"] = generate(prompts=odd_bytes, temperature=0.0)
    r["too_long"] = generate(max_new_tokens=32)
    r["huge"] = generate(max_new_tokens=2 ** 31 - 1)
    r["negative"] = generate(max_new_tokens=-3)
    r["bad_top_p"] = generate(top_p=1.5)
    r["no_prompts"] = generate(prompts=tf.constant([], tf.string))
    ids = json.load(open(work + "/refs.json"))["logit_ids"]
    logits = sigs["logits"](token_ids=tf.constant(ids, tf.int32))["logits"]
    np.save(work + "/served_logits.npy", logits.numpy())
    r["logits_bad"] = call(sigs["logits"], token_ids=tf.constant([[0, 10**6]]))
    r["tokenize"] = call(sigs["tokenize"], texts=tf.constant(prompts))
    r["detokenize"] = call(sigs["detokenize"], token_ids=tf.constant(
        r["tokenize"]["token_ids"], tf.int32))
results["modules"] = sorted(m for m in sys.modules
                            if m.split(".")[0] in BLOCKED)

def importable(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True

results["importable"] = [m for m in BLOCKED if importable(m)]
print(json.dumps(results))
sys.stdout.flush()
os._exit(0)
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Trains, exports and loads; returns what each step produced."""
    work = {b: tmp_path_factory.mktemp(b) for b in ("jax", "torch")}
    for folder in work.values():
        (folder / "corpus").mkdir()
        (folder / "corpus" / "text.txt").write_text(TEXT)
    job = json.dumps([PROMPTS, ODD, NEW, SAMPLING])
    jax = _start(TRAIN, work["jax"], "char", 1, job, backend="jax")
    torch = _start(TRAIN, work["torch"], "bpe", 0, job, backend="torch")
    _wait(torch)
    cli = _start(CLI_EXPORT, work["torch"], NEW)
    _wait(jax)
    cli_out = _wait(cli)
    cli_tool = Path(sys.executable).with_name("saved_model_cli")
    show = subprocess.Popen(
        [str(cli_tool) if cli_tool.exists() else "saved_model_cli", "show",
         "--all", "--dir", str(work["jax"] / "served" / "1")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    results = json.loads(_wait(_start(LOAD, job, *work.values())))
    show_out, show_err = show.communicate(timeout=300)
    return {
        "work": work, "cli_out": cli_out, "modules": results["modules"],
        "importable": results["importable"],
        "show": (show.returncode, show_out, show_err),
        "refs": {b: json.loads((work[b] / "refs.json").read_text())
                 for b in work},
        "results": {b: results[str(work[b])] for b in work}}


BACKENDS = ["jax", "torch"]


@ONCE
def test_layout_and_signatures(served):
    for backend in BACKENDS:
        version = served["work"][backend] / "served" / "1"
        assert (version / "saved_model.pb").is_file()
        assert (version / "variables" / "variables.index").is_file()
        info = json.loads((version / "assets.extra" / "keras_gpt.json")
                          .read_text())
        assert info["serving_default"]["max_new_tokens"] == NEW
        assert info["config"]["context_length"] == 32
        sigs = served["results"][backend]["signatures"]
        assert sorted(sigs) == SIGNATURES
        assert sigs["serving_default"]["inputs"] == {
            "prompts": ["string", [None]]}
        assert sigs["generate"]["inputs"] == {
            "prompts": ["string", [None]], "max_new_tokens": ["int32", []],
            "temperature": ["float32", []], "top_k": ["int32", []],
            "top_p": ["float32", []], "seed": ["int64", []]}
        for name in ("serving_default", "generate"):
            assert sigs[name]["outputs"] == {
                "completions": ["string", [None]],
                "token_ids": ["int32", [None, None]],
                "lengths": ["int32", [None]]}
        assert sigs["logits"]["inputs"] == {"token_ids": ["int32",
                                                          [None, None]]}
        assert sigs["logits"]["outputs"] == {
            "logits": ["float32", [None, None, info["config"]["vocab_size"]]]}
        assert sigs["tokenize"]["inputs"] == {"texts": ["string", [None]]}
        assert sigs["detokenize"]["outputs"] == {"texts": ["string", [None]]}
    assert "Exported" in served["cli_out"]


@ONCE
def test_loading_needs_no_keras_keras_gpt_jax_or_torch(served):
    # LOAD called every signature (the other tests check the results)
    # where none of them could be imported, and none was.
    assert served["importable"] == []
    assert served["modules"] == []
    assert all(sorted(served["results"][b]["signatures"]) == SIGNATURES
               for b in BACKENDS)


@ONCE
@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_output_equals_keras_gpt_generate(served, backend):
    refs, got = served["refs"][backend], served["results"][backend]
    assert refs["backend"] == backend
    for out in (got["default"], got["generate_greedy"]):
        assert out["completions"] == refs["greedy"]
        ids = [row[:n] for row, n in zip(out["token_ids"], out["lengths"])]
        assert ids == refs["greedy_ids"]
        assert all(x == -1 for row, n in zip(out["token_ids"], out["lengths"])
                   for x in row[n:])
    assert any(len(r) == NEW for r in refs["greedy_ids"])


@ONCE
@pytest.mark.parametrize("backend", BACKENDS)
def test_logits_equal_the_keras_models(served, backend):
    work = served["work"][backend]
    expected = np.load(work / "logits.npy")
    got = np.load(work / "served_logits.npy")
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    error = served["results"][backend]["logits_bad"]["error"]
    assert "outside [0, vocab_size=" in error and "largest 1000000" in error


@ONCE
@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_repeats_with_a_seed(served, backend):
    first, again, other = served["results"][backend]["sampled"]
    assert first == again
    assert first["token_ids"] != other["token_ids"]
    ids = [row[:n] for row, n in zip(first["token_ids"], first["lengths"])]
    # The same counter-based noise as keras_gpt.generate: the same draws.
    assert ids == served["refs"][backend]["sampled_ids"]


@ONCE
@pytest.mark.parametrize("backend", BACKENDS)
def test_tokenize_and_detokenize(served, backend):
    got, refs = served["results"][backend], served["refs"][backend]
    tokens = got["tokenize"]
    assert [row[:n] for row, n in zip(tokens["token_ids"],
                                      tokens["lengths"])] == refs["encoded"]
    assert tokens["lengths"][PROMPTS.index("")] == 0
    assert got["detokenize"]["texts"] == PROMPTS


@ONCE
def test_empty_and_invalid_utf8_prompts(served):
    # BPE (byte fallback): invalid bytes read as U+FFFD, like Python's
    # errors="replace"; an empty prompt starts from end-of-text.
    torch = served["results"]["torch"]["odd"]
    assert torch["completions"] == served["refs"]["torch"]["odd"]
    assert len(torch["completions"]) == 4
    # A character tokenizer without U+FFFD refuses them, clearly.
    jax = served["results"]["jax"]["odd"]
    assert "CharTokenizer: code points not in the vocabulary" in jax["error"]
    refused = served["refs"]["jax"]["odd"]  # keras_gpt.generate's error
    assert "not in the CharTokenizer vocabulary" in refused


@ONCE
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_generate_inputs_fail_clearly(served, backend):
    got = served["results"][backend]
    longest = max(max(len(r), 1) for r in served["refs"][backend]["encoded"])
    assert (f"The longest prompt ({longest} tokens) + max_new_tokens=32 = "
            f"{longest + 32} exceeds context_length=32") in \
        got["too_long"]["error"]
    assert (f"max_new_tokens=2147483647 = {longest + 2 ** 31 - 1} exceeds "
            "context_length=32") in got["huge"]["error"]
    assert "max_new_tokens=-3 is out of range: it must be >= 1" in \
        got["negative"]["error"]
    assert "top_p=1.5 is out of range: it must be in (0, 1]" in \
        got["bad_top_p"]["error"]
    assert "prompts is empty" in got["no_prompts"]["error"]


@ONCE
def test_saved_model_cli_shows_everything(served):
    code, out, err = served["show"]
    assert code == 0, err[-3000:]
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in out
    assert "inputs['prompts'] tensor_info" in out
    assert "outputs['completions'] tensor_info" in out


@ONCE
def test_cli_refuses_max_new_tokens_that_leave_no_room(served, tmp_path,
                                                       capsys):
    out = tmp_path / "served"
    assert main(["export", str(served["work"]["torch"] / "run"), str(out),
                 "--max-new-tokens", "32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-gpt export: error: --max-new-tokens 32 is "
                          "out of range: it must be an integer in [1, "
                          "context_length=32)")
    assert not out.exists()


# In-process export: versions, overwrite, failures, settings ----------------

@pytest.fixture(scope="module")
def tiny_model():
    from keras_gpt import GPT, GPTConfig
    from keras_gpt.tokenizers import ByteTokenizer

    config = GPTConfig(vocab_size=260, context_length=16, d_model=16,
                       n_layers=1, n_heads=2)
    return GPT(config), ByteTokenizer()


@IN_TENSORFLOW
def test_versions_overwrite_and_no_partial_version(tiny_model, tmp_path,
                                                   monkeypatch):
    import tensorflow as tf

    import keras_gpt
    from keras_gpt.serving import graph as serving

    model, tok = tiny_model
    base = tmp_path / "served"
    (base / "1").mkdir(parents=True)
    (base / "1" / "old.txt").write_text("version 1")
    (base / "7").mkdir()
    # The next version after the highest; model vocab 260 > tokenizer's 257.
    target = keras_gpt.export_saved_model(model, tok, base)
    assert target == base / "8"
    served = tf.saved_model.load(str(target))
    prompts = ["ab", "", b"\xffz"]
    out = served.signatures["serving_default"](prompts=tf.constant(prompts))
    lengths = out["lengths"].numpy().tolist()
    ids = [row[:n] for row, n in zip(out["token_ids"].numpy().tolist(),
                                     lengths)]
    expected = keras_gpt.generate(
        model, [[97, 98], [256], [239, 191, 189, 122]], temperature=0,
        max_new_tokens=8, eot_id=256)
    expected = [[i for i in row if i < 257] for row in expected]
    assert ids == expected  # ids the tokenizer lacks (257..259) are skipped
    assert all(0 <= i < 257 for row in ids for i in row)

    with pytest.raises(FileExistsError, match=r"already holds version 1: "
                                              r"pass overwrite=True"):
        keras_gpt.export_saved_model(model, tok, base, version=1)

    def broken(model, tokenizer, path, defaults):
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(serving, "save", broken)
    for version in (1, 9):
        with pytest.raises(RuntimeError, match="disk full"):
            keras_gpt.export_saved_model(model, tok, base, version=version,
                                         overwrite=True)
    with pytest.raises(RuntimeError, match="disk full"):
        keras_gpt.export_saved_model(model, tok, tmp_path / "new")
    assert sorted(p.name for p in base.iterdir()) == ["1", "7", "8"]
    assert (base / "1" / "old.txt").read_text() == "version 1"
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()

    assert keras_gpt.export_saved_model(model, tok, base, version=1,
                                        overwrite=True) == base / "1"
    assert (base / "1" / "saved_model.pb").is_file()
    assert not (base / "1" / "old.txt").exists()
    assert sorted(p.name for p in base.iterdir()) == ["1", "7", "8"]


@pytest.mark.parametrize("kwargs,message", [
    (dict(max_new_tokens=0), "max_new_tokens=0 is out of range: it must be "
                             "an integer in [1, context_length=16)"),
    (dict(max_new_tokens=16), "max_new_tokens=16 is out of range"),
    (dict(top_k=300), "top_k=300 is out of range: it must be an integer in "
                      "[0, vocab_size=260]"),
    (dict(temperature=-1.0), "temperature=-1.0 is invalid"),
    (dict(top_p=0.0), "top_p=0.0 is out of range"),
    (dict(version=-1), "version=-1 is out of range"),
])
def test_bad_export_settings(tiny_model, tmp_path, kwargs, message):
    import keras_gpt

    model, tok = tiny_model
    with pytest.raises(ValueError) as error:
        keras_gpt.export_saved_model(model, tok, tmp_path / "out", **kwargs)
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_tokenizer_larger_than_the_model_is_refused(tmp_path):
    import keras_gpt
    from keras_gpt import GPT, GPTConfig
    from keras_gpt.tokenizers import ByteTokenizer

    model = GPT(GPTConfig(vocab_size=100, context_length=8, d_model=8,
                          n_layers=1, n_heads=1))
    with pytest.raises(ValueError, match="vocab_size=257, more than the "
                                         "model's 100"):
        keras_gpt.export_saved_model(model, ByteTokenizer(), tmp_path)


# The command line: bad input, on every backend (nothing is exported) --------

def _fake_run(folder, model=True, tokenizer=True):
    folder.mkdir(parents=True)
    if model:
        (folder / "model.keras").write_bytes(b"never read")
    if tokenizer:
        (folder / "tokenizer").mkdir()
        (folder / "tokenizer" / "tokenizer.json").write_text("{}")
    return folder


@pytest.mark.parametrize("case,message", [
    ("missing", "Run directory {run} does not exist."),
    ("no model", "No model.keras in {run}: train one with `keras-gpt train "
                 "--out {run}`"),
    ("no tokenizer", "No tokenizer in {run}/tokenizer or {run}"),
    ("version exists", "{out}/3 already holds version 3: pass --overwrite "
                       "to replace it, or a --version other than 3."),
    ("out is a file", "{out} is a file, not a directory of SavedModel "
                      "versions"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, capsys, case, message):
    run, out = tmp_path / "run", tmp_path / "served"
    if case != "missing":
        _fake_run(run, model=case != "no model",
                  tokenizer=case != "no tokenizer")
    if case == "version exists":
        (out / "3").mkdir(parents=True)
        (out / "3" / "saved_model.pb").write_bytes(b"a model")
    if case == "out is a file":
        out.write_text("not a folder")
    assert main(["export", str(run), str(out), "--version", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-gpt export: error: ")
    assert "Traceback" not in err
    assert message.format(run=run, out=out) in err
    if case == "version exists":
        assert (out / "3" / "saved_model.pb").read_bytes() == b"a model"


@IN_TENSORFLOW
def test_benchmark_smoke():
    bench = load_tool("bench_export")
    # Raises unless the SavedModel's greedy text equals generate's.
    result = bench.run(bench.SMOKE, batch=2, prompt_tokens=5, new_tokens=4,
                       rounds=1)
    assert result["tokens"] == 8
    assert result["saved_model_tok_s"] > 0 and result["generate_tok_s"] > 0
    assert result["export_s"] > 0
