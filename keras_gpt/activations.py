"""Activations by name: the forward pass with points where values are kept or
replaced (TransformerLens' hook points, under its names without `hook_`).

`GPT.call` stays as it is (fused or block-wise attention, no names): the
named pass is a second walk through the same layers and weights, with the
attention written out so that its scores and pattern exist. It runs only
when `GPT.run_with_cache` or `GPT.run_with_hooks` is called, so training and
decoding pay nothing for it.

Names, in forward order (per block i):

| name | shape |
|---|---|
| `embed`, `pos_embed` | (batch, pos, d_model) (`pos_embed`: learned or sinusoidal positions) |
| `blocks.{i}.resid_pre` | (batch, pos, d_model) |
| `blocks.{i}.attn.q`, `.k`, `.v` | (batch, pos, head, d_head) (before rotary) |
| `blocks.{i}.attn.scores` | (batch, head, query, key): scaled, future masked |
| `blocks.{i}.attn.pattern` | (batch, head, query, key): softmax of the scores |
| `blocks.{i}.attn.z` | (batch, pos, head, d_head): the pattern times v |
| `blocks.{i}.attn.result` | (batch, pos, head, d_model): each head through its rows of W_O (no bias) |
| `blocks.{i}.attn_out`, `resid_mid` | (batch, pos, d_model) |
| `blocks.{i}.mlp.pre`, `.post` | (batch, pos, d_mlp): before and after the nonlinearity |
| `blocks.{i}.mlp_out`, `resid_post` | (batch, pos, d_model) |
| `ln_final` | (batch, pos, d_model): the final LayerNorm's output, the input of W_U |
"""

import collections
import math

import numpy as np
from keras import ops

from keras_gpt.backend import compile_inference
from keras_gpt.backend import check_token_ids

BLOCK_POINTS = ("resid_pre", "attn.q", "attn.k", "attn.v", "attn.scores",
                "attn.pattern", "attn.z", "attn.result", "attn_out",
                "resid_mid", "mlp.pre", "mlp.post", "mlp_out", "resid_post")

# Compiled programs kept per model (most recently used last).
_PROGRAMS_PER_MODEL = 8


def hook_names(model):
    """Every activation name of `model`, in the order the pass reaches them."""
    names = ["embed"]
    if model.position_embedding is not None:
        names.append("pos_embed")
    for i in range(model.config.n_layers):
        names += [f"blocks.{i}.{point}" for point in BLOCK_POINTS]
    return names + ["ln_final"]


def check_name(model, name):
    """Raise a ValueError naming `name` and what is valid, unless it is one."""
    if name in hook_names(model):
        return
    layers = model.config.n_layers
    parts = str(name).split(".")
    if (len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit()
            and ".".join(parts[2:]) in BLOCK_POINTS):
        raise ValueError(f"Layer {parts[1]} in {name!r} is out of range: the "
                         f"model has {layers} blocks (0..{layers - 1}).")
    tops = ", ".join(n for n in hook_names(model) if "." not in n)
    raise ValueError(
        f"Unknown activation name {name!r}. Valid names: {tops}, and "
        f"blocks.{{i}}.{{{', '.join(BLOCK_POINTS)}}} for i in "
        f"0..{layers - 1}.")


def select_names(model, names):
    """`names` (None: all; a list; or a predicate name -> bool) as a tuple of
    valid names in forward order."""
    every = hook_names(model)
    if names is None:
        return tuple(every)
    if callable(names):
        return tuple(n for n in every if names(n))
    if isinstance(names, str):
        names = [names]
    for name in names:
        check_name(model, name)
    wanted = set(names)
    return tuple(n for n in every if n in wanted)


def run(model, token_ids, names=(), hooks=None, hook_args=None):
    """The named pass, compiled: `(logits, cache)`.

    Args:
        model: A `GPT`.
        token_ids: int (batch, seq) ids (a NumPy array or tensor).
        names: What to keep (see `select_names`); only these are returned,
            and nothing else outlives the compiled program.
        hooks: `{name: fn}`; `fn(value)` returns the value to carry on with
            (same shape), or, when `hook_args` is given, `fn(value,
            hook_args)`.
        hook_args: Tensors (any nesting) passed to the program at run time,
            so hooks that differ only in these values share one compiled
            program (activation patching runs one program many times).

    Returns:
        float32 logits (batch, seq, vocab) and a dict name -> tensor.

    Raises:
        ValueError: an unknown name or a layer out of range (the message
            lists the valid names), bad token ids, or a hook whose value
            changes shape.
    """
    keep = select_names(model, names)
    hooks = dict(hooks or {})
    for name in hooks:
        check_name(model, name)
    if not hasattr(token_ids, "shape"):
        token_ids = np.asarray(token_ids)
    token_ids = ops.convert_to_tensor(token_ids)
    model._check_length(token_ids, 0)
    check_token_ids(token_ids, model.config.vocab_size)
    token_ids = ops.cast(token_ids, "int32")
    with_args = hook_args is not None
    program = _program(model, keep, hooks, with_args)
    logits, cache = (program(token_ids, hook_args) if with_args
                     else program(token_ids))
    return logits, {name: cache[name] for name in keep}  # forward order


def compiled(model, fn):
    """`fn(model, *args)` compiled (`compile_inference`), built once per
    model and `fn`: for readings of the cache such as the logit lens."""
    programs = _programs(model)
    key = ("fn", fn)
    if key not in programs:
        programs[key] = compile_inference(
            model, lambda *a: fn(model, *a), inference_mode=False)
        _forget_oldest(programs)
    programs.move_to_end(key)
    return programs[key]


