"""The few places where one backend needs code of its own, kept together.

Layers use `keras.ops` only; what cannot be said in `keras.ops` lives here,
one function per need, with a branch per backend named for it.
"""

import keras

from keras_gpt.backend import pytorch, torch_adam
from keras_gpt.backend.compilation import use_compilation_cache  # noqa: F401
from keras_gpt.backend.jax_memory import keep_step_memory  # noqa: F401
from keras_gpt.backend.layer_calls import direct_call_applies  # noqa: F401
from keras_gpt.backend.token_ids import (check_token_ids,  # noqa: F401
                                         nan_where_out_of_range)
from keras_gpt.backend.values import (assert_on_device,  # noqa: F401
                                      concrete_value)


# Projections: x @ kernel + bias ----------------------------------------------

def linear(x, kernel, bias=None):
    """`x @ kernel + bias` for 2-D `x` (rows, in) and `kernel` (in, out).

    On PyTorch, `pytorch.linear`: torch's ops called directly, oneDNN's
    linear op where it is this processor's faster product
    (`pytorch.cpu_gemm`; on AVX-512 AMD EPYCs the torch wheel's MKL GEMM
    measured 2-3x slower than oneDNN, 2048x384x1536: 81 vs 164 GFLOP/s
    forward, 102 vs 299 for the input gradient), else one `torch.addmm`.
    Everywhere else, `ops.matmul` and the bias.
    """
    if keras.backend.backend() == "torch":
        return pytorch.linear(x, kernel, bias)
    from keras import ops

    kernel = ops.convert_to_tensor(kernel, dtype=x.dtype)
    y = ops.matmul(x, kernel)
    return y if bias is None else y + ops.cast(bias, y.dtype)


# Loss: the next token's cross-entropy --------------------------------------

def token_cross_entropy(logits, targets):
    """Per-token -log softmax(logits)[target]: (..., vocab) -> (...).

    `targets` are int ids already passed through
    `check_token_ids`. JAX and TensorFlow:
    logsumexp(logits) - logits[target], which XLA fuses, with NaN for ids
    `check_token_ids` could only flag inside a compiled step; TensorFlow
    with the gradient written out (`_written_gradient_cross_entropy`).
    PyTorch: `pytorch.cross_entropy` (eager torch would run each op
    of the formula as its own pass over the logits).
    """
    backend = keras.backend.backend()
    if backend == "torch":
        return pytorch.cross_entropy(logits, targets)
    if backend == "tensorflow":
        return _written_gradient_cross_entropy(logits, targets)
    return _cross_entropy(logits, targets)


def _cross_entropy(logits, targets):
    from keras import ops

    return ops.logsumexp(logits, axis=-1) - _target_logits(logits, targets)


def _target_logits(logits, targets):
    from keras import ops

    picked = ops.take_along_axis(logits, targets[..., None], axis=-1)
    return nan_where_out_of_range(picked[..., 0], targets,
                                  ops.shape(logits)[-1])


def _written_gradient_cross_entropy(logits, targets):
    """`_cross_entropy` with its gradient, (softmax - one-hot) * upstream,
    as one expression that XLA compiles into one pass over the logits
    (JAX and TensorFlow; `ops.custom_gradient` has no PyTorch version).

    TensorFlow's own gradient of the formula keeps the gather's scatter and
    logsumexp's broadcasts apart: forward and backward of batch 8 x 256,
    vocab 8192 took 103.2 ms that way and 73.6 ms this way (AVX2 EPYC, 2
    cores; `tools/loss_speed.py`), and the whole training step ran 1.01x
    faster than with Keras' loss (`tools/ab_speed.py loss`). On JAX the
    formula's own gradient was faster (66.5 against 74.2 ms), so JAX keeps
    it.
    """
    from keras import ops

    @ops.custom_gradient
    def cross_entropy(logits):
        log_normalizer = ops.logsumexp(logits, axis=-1, keepdims=True)

        def gradient(upstream):
            one_hot = ops.arange(ops.shape(logits)[-1]) == targets[..., None]
            return (ops.exp(logits - log_normalizer)
                    - ops.cast(one_hot, logits.dtype)) * upstream[..., None]

        losses = log_normalizer[..., 0] - _target_logits(logits, targets)
        return losses, gradient

    return cross_entropy(logits)


# Initial weights: who draws them -----------------------------------------------

def draws_weights_on_host():
    """Whether `keras_gpt.layers.HostRandomNormal` draws with NumPy.

    On JAX: each Keras random draw there is an XLA program compiled per
    shape (0.15-0.2 s each on a 2-core EPYC), which a process with an empty
    compilation cache pays at every build and `load_model`. TensorFlow and
    PyTorch draw eagerly with their own multi-threaded generators, faster
    than NumPy's one thread on large weights (GPT-2 small, PyTorch: the
    build took 0.72 s with Keras' draw, 2.12 s with NumPy's), so they keep
    Keras' `RandomNormal`.
    """
    return keras.backend.backend() == "jax"


# Training: XLA or not ----------------------------------------------------------

def training_jit_compile(requested="auto"):
    """What `model.compile(jit_compile=...)` gets for pretraining.

    Keras' "auto" turns XLA off for TensorFlow on a machine without GPUs;
    for this model the XLA-compiled train step ran 1.24x faster than TF's
    op-by-op runtime there (6 layers, d_model 384, batch 8 x 256:
    `tools/ab_speed.py tf-xla`), so "auto" means XLA on TensorFlow too —
    except under a `tf.distribute` strategy, where Keras' own choice stands.
    Anything but "auto" is passed through.
    """
    if requested != "auto" or keras.backend.backend() != "tensorflow":
        return requested
    import tensorflow as tf

    return "auto" if tf.distribute.has_strategy() else True


