"""Export a GPT and its tokenizer as a SavedModel that serves text.

`export_saved_model(model, tokenizer, path)` writes TF Serving's layout,
`path/<version>/saved_model.pb` + `variables/`, whose signatures take
prompts and return generated text (`keras_gpt.serving.graph` builds the
graph).
`export_run(run_dir, path)` does the same for a run directory;
`keras-gpt export RUN_DIR OUT_DIR` calls it.

Any backend can export. The graph is built under Keras' TensorFlow backend;
in a process running another backend (a model trained on JAX or PyTorch),
the model's config and weights (backend-neutral) and the tokenizer are
saved to a temporary directory, and a subprocess, `python -m
keras_gpt.serving` with KERAS_BACKEND=tensorflow, rebuilds the model from
them and writes the export. It needs TensorFlow and Keras, not the training
backend. Its errors come back as the same exception types and messages.

A version is written to a temporary directory beside it, then renamed into
place: a failed export leaves no partial version, and TF Serving, which
polls `path` for versions, never sees half of one.
"""

import json
import numbers
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from keras_gpt.checkpoints import load_model, saved_gpt_config
from keras_gpt.config import GPTConfig
from keras_gpt.files import run_model_file, run_tokenizer_dir

DEFAULT_MAX_NEW_TOKENS = 64
INFO_FILE = "assets.extra/keras_gpt.json"
_MAX_VERSION = 2 ** 63 - 1  # TF Serving reads versions as int64
_OPTIONS = ("version", "overwrite", "max_new_tokens", "temperature", "top_k",
            "top_p")
# Errors the subprocess hands back as they are (others: RuntimeError).
_ERRORS = {e.__name__: e for e in (ValueError, FileNotFoundError,
                                   FileExistsError, NotADirectoryError)}


def export_saved_model(model, tokenizer, path, *, version=None,
                       overwrite=False, max_new_tokens=None, temperature=0.0,
                       top_k=0, top_p=1.0):
    """Writes `model` and `tokenizer` as a SavedModel version under `path`.

    Signatures (every batch and sequence size is dynamic):

    - `serving_default`: `prompts` (string, [batch]) -> `completions`
      (string, [batch]: the new text), `token_ids` (int32, [batch, n]: the
      new ids, padded with -1) and `lengths` (int32, [batch]). It uses this
      export's `max_new_tokens`, `temperature`, `top_k` and `top_p`
      (greedy by default; when sampling, a random seed per call).
    - `generate`: `prompts` and the scalars `max_new_tokens` (int32),
      `temperature` (float32, 0 is greedy), `top_k` (int32, 0 is off),
      `top_p` (float32, 1 is off) and `seed` (int64); same outputs.
    - `logits`: `token_ids` (int32, [batch, seq]) -> `logits` (float32,
      [batch, seq, vocab_size]).
    - `tokenize`: `texts` -> `token_ids` (padded with -1) and `lengths`;
      `detokenize`: `token_ids` (negative ids are padding) -> `texts`.

    Generation stops a row at end-of-text; an empty prompt starts from it;
    invalid UTF-8 in a prompt becomes U+FFFD. A prompt plus
    `max_new_tokens` past `context_length`, or a bad setting, fails the
    call with an assertion naming the value and the limit.

    A model with LoRA factors is exported merged (`GPT.merge_lora` on a
    copy); an int8 model keeps its int8 variables.

    Args:
        model: A `keras_gpt.GPT`, on any backend.
        tokenizer: Its `keras_gpt.tokenizers.Tokenizer`.
        path: The model's base directory (TF Serving's `--model_base_path`).
        version: The version directory's name, an integer >= 0; default:
            one more than the highest version in `path` (1 in a new one).
        overwrite: Replace an existing non-empty version directory.
        max_new_tokens: `serving_default`'s, in [1, context_length);
            default `min(64, context_length // 2)`.
        temperature: `serving_default`'s temperature (0 is greedy).
        top_k: `serving_default`'s top-k, in [0, vocab_size] (0 is off).
        top_p: `serving_default`'s top-p, in (0, 1] (1 is off).

    Returns:
        The version directory, a `Path`.

    Raises:
        ValueError: A bad setting (the message names value and limit), or
            a tokenizer with more ids than the model.
        FileExistsError: The version exists, is not empty, and `overwrite`
            is False.
        NotADirectoryError: `path` is a file.

    Example:

    ```python
    target = keras_gpt.export_saved_model(model, tokenizer, "served/gpt")
    served = tf.saved_model.load(str(target))
    served.signatures["serving_default"](prompts=tf.constant(["Once"]))
    ```
    """
    import keras

    defaults = _check_settings(model.config, tokenizer, max_new_tokens,
                               temperature, top_k, top_p)
    target = _version_dir(path, version, overwrite)
    model = _merged(model)
    if keras.backend.backend() == "tensorflow":
        return _write_version(target, lambda tmp: _write(
            model, tokenizer, tmp, defaults))
    with tempfile.TemporaryDirectory(prefix="keras_gpt_export_") as tmp:
        tmp = Path(tmp)
        (tmp / "model.json").write_text(json.dumps(
            keras.saving.serialize_keras_object(model)))
        model.save_weights(tmp / "model.weights.h5")
        tokenizer.save(tmp / "tokenizer")
        return _in_subprocess({"model_dir": str(tmp), "path": str(path),
                               "version": int(target.name),
                               "overwrite": overwrite, **defaults})