def _programs(model):
    programs = model.__dict__.get("_activation_programs")
    if programs is None:
        # Set past Keras' attribute tracking: compiled functions are no
        # state of the model (not saved, not weights).
        programs = collections.OrderedDict()
        object.__setattr__(model, "_activation_programs", programs)
    return programs


def _forget_oldest(programs):
    while len(programs) > _PROGRAMS_PER_MODEL:
        programs.popitem(last=False)


def _program(model, keep, hooks, with_args):
    """The compiled pass for these names and hooks, built once and reused
    while the same hook functions are passed."""
    programs = _programs(model)
    # The hook functions themselves are in the key (not their ids), so a
    # new function never reuses a program compiled around an old one.
    key = (keep, tuple(hooks.items()), with_args)
    if key in programs:
        programs.move_to_end(key)
        return programs[key]

    def program(token_ids, args=None):
        points = _Points(keep, hooks, args if with_args else _NO_ARGS)
        logits = forward(model, token_ids, points)
        return logits, points.cache

    compiled = compile_inference(model, program, inference_mode=False)
    programs[key] = compiled
    _forget_oldest(programs)
    return compiled


_NO_ARGS = object()


class _Points:
    """Where a value passes a name: replaced by its hook, kept if asked."""

    def __init__(self, keep, hooks, args):
        self.keep = frozenset(keep)
        self.hooks = hooks
        self.args = args
        self.cache = {}

    def wanted(self, name):
        return name in self.keep or name in self.hooks

    def __call__(self, name, value):
        hook = self.hooks.get(name)
        if hook is not None:
            new = hook(value) if self.args is _NO_ARGS else hook(value,
                                                                 self.args)
            new = ops.convert_to_tensor(new)
            if tuple(new.shape) != tuple(value.shape):
                raise ValueError(
                    f"The hook on {name!r} returned shape "
                    f"{tuple(new.shape)}; it must return the shape it was "
                    f"given, {tuple(value.shape)}.")
            value = ops.cast(new, value.dtype)
        if name in self.keep:
            self.cache[name] = value
        return value


def forward(model, token_ids, points):
    """GPT's forward pass (no dropout) through `points`; returns logits."""
    c = model.config
    tokens = points("embed", model.token_embedding(token_ids))
    x = tokens
    if model.position_embedding is not None:
        positions = model.position_embedding(tokens)
        if points.wanted("pos_embed"):
            positions = points("pos_embed",
                               ops.broadcast_to(positions, ops.shape(tokens)))
        x = tokens + positions
    for i, block in enumerate(model.blocks):
        x = _block(block, f"blocks.{i}.", x, points, c)
    final = points("ln_final", model.final_norm(x))
    if not c.tie_embeddings:
        return model.unembedding(final)
    return model.unembedding(  # an int8 W_E comes with its scales
        final, embeddings=model.token_embedding.embeddings,
        embeddings_scale=getattr(model.token_embedding, "embeddings_scale",
                                 None))


def _block(block, prefix, x, points, c):
    attention = block.attention
    x = points(prefix + "resid_pre", x)
    batch, length = ops.shape(x)[0], ops.shape(x)[1]
    query, key, value = (
        points(prefix + f"attn.{part}",
               ops.reshape(t, (batch, length, c.n_heads, c.d_head)))
        for part, t in zip("qkv", ops.split(attention.qkv(block.ln1(x)), 3,
                                            axis=-1)))
    if attention.rotary is not None:
        query, key = attention.rotary(query), attention.rotary(key)
    scores = ops.einsum("bqhd,bkhd->bhqk", ops.cast(query, "float32"),
                        ops.cast(key, "float32")) / math.sqrt(c.d_head)
    visible = ops.arange(length)[None, :] <= ops.arange(length)[:, None]
    scores = points(prefix + "attn.scores", ops.where(
        visible, scores, float(np.finfo("float32").min)))
    pattern = points(prefix + "attn.pattern", ops.softmax(scores, axis=-1))
    z = points(prefix + "attn.z", ops.einsum(
        "bhqk,bkhd->bqhd", ops.cast(pattern, value.dtype), value))
    if points.wanted(prefix + "attn.result"):
        if getattr(attention.out, "quantization_mode", None):
            raise ValueError(
                f"{prefix}attn.result splits W_O by head, which needs float "
                f"weights; this model is quantized "
                f"({attention.out.quantization_mode}): use {prefix}attn.z.")
        w_o = ops.reshape(attention.out.kernel, (c.n_heads, c.d_head, -1))
        result = points(prefix + "attn.result", ops.einsum(
            "bqhd,hdm->bqhm", z, ops.cast(w_o, z.dtype)))
        attn_out = ops.sum(result, axis=2)
        if attention.out.bias is not None:
            attn_out = attn_out + ops.cast(attention.out.bias, z.dtype)
    else:
        attn_out = attention.out(
            ops.reshape(z, (batch, length, c.n_heads * c.d_head)))
    attn_out = points(prefix + "attn_out", attn_out)
    x = points(prefix + "resid_mid", x + attn_out)
    mlp = block.mlp
    pre = points(prefix + "mlp.pre", mlp.up(block.ln2(x)))
    post = points(prefix + "mlp.post",
                  ops.gelu(pre, approximate=True) if mlp.activation == "gelu"
                  else ops.relu(pre))
    mlp_out = points(prefix + "mlp_out", mlp.down(post))
    return points(prefix + "resid_post", x + mlp_out)
