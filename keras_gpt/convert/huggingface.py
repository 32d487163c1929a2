"""Hugging Face GPT-2 folders <-> `keras_gpt.GPT`.

A Hugging Face GPT-2 folder holds `config.json`, the weights
(`model.safetensors`, a sharded `model.safetensors.index.json`, or
`pytorch_model.bin`) and the tokenizer (`vocab.json`, `merges.txt`).
Hugging Face's `Conv1D` stores kernels as (in, out), the layout of a Keras
`Dense` kernel, and `c_attn` is (d_model, 3 * d_model) in q, k, v order with
heads contiguous: our fused `qkv` kernel exactly. So the weights map one to
one, untransposed; only an untied `lm_head.weight` (vocab, d_model) is
transposed into our `unembedding/kernel`.
"""

import json
import warnings
from pathlib import Path

import numpy as np

from keras_gpt.config import GPTConfig
from keras_gpt.convert._checkpoint import CheckpointTensors
from keras_gpt.convert._common import (ConversionError, assign_all,
                                       check_shape, model_weights, to_numpy,
                                       write_folder_atomically)

# Hugging Face activation names -> ours. Our GELU is the tanh approximation;
# "gelu" in transformers is the exact (erf) one, so it is refused.
HF_ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
                  "relu": "relu"}
# Options that change the numerics in ways GPT cannot represent:
# name -> the value GPT computes.
UNSUPPORTED_OPTIONS = {"scale_attn_by_inverse_layer_idx": False,
                       "reorder_and_upcast_attn": False,
                       "scale_attn_weights": True,
                       "add_cross_attention": False}
SPECIAL_TOKEN = "<|endoftext|>"


def config_from_huggingface(hf, source="config.json", dropout=0.0):
    """A `GPTConfig` from a Hugging Face GPT-2 config dict.

    Args:
        hf: The parsed `config.json`.
        source: The file name used in error messages.
        dropout: Our dropout rate (Hugging Face's `*_pdrop` only act in
            training and our model has no attention dropout, so they are not
            copied).

    Raises:
        ConversionError: another architecture, an unknown activation, or an
            option GPT cannot represent.

    Example:

    ```python
    config_from_huggingface({"model_type": "gpt2", "n_embd": 768,
                             "n_layer": 12, "n_head": 12,
                             "n_positions": 1024, "vocab_size": 50257})
    ```
    """
    model_type = hf.get("model_type")
    if model_type != "gpt2":
        raise ConversionError(
            f"{source}: model_type is {model_type!r} (architectures "
            f"{hf.get('architectures')}); only GPT-2 ('gpt2') checkpoints "
            "can be converted.")
    for key, ours in UNSUPPORTED_OPTIONS.items():
        if bool(hf.get(key, ours)) != ours:
            raise ConversionError(
                f"{source}: {key}={hf[key]!r} is not supported (keras_gpt "
                f"computes {key}={ours}); refusing to load it wrong.")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in HF_ACTIVATIONS:
        hint = (" ('gelu' is the exact erf GELU; keras_gpt's GELU is the tanh "
                "approximation, 'gelu_new')" if activation == "gelu" else "")
        raise ConversionError(
            f"{source}: activation_function {activation!r} is not supported"
            f"{hint}; supported: {sorted(HF_ACTIVATIONS)}.")
    missing = [k for k in ("vocab_size", "n_embd", "n_layer", "n_head",
                           "n_positions") if hf.get(k) is None]
    if missing:
        raise ConversionError(f"{source}: missing {missing}.")
    d_model, n_heads = hf["n_embd"], hf["n_head"]
    if d_model % n_heads:
        raise ConversionError(f"{source}: n_embd={d_model} is not divisible "
                              f"by n_head={n_heads}.")
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"], context_length=hf["n_positions"],
            d_model=d_model, n_layers=hf["n_layer"], n_heads=n_heads,
            d_mlp=hf.get("n_inner") or 4 * d_model,
            activation=HF_ACTIVATIONS[activation],
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            dropout=dropout,
            layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-5)))
    except ValueError as error:
        raise ConversionError(f"{source}: {error}") from error