def traced_once_with_built_optimizer(optimizer):
    """Whether `optimizer` should be built at `compile` (TensorFlow only).

    TensorFlow's `fit` (without a `tf.distribute` strategy) traces the
    train step before the optimizer has variables; creating them inside
    that trace makes TensorFlow trace the step a second time.
    """
    if (keras.backend.backend() != "tensorflow" or optimizer is None
            or optimizer.built):
        return False
    import tensorflow as tf

    return not tf.distribute.has_strategy()


def use_fused_optimizer(optimizer):
    """On PyTorch, runs a Keras Adam/AdamW's steps on torch's fused CPU
    kernel (`keras_gpt.backend.torch_adam`: the same arithmetic; training
    steps 1.04-1.06x faster). Elsewhere nothing changes: XLA compiles the
    whole step. Returns whether the fused step was installed.
    """
    if keras.backend.backend() != "torch" or optimizer is None:
        return False
    return torch_adam.install(optimizer)


# Attention: fused kernel or explicit matmuls ---------------------------------

_FUSED_ATTENTION = None


def use_fused_attention():
    """Whether uncached attention should call `ops.dot_product_attention`.

    Yes on PyTorch (SDPA) and on any accelerator (cuDNN / flash kernels).
    No for JAX and TensorFlow on CPU, where XLA and TF have no fused kernel
    and the generic lowering's gradient measured 1.2x (JAX) and 1.4x (TF)
    slower than two heads-first batched matmuls around a softmax
    (batch 8, 6 heads, 256 positions).
    """
    global _FUSED_ATTENTION
    if _FUSED_ATTENTION is None:
        backend = keras.backend.backend()
        if backend == "jax":
            import jax

            _FUSED_ATTENTION = jax.default_backend() != "cpu"
        elif backend == "tensorflow":
            import tensorflow as tf

            _FUSED_ATTENTION = bool(tf.config.list_logical_devices("GPU"))
        else:
            _FUSED_ATTENTION = True
    return _FUSED_ATTENTION


# Generation: compiling the decoding loop -------------------------------------

# XLA's CPU code generator asks LLVM for 256-bit vectors by default (wider
# ones slow some Intel chips down). One decoding step is dozens of
# matrix-vector products and small fused loops that XLA emits itself, and
# with 512-bit vectors (on CPUs with AVX-512; elsewhere LLVM keeps what the
# CPU has) batch-1 greedy decoding ran 1.16x faster here (6 layers, d_model
# 384, vocab 8192: `tools/ab_speed.py decode-vectors`). The training step
# gained nothing (its products are library GEMMs).
_JAX_CPU_DECODING = {"xla_cpu_prefer_vector_width": 512}


def compile_inference(model, fn, inference_mode=True):
    """`fn(*args)`, which reads `model`'s weights, compiled for repeated use.

    - jax: `jax.jit`; the weights go in as arguments through a
      `keras.StatelessScope`, so they are not baked into the program and
      later weight updates are seen. On CPU, with `_JAX_CPU_DECODING`.
    - tensorflow: `tf.function(jit_compile=True)` (XLA); the weights are
      captured variables.
    - torch: `fn` runs eagerly under `torch.inference_mode()`; speed comes
      from `TorchDecoder`, whose step has no Keras overhead per token. With
      `inference_mode=False`, under `torch.no_grad()` instead, so that what
      it returns can later meet weights in code autograd records (tensors
      made in inference mode cannot).

    Programs are traced once per argument structure, shape and dtype: pass
    every runtime value (indices, temperatures) as a tensor.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def stateless(values, *args):
            with keras.StatelessScope(
                    state_mapping=list(zip(model.variables, values))):
                return fn(*args)

        options = _JAX_CPU_DECODING if jax.default_backend() == "cpu" else None
        jitted = jax.jit(stateless, compiler_options=options)
        return lambda *args: jitted([v.value for v in model.variables], *args)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend == "torch":
        import torch

        mode = torch.inference_mode if inference_mode else torch.no_grad

        def eager(*args):
            with mode():
                return fn(*args)

        return eager
    return fn


def argmax(x):
    """First index of the largest value along the last axis, int32.

    Inside XLA on CPU (jax, tensorflow) `argmax` lowers to a variadic
    reduction that takes ~35 us over 8192 logits; a max then a min over the
    matching indices does the same in ~3 us. Torch keeps its own argmax,
    called directly (`pytorch.argmax`).
    """
    from keras import ops

    if keras.backend.backend() == "torch":
        return pytorch.argmax(x)
    size = x.shape[-1]
    top = ops.max(x, axis=-1, keepdims=True)
    index = ops.where(x == top, ops.arange(size, dtype="int32"), size)
    return ops.minimum(ops.min(index, axis=-1), size - 1)  # NaN rows: last


def write_column(x, index, column):
    """`x` (rows, length) with column `index` (a scalar tensor) set to
    `column` (rows,): `ops.slice_update(x, (0, index), column[:, None])`.

    Except on PyTorch, where Keras' `slice_update` with a tensor index
    builds an index grid for `index_put_` (135 us on a (1, 256) array, once
    per decoded token; `pytorch.write_column` takes a few).
    """
    from keras import ops

    if keras.backend.backend() == "torch":
        return pytorch.write_column(x, index, column)
    return ops.slice_update(x, (0, index), column[:, None])
