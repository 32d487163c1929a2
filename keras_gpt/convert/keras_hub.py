"""KerasHub `GPT2Backbone` / `GPT2CausalLM` <-> `keras_gpt.GPT`.

KerasHub splits attention into per-head `query`, `key`, `value` kernels
(d_model, n_heads, d_head) and an `attention_output` kernel (n_heads, d_head,
d_model); ours is one fused `qkv` kernel (d_model, 3 * n_heads * d_head) in
q, k, v order with heads contiguous, so the conversion is reshapes and
concatenations, no arithmetic. Both use pre-LayerNorm blocks, tanh GELU,
learned positions and W_U tied to W_E.
"""

import numpy as np

from keras_gpt.config import GPTConfig
from keras_gpt.convert._common import (ConversionError, assign_all,
                                       check_shape, model_weights, to_numpy)

_PAIRS = (("ln1", "self_attention_layer_norm"),
          ("ln2", "feedforward_layer_norm"),
          ("mlp/up", "feedforward_intermediate_dense"),
          ("mlp/down", "feedforward_output_dense"))


def _kinds(layer):
    return ("gamma", "beta") if layer.startswith("ln") else ("kernel", "bias")


def _hub_weights(backbone):
    return {v.path.split("/", 1)[1] if v.path.startswith(backbone.name + "/")
            else v.path: v for v in backbone.weights}


def from_keras_hub(model, dropout=0.0):
    """A `keras_gpt.GPT` (and tokenizer) with a KerasHub GPT-2's weights.

    Args:
        model: A `keras_hub.models.GPT2Backbone` or `GPT2CausalLM`.
        dropout: Dropout rate of the returned model.

    Returns:
        `(gpt, tokenizer)`: the tokenizer is a `GPT2Tokenizer` built from the
        causal LM's preprocessor, or None when there is none (a backbone).

    Raises:
        ConversionError: not a GPT-2 backbone, or a weight of another shape.

    Example:

    ```python
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=300, num_layers=2, num_heads=2, hidden_dim=32,
        intermediate_dim=64, max_sequence_length=16)
    gpt, _ = from_keras_hub(backbone)
    ```
    """
    from keras_gpt.model import GPT
    from keras_gpt.tokenizers import GPT2Tokenizer

    backbone = getattr(model, "backbone", model)
    if type(backbone).__name__ != "GPT2Backbone":
        raise ConversionError(f"Expected a KerasHub GPT2Backbone or "
                              f"GPT2CausalLM; got {type(model).__name__}.")
    config = GPTConfig(
        vocab_size=backbone.vocabulary_size,
        context_length=backbone.max_sequence_length,
        d_model=backbone.hidden_dim, n_layers=backbone.num_layers,
        n_heads=backbone.num_heads, d_mlp=backbone.intermediate_dim,
        dropout=dropout)
    hub = {path: to_numpy(v) for path, v in _hub_weights(backbone).items()}

    def get(name, shape):
        if name not in hub:
            raise ConversionError(f"{backbone.name}: weight {name!r} is "
                                  "missing.")
        check_shape(backbone.name, name, hub[name], shape)
        return hub[name]

    c = config
    d, h, dh = c.d_model, c.n_heads, c.d_head
    arrays = {"token_embedding/embeddings":
              get("token_embedding/embeddings", (c.vocab_size, d)),
              "position_embedding/embeddings":
              get("position_embedding/embeddings", (c.context_length, d)),
              "final_norm/gamma": get("layer_norm/gamma", (d,)),
              "final_norm/beta": get("layer_norm/beta", (d,))}
    for i in range(c.n_layers):
        ours, theirs = f"block_{i}/", f"transformer_layer_{i}/"
        att = theirs + "self_attention/"
        arrays[ours + "attention/qkv/kernel"] = np.concatenate(
            [get(att + f"{n}/kernel", (d, h, dh)).reshape(d, h * dh)
             for n in ("query", "key", "value")], axis=1)
        arrays[ours + "attention/qkv/bias"] = np.concatenate(
            [get(att + f"{n}/bias", (h, dh)).reshape(-1)
             for n in ("query", "key", "value")])
        arrays[ours + "attention/out/kernel"] = get(
            att + "attention_output/kernel", (h, dh, d)).reshape(h * dh, d)
        arrays[ours + "attention/out/bias"] = get(
            att + "attention_output/bias", (d,))
        inner = c.d_mlp
        shapes = {"ln1": ((d,), (d,)), "ln2": ((d,), (d,)),
                  "mlp/up": ((d, inner), (inner,)),
                  "mlp/down": ((inner, d), (d,))}
        for mine, hubs in _PAIRS:
            kinds = _kinds(mine)
            for kind, shape in zip(kinds, shapes[mine]):
                arrays[f"{ours}{mine}/{kind}"] = get(
                    f"{theirs}{hubs}/{kind}", shape)
    gpt = GPT(config)
    assign_all(gpt, arrays)

    tokenizer = None
    hub_tokenizer = getattr(getattr(model, "preprocessor", None),
                            "tokenizer", None)
    if hub_tokenizer is not None and getattr(hub_tokenizer, "vocabulary",
                                             None) is not None:
        tokenizer = GPT2Tokenizer(dict(hub_tokenizer.vocabulary),
                                  list(hub_tokenizer.merges))
    return gpt, tokenizer