def config_to_huggingface(config, eot_id=None):
    """The Hugging Face `config.json` dict of a `GPTConfig`.

    Raises:
        ConversionError: a config GPT-2 cannot express (rotary or sinusoidal
            positions, no biases, n_heads * d_head != d_model).
    """
    reasons = []
    if config.positions != "learned":
        reasons.append(f"positions={config.positions!r} (GPT-2 has learned "
                       "positions)")
    if not config.use_bias:
        reasons.append("use_bias=False (GPT-2 has biases)")
    if config.d_attention != config.d_model:
        reasons.append(f"n_heads * d_head = {config.d_attention} != d_model "
                       f"= {config.d_model}")
    if reasons:
        raise ConversionError("This model cannot be written as GPT-2: "
                              + "; ".join(reasons) + ".")
    activation = {"gelu": "gelu_new", "relu": "relu"}[config.activation]
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.context_length,
        "n_embd": config.d_model, "n_layer": config.n_layers,
        "n_head": config.n_heads, "n_inner": config.d_mlp,
        "activation_function": activation,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
        "attn_pdrop": 0.0, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "add_cross_attention": False,
        "tie_word_embeddings": config.tie_embeddings, "use_cache": True,
        "bos_token_id": eot_id, "eos_token_id": eot_id,
        "dtype": "float32",
    }


def weight_table(config):
    """`[(our path, Hugging Face name, expected HF shape, transpose)]`."""
    c = config
    d, inner, width = c.d_model, c.d_mlp, c.d_attention
    rows = [("token_embedding/embeddings", "wte.weight", (c.vocab_size, d)),
            ("position_embedding/embeddings", "wpe.weight",
             (c.context_length, d))]
    for i in range(c.n_layers):
        ours, hf = f"block_{i}/", f"h.{i}."
        rows += [
            (ours + "ln1/gamma", hf + "ln_1.weight", (d,)),
            (ours + "ln1/beta", hf + "ln_1.bias", (d,)),
            (ours + "attention/qkv/kernel", hf + "attn.c_attn.weight",
             (d, 3 * width)),
            (ours + "attention/qkv/bias", hf + "attn.c_attn.bias",
             (3 * width,)),
            (ours + "attention/out/kernel", hf + "attn.c_proj.weight",
             (width, d)),
            (ours + "attention/out/bias", hf + "attn.c_proj.bias", (d,)),
            (ours + "ln2/gamma", hf + "ln_2.weight", (d,)),
            (ours + "ln2/beta", hf + "ln_2.bias", (d,)),
            (ours + "mlp/up/kernel", hf + "mlp.c_fc.weight", (d, inner)),
            (ours + "mlp/up/bias", hf + "mlp.c_fc.bias", (inner,)),
            (ours + "mlp/down/kernel", hf + "mlp.c_proj.weight", (inner, d)),
            (ours + "mlp/down/bias", hf + "mlp.c_proj.bias", (d,)),
        ]
    rows += [("final_norm/gamma", "ln_f.weight", (d,)),
             ("final_norm/beta", "ln_f.bias", (d,))]
    table = [(ours, "transformer." + hf, shape, False)
             for ours, hf, shape in rows]
    if not c.tie_embeddings:
        table.append(("unembedding/kernel", "lm_head.weight",
                      (c.vocab_size, d), True))
    return table


TOKENIZER_FILES = ("vocab.json", "merges.txt")


def missing_tokenizer_files(path):
    """The GPT-2 tokenizer files absent from a folder (a list of names)."""
    return [n for n in TOKENIZER_FILES if not (Path(path) / n).is_file()]