def export_run(run_dir, path, **kwargs):
    """`export_saved_model` of a run directory's `model.keras` and tokenizer.

    Outside the TensorFlow backend the model is not loaded here: the run
    directory goes to the TensorFlow subprocess as it is.

    Args:
        run_dir: A directory with `model.keras` and the tokenizer (in
            `run_dir/tokenizer` or `run_dir`), as `keras-gpt train` and
            `keras-gpt convert` write it.
        path: The model's base directory.
        **kwargs: `export_saved_model`'s keyword arguments.

    Returns:
        The version directory, a `Path`.

    Raises:
        FileNotFoundError: No run directory, `model.keras` or tokenizer.
        ValueError, FileExistsError, NotADirectoryError: As
            `export_saved_model`; also a damaged `model.keras`
            (`keras_gpt.checkpoints.CheckpointError`), found before
            anything is built.
    """
    import keras

    from keras_gpt.tokenizers import load_tokenizer

    unknown = sorted(set(kwargs) - set(_OPTIONS))
    if unknown:
        raise TypeError(f"export_run() got unexpected keyword arguments "
                        f"{unknown}; it takes {list(_OPTIONS)}.")
    model_file = run_model_file(run_dir)
    tokenizer_dir = run_tokenizer_dir(run_dir)
    target = _version_dir(path, kwargs.get("version"),
                          kwargs.get("overwrite", False))
    # Cheap checks before anything is built: the file is whole, and the
    # settings fit the saved model and the tokenizer.
    config = GPTConfig.from_dict(saved_gpt_config(model_file))
    tokenizer = load_tokenizer(tokenizer_dir)
    _check_settings(config, tokenizer, *(kwargs.get(k, d) for k, d in (
        ("max_new_tokens", None), ("temperature", 0.0), ("top_k", 0),
        ("top_p", 1.0))))
    if keras.backend.backend() != "tensorflow":
        return _in_subprocess({**kwargs, "run_dir": str(run_dir),
                               "path": str(path),
                               "version": int(target.name)})
    from keras_gpt.model import GPT

    model = load_model(model_file, compile=False, custom_objects={"GPT": GPT})
    return export_saved_model(model, tokenizer, path, **kwargs)


def _merged(model):
    """`model`, or a copy with its LoRA factors merged (the export serves
    the adapted model as plain, or int8, weights)."""
    if getattr(model, "lora_rank", None) is None:
        return model
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    copy.merge_lora()
    return copy


# Checks ----------------------------------------------------------------------