def to_keras_hub(model, dropout=0.0):
    """A KerasHub `GPT2Backbone` with the weights of a `keras_gpt.GPT`.

    Args:
        model: A `GPT` with GPT-2's shape: learned positions, biases, tied
            embeddings, tanh GELU, LayerNorm epsilon 1e-5, n_heads * d_head
            == d_model.
        dropout: The backbone's dropout rate.

    Returns:
        A `keras_hub.models.GPT2Backbone` whose sequence output, multiplied
        by the token embeddings transposed, gives the same logits.

    Raises:
        ConversionError: a model KerasHub's GPT-2 cannot express.

    Example:

    ```python
    backbone = to_keras_hub(GPT(GPTConfig.from_preset("tiny")))
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone)
    ```
    """
    import keras_hub

    c = model.config
    reasons = []
    if c.positions != "learned":
        reasons.append(f"positions={c.positions!r}")
    if not c.use_bias:
        reasons.append("use_bias=False")
    if not c.tie_embeddings:
        reasons.append("untied embeddings")
    if c.activation != "gelu":
        reasons.append(f"activation={c.activation!r}")
    if c.layer_norm_epsilon != 1e-5:
        reasons.append(f"layer_norm_epsilon={c.layer_norm_epsilon}")
    if c.d_attention != c.d_model:
        reasons.append(f"n_heads * d_head = {c.d_attention} != d_model")
    if reasons:
        raise ConversionError("KerasHub's GPT2Backbone cannot express this "
                              "model: " + "; ".join(reasons) + ".")
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=c.vocab_size, num_layers=c.n_layers,
        num_heads=c.n_heads, hidden_dim=c.d_model, intermediate_dim=c.d_mlp,
        dropout=dropout, max_sequence_length=c.context_length)
    ours = {path: to_numpy(v) for path, v in model_weights(model).items()}
    d, h, dh = c.d_model, c.n_heads, c.d_head
    values = {"token_embedding/embeddings": ours["token_embedding/embeddings"],
              "position_embedding/embeddings":
              ours["position_embedding/embeddings"],
              "layer_norm/gamma": ours["final_norm/gamma"],
              "layer_norm/beta": ours["final_norm/beta"]}
    for i in range(c.n_layers):
        mine, theirs = f"block_{i}/", f"transformer_layer_{i}/"
        att = theirs + "self_attention/"
        kernel = ours[mine + "attention/qkv/kernel"].reshape(d, 3, h, dh)
        bias = ours[mine + "attention/qkv/bias"].reshape(3, h, dh)
        for j, n in enumerate(("query", "key", "value")):
            values[att + f"{n}/kernel"] = kernel[:, j]
            values[att + f"{n}/bias"] = bias[j]
        values[att + "attention_output/kernel"] = ours[
            mine + "attention/out/kernel"].reshape(h, dh, d)
        values[att + "attention_output/bias"] = ours[
            mine + "attention/out/bias"]
        for a, b in _PAIRS:
            for k in _kinds(a):
                values[f"{theirs}{b}/{k}"] = ours[f"{mine}{a}/{k}"]
    variables = _hub_weights(backbone)
    missing = sorted(set(variables) - set(values))
    if missing:
        raise AssertionError(f"KerasHub weights not mapped: {missing}")
    for path, variable in variables.items():
        check_shape("GPT2Backbone", path, values[path], variable.shape)
        variable.assign(np.ascontiguousarray(values[path]))
    return backbone


def load_keras_hub(source):
    """A KerasHub GPT-2 from a preset (folder or cached name) or a `.keras`
    file: the `GPT2CausalLM` when the preset has one (it holds the
    tokenizer), else the `GPT2Backbone`.

    Raises:
        CheckpointError: a damaged `.keras` file (one line naming it).
        ConversionError: a preset that is not a KerasHub GPT-2.
    """
    import keras_hub

    from keras_gpt.checkpoints import load_model

    if str(source).endswith(".keras"):
        return load_model(source)
    try:
        return keras_hub.models.GPT2CausalLM.from_preset(source)
    except Exception:  # a backbone-only preset
        pass
    try:
        return keras_hub.models.GPT2Backbone.from_preset(source)
    except Exception as error:
        first = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise ConversionError(f"{source} cannot be loaded as a KerasHub GPT-2 "
                              f"preset: {first}") from None