def from_huggingface(path, dropout=0.0, warn=True):
    """Loads a local Hugging Face GPT-2 folder as `(GPT, GPT2Tokenizer)`.

    Safetensors are read with NumPy (no torch); `pytorch_model.bin` needs
    torch. Everything is checked before any weight is created: the
    architecture and options in `config.json`, every tensor's presence and
    shape. A folder without the tokenizer's files (what `save_pretrained`
    on the model alone writes) still gives the model, with tokenizer None
    and a warning naming the missing files.

    Args:
        path: Folder with `config.json`, the weights, and (for the
            tokenizer) `vocab.json` and `merges.txt`.
        dropout: Dropout rate of the returned model (for fine-tuning).
        warn: Warn when the tokenizer files are missing.

    Returns:
        `(model, tokenizer)`: a float32 `keras_gpt.GPT` whose logits equal
        `GPT2LMHeadModel`'s, and a `GPT2Tokenizer` (or None).

    Raises:
        FileNotFoundError: a missing file.
        ConversionError: another architecture, an unsupported option or
            activation, a missing, truncated or misshapen tensor (the message
            names the file and the tensor).

    Example:

    ```python
    model, tokenizer = from_huggingface("gpt2-folder")
    keras_gpt.generate(model, "Hello", tokenizer=tokenizer,
                       max_new_tokens=20, temperature=0)
    ```
    """
    from keras_gpt.model import GPT
    from keras_gpt.tokenizers import GPT2Tokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder.")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"No config.json in {folder}.")
    try:
        hf = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ConversionError(f"{config_path}: not valid JSON ({error}).") \
            from error
    config = config_from_huggingface(hf, str(config_path), dropout=dropout)
    missing = missing_tokenizer_files(folder)
    tokenizer = None
    if missing and warn:
        warnings.warn(f"{folder} has no tokenizer files (missing "
                      f"{', '.join(missing)}): the model is converted "
                      "without its tokenizer.", stacklevel=2)
    if not missing:
        try:
            tokenizer = GPT2Tokenizer.from_files(folder / "vocab.json",
                                                 folder / "merges.txt")
        except (ValueError, KeyError) as error:
            raise ConversionError(f"{folder / 'vocab.json'}: {error}") \
                from error
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise ConversionError(
            f"{folder / 'vocab.json'}: {tokenizer.vocab_size} tokens, more "
            f"than vocab_size={config.vocab_size} in {config_path}.")

    tensors = CheckpointTensors(folder)
    arrays = {}
    for ours, hf_name, shape, transpose in weight_table(config):
        array = tensors.get(hf_name)
        check_shape(tensors.source(hf_name), hf_name, array, shape)
        arrays[ours] = array.T if transpose else array
    model = GPT(config)
    assign_all(model, arrays)
    return model, tokenizer


# Writing ---------------------------------------------------------------------


def to_huggingface(model, tokenizer, path):
    """Writes `model` (and tokenizer) as a Hugging Face GPT-2 folder.

    The folder holds `config.json`, `generation_config.json`,
    `model.safetensors` (float32) and, with a tokenizer, `vocab.json`,
    `merges.txt` and `tokenizer_config.json`:
    `transformers.GPT2LMHeadModel.from_pretrained(path)` and
    `GPT2TokenizerFast.from_pretrained(path)` load it. It is written to a
    temporary folder renamed into place, so `path` holds either all of it or
    nothing.

    Args:
        model: A `keras_gpt.GPT` with learned positions and biases.
        tokenizer: A `GPT2Tokenizer`, or None to write the model only.
        path: A new (or empty) folder.

    Returns:
        `path` as a `Path`.

    Raises:
        ConversionError: the model or tokenizer has no GPT-2 equivalent, or
            `path` holds files.

    Example:

    ```python
    to_huggingface(model, tokenizer, "exported")
    hf = transformers.GPT2LMHeadModel.from_pretrained("exported")
    ```
    """
    from safetensors.numpy import save_file

    from keras_gpt.tokenizers import GPT2Tokenizer

    if tokenizer is not None and not isinstance(tokenizer, GPT2Tokenizer):
        raise ConversionError(
            f"Only a GPT2Tokenizer can be written for Hugging Face; got "
            f"{type(tokenizer).__name__} (pass tokenizer=None to write the "
            "model alone).")
    config = model.config
    eot_id = None if tokenizer is None else tokenizer.eot_id
    hf_config = config_to_huggingface(config, eot_id)
    variables = model_weights(model)
    tensors = {}
    for ours, hf_name, _, transpose in weight_table(config):
        array = to_numpy(variables[ours])
        tensors[hf_name] = np.ascontiguousarray(array.T if transpose
                                                else array)

    def write(folder):
        save_file(tensors, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(hf_config, indent=2))
        generation = {"bos_token_id": eot_id, "eos_token_id": eot_id}
        (folder / "generation_config.json").write_text(
            json.dumps(generation, indent=2))
        if tokenizer is not None:
            (folder / "vocab.json").write_text(
                json.dumps(tokenizer.vocab, ensure_ascii=False),
                encoding="utf-8")
            (folder / "merges.txt").write_text(
                "#version: 0.2\n" + "\n".join(tokenizer.merges) + "\n",
                encoding="utf-8")
            eot = next(t for t, i in tokenizer.vocab.items()
                       if i == tokenizer.eot_id)
            (folder / "tokenizer_config.json").write_text(json.dumps({
                "tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False,
                "bos_token": eot, "eos_token": eot, "unk_token": eot,
                "model_max_length": config.context_length}, indent=2))

    return write_folder_atomically(path, write)
