"""PyTorch: when a built layer's `call` can run without Keras' `__call__`.

On PyTorch a training step runs the model's Python every time, and Keras'
`Layer.__call__` (input conversion, the call context, masks, the autocast
and name scopes, torch's `Module.__call__`, traceback filtering) costs
55-90 us per call (2026-12-07, 2-core AMD EPYC), while a GPT's forward pass
makes about 50 such calls: skipping them made the baby config's training
step 1.069x faster (`tools/ab_speed.py torch-direct`).
Where that bookkeeping would change nothing, `direct_call_applies` says so
and the caller (`keras_gpt.layers.direct.DirectCall`) calls the layer's
`call` itself. JAX and TensorFlow run the Python once, while tracing: they
keep Keras' path.
"""

import keras
from keras.src.backend import get_autocast_scope  # no public name

_TORCH = keras.backend.backend() == "torch"


def direct_call_applies(layer, args, kwargs):
    """Whether `layer(*args, **kwargs)` is `layer.call(*args, **kwargs)`
    (or `layer.quantized_call`) with nothing else to do.

    True only on PyTorch, for a built layer called on one torch tensor of
    its input dtype (or of an integer dtype) without a Keras mask, with
    keyword arguments that are plain values, such tensors or Keras
    variables, `training` given if its `call` takes it, no mixed-precision
    policy or autocast scope of another dtype, and no rematerialization,
    activity regularizer, distribution or torch module hooks. Anything
    else (the first call, symbolic tensors, NumPy inputs) takes Keras'
    `__call__`.
    """
    if not (_TORCH and layer.built and len(args) == 1):
        return False
    import torch

    x = args[0]
    if (not isinstance(x, torch.Tensor)
            or getattr(x, "_keras_mask", None) is not None):
        return False
    dtype = layer.input_dtype
    if not _of_dtype(x, dtype):
        return False
    for value in kwargs.values():
        if isinstance(value, (torch.Tensor, keras.Variable)):
            if not _of_dtype(value, dtype):
                return False
        elif not (value is None or isinstance(value, (bool, int, float,
                                                      str))):
            return False
    if (getattr(layer, "_call_context_args", None) != {"training"}
            or (getattr(layer, "_call_has_training_arg", True)
                and kwargs.get("training") is None)):
        return False
    if (layer.compute_dtype != layer.variable_dtype
            or getattr(layer, "_remat_mode", True) is not None
            or layer.activity_regularizer is not None
            or keras.distribution.distribution() is not None
            or _has_torch_hooks(layer)):
        return False
    scope = get_autocast_scope()
    return scope is None or (layer.autocast
                             and scope.dtype == layer.compute_dtype)


def _of_dtype(value, dtype):
    """Whether Keras would pass `value` on unchanged: not a float, or a
    float of the layer's input dtype (a variable: its value)."""
    value_dtype = keras.backend.standardize_dtype(value.dtype)
    return value_dtype == dtype or not keras.backend.is_float_dtype(
        value_dtype)


def _has_torch_hooks(module):
    from torch.nn.modules import module as torch_module

    return bool(module._forward_hooks or module._forward_pre_hooks
                or module._backward_hooks or module._backward_pre_hooks
                or torch_module._global_forward_hooks
                or torch_module._global_forward_pre_hooks
                or torch_module._global_backward_hooks
                or torch_module._global_backward_pre_hooks)