def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_settings(config, tokenizer, max_new_tokens, temperature, top_k,
                    top_p):
    """`serving_default`'s settings, checked; ValueError names the limit."""
    from keras_gpt.generation.samplers import SamplerSettings

    context, vocab = config.context_length, config.vocab_size
    if tokenizer.vocab_size > vocab:
        raise ValueError(
            f"The tokenizer has vocab_size={tokenizer.vocab_size}, more than "
            f"the model's {vocab}: they are not from the same run.")
    if max_new_tokens is None:
        max_new_tokens = max(1, min(DEFAULT_MAX_NEW_TOKENS, context // 2))
    if not _is_int(max_new_tokens) or not 1 <= max_new_tokens < context:
        raise ValueError(
            f"max_new_tokens={max_new_tokens!r} is out of range: it must be "
            f"an integer in [1, context_length={context}) so that a prompt "
            "fits beside it.")
    if not _is_int(top_k) or not 0 <= top_k <= vocab:
        raise ValueError(f"top_k={top_k!r} is out of range: it must be an "
                         f"integer in [0, vocab_size={vocab}] (0 is off).")
    SamplerSettings(temperature, top_k or None, top_p).validate(vocab)
    return {"max_new_tokens": int(max_new_tokens),
            "temperature": float(temperature), "top_k": int(top_k),
            "top_p": float(top_p)}


def _version_dir(path, version, overwrite):
    """The version directory to write, checked (nothing is created)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a directory of "
                                 "SavedModel versions.")
    if version is None:
        found = [int(p.name) for p in path.iterdir()
                 if p.name.isdigit()] if path.is_dir() else []
        version = max(found, default=0) + 1
    elif not _is_int(version) or not 0 <= version <= _MAX_VERSION:
        raise ValueError(f"version={version!r} is out of range: TF Serving "
                         "versions are integers in [0, 2**63 - 1].")
    target = path / str(int(version))
    occupied = target.exists() and (not target.is_dir()
                                    or any(target.iterdir()))
    if occupied and not overwrite:
        raise FileExistsError(
            f"{target} already holds version {version}: pass "
            "overwrite=True to replace it, or a version= other than "
            f"{version}.")
    return target


# Writing ---------------------------------------------------------------------

def _write(model, tokenizer, directory, defaults):
    """The SavedModel and `assets.extra/keras_gpt.json` (what it holds)."""
    import keras

    from keras_gpt.serving import graph
    from keras_gpt.version import __version__

    graph.save(model, tokenizer, directory, defaults)
    info = {"keras_gpt": __version__, "keras": keras.__version__,
            "config": model.config.to_dict(),
            "tokenizer": {"kind": tokenizer.kind,
                          "vocab_size": tokenizer.vocab_size,
                          "eot_id": tokenizer.eot_id},
            "serving_default": defaults,
            "signatures": list(graph.SIGNATURES)}
    info_file = Path(directory) / INFO_FILE
    info_file.parent.mkdir(exist_ok=True)
    info_file.write_text(json.dumps(info, indent=2))


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _write_version(target, write):
    """`write(tmp)` on a fresh directory beside `target`, renamed onto it."""
    base = target.parent
    created = not base.exists()
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{os.getpid()}-{target.name}"
    old = base / f".old-{os.getpid()}-{target.name}"
    _remove(tmp)
    try:
        write(tmp)
        if target.exists() or target.is_symlink():
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        if (old.exists() or old.is_symlink()) and not target.exists():
            os.replace(old, target)
        if created and not any(base.iterdir()):
            base.rmdir()
        raise
    _remove(old)
    return target


# The TensorFlow subprocess ---------------------------------------------------

def _in_subprocess(job):
    """Runs `job` with `python -m keras_gpt.serving` under TensorFlow."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-m", "keras_gpt.serving",
                           json.dumps(job)], env=env, capture_output=True,
                          text=True)
    lines = [line for line in done.stdout.splitlines()
             if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    if done.returncode == 0 and "target" in result:
        return Path(result["target"])
    if result.get("error") in _ERRORS:
        raise _ERRORS[result["error"]](result["message"])
    raise RuntimeError(f"The TensorFlow export subprocess failed (exit "
                       f"{done.returncode}):\n{done.stderr[-4000:]}")


def _run_job(job):
    """The subprocess's side of `_in_subprocess` (TensorFlow backend)."""
    import keras

    from keras_gpt.tokenizers import load_tokenizer

    job = dict(job)
    path = job.pop("path")
    if "run_dir" in job:
        return export_run(job.pop("run_dir"), path, **job)
    from keras_gpt.model import GPT

    folder = Path(job.pop("model_dir"))
    model = keras.saving.deserialize_keras_object(
        json.loads((folder / "model.json").read_text()),
        custom_objects={"GPT": GPT})
    model.load_weights(folder / "model.weights.h5")
    return export_saved_model(model, load_tokenizer(folder / "tokenizer"),
                              path, **job)


def _main(argv):
    if len(argv) != 1:
        print("Usage: python -m keras_gpt.serving JOB_JSON (used by "
              "keras_gpt.export_saved_model; see keras-gpt export).",
              file=sys.stderr)
        return 2
    try:
        target = _run_job(json.loads(argv[0]))
    except tuple(_ERRORS.values()) as error:
        kind = next(n for n, e in _ERRORS.items() if isinstance(error, e))
        print(json.dumps({"error": kind, "message": str(error)}))
        return 1
    print(json.dumps({"target": str(target)}))
    return 0

