"""PyTorch-only: Keras' Adam and AdamW steps run as torch's fused CPU kernel.

Keras' PyTorch Adam (`keras/src/backend/torch/optimizers/torch_adam.py`)
updates the weights with ten `torch._foreach_*` calls over all of them,
five of which allocate new tensors; its global-norm clipping squares and
sums each gradient in its own op, and weight decay is one more pass. On a
CPU, running them as below made the whole training step 1.06x faster for
nanoGPT's baby config and 1.04x for the benchmark model (2026-12-07,
AVX-512 EPYC, `tools/ab_speed.py torch-adam`).

`torch._fused_adamw_` (what `torch.optim.AdamW(fused=True)` calls) decays
and updates each weight in one pass. The arithmetic is Keras': its step is
`p -= alpha * m / (sqrt(v) + eps)`, `alpha = lr * sqrt(1 - b2^t) / (1 -
b1^t)`; torch's kernel divides `sqrt(v)` by `sqrt(1 - b2^t)` before adding
its epsilon, so it is given `eps / sqrt(1 - b2^t)`; decay is `p *= 1 - lr *
wd` before the step in both, on the variables Keras would decay. The
changes to the weights agree with Keras' own to 1e-4 of the largest: Keras
computes `1 - b2^t` in float32, torch in float64
(tests/backend/test_torch_adam.py).
"""

import math

import keras

# Where Keras defines the methods replaced here: a subclass that overrides
# one of them keeps its own.
_KERAS_MODULES = ("keras.src.backend.torch.optimizers",
                  "keras.src.optimizers.")


def install(optimizer):
    """Runs `optimizer`'s steps on torch's fused kernel where it can.

    Applies to Keras' own `Adam` and `AdamW` (not subclasses that change
    the step, nor `amsgrad=True`). Each step checks its variables: float32
    weights and gradients on the CPU take the fused kernel, anything else
    (a GPU, bfloat16 weights) Keras' own step. Global-norm clipping
    (`global_clipnorm`) becomes one norm over all gradients; gradients that
    are the weights' own `.grad` tensors (what `fit` passes) are scaled in
    place, any other list is copied as Keras does. The optimizer keeps its
    class and config (the replaced methods are set on the instance).

    Args:
        optimizer: A Keras optimizer, built or not.

    Returns:
        Whether the fused step was installed.
    """
    if (not isinstance(optimizer, keras.optimizers.Adam)
            or optimizer.amsgrad or "_fused_adam" in vars(optimizer)
            or not all(_keras_own(optimizer, name) for name in (
                "_parallel_update_step", "_apply_weight_decay",
                "_clip_gradients", "update_step"))):
        return False
    fused = _FusedAdam(optimizer)
    optimizer._fused_adam = fused
    optimizer._apply_weight_decay = fused.apply_weight_decay
    optimizer._clip_gradients = fused.clip_gradients
    optimizer._parallel_update_step = fused.update
    return True


def _keras_own(optimizer, name):
    method = getattr(type(optimizer), name, None)
    return method is not None and method.__module__.startswith(_KERAS_MODULES)


class _FusedAdam:
    """The replaced steps of one optimizer; Keras' own are its class's."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.keras_class = type(optimizer)
        self.plans = {}

    def plan(self, variables):
        """(whether the fused kernel applies, the indices to decay, the
        others), cached per list of variables."""
        key = tuple(id(v) for v in variables)
        if key not in self.plans:
            import torch

            o = self.optimizer
            ok = all(v.value.device.type == "cpu"
                     and v.value.dtype == torch.float32 for v in variables)
            decay = ([o._use_weight_decay(v) for v in variables]
                     if o.weight_decay else [False] * len(variables))
            self.plans[key] = (ok, [i for i, d in enumerate(decay) if d],
                               [i for i, d in enumerate(decay) if not d])
        return self.plans[key]

    def apply_weight_decay(self, variables):
        if not self.plan(variables)[0]:
            self.keras_class._apply_weight_decay(self.optimizer, variables)
        # Otherwise the fused step decays, with the same learning rate.

    def clip_gradients(self, grads):
        o = self.optimizer
        if (not o.global_clipnorm or o.clipnorm or o.clipvalue
                or any(g is None for g in grads)):
            return self.keras_class._clip_gradients(o, grads)
        import torch

        norm = torch.linalg.vector_norm(torch.stack(
            torch._foreach_norm(grads)))
        clip = o.global_clipnorm
        # Keras' formula: NaN when the norm is not finite.
        scale = clip * torch.clamp(1.0 / norm, max=1.0 / clip) + (norm - norm)
        own = getattr(o, "_trainable_variables", ())
        if len(own) == len(grads) and all(
                g is v.value.grad for g, v in zip(grads, own)):
            torch._foreach_mul_(grads, scale)
            return grads
        return torch._foreach_mul(grads, scale)

    def update(self, grads, variables, learning_rate):
        import torch

        o = self.optimizer
        fusable, decayed, others = self.plan(variables)
        if not fusable or any(g.dtype != torch.float32 for g in grads):
            if fusable:  # the decay was left to this step
                self.keras_class._apply_weight_decay(o, variables)
            return self.keras_class._parallel_update_step(
                o, grads, variables, learning_rate)
        # Keras' step count (`iterations` is a tensor, not the variable,
        # with gradient accumulation).
        step = float(keras.ops.convert_to_numpy(o.iterations)) + 1.0
        if isinstance(learning_rate, keras.Variable):
            learning_rate = learning_rate.value
        index = [o._get_variable_index(v) for v in variables]
        lists = ([v.value for v in variables], list(grads),
                 [o._momentums[i].value for i in index],
                 [o._velocities[i].value for i in index])
        steps = torch.full((), step)
        for chosen, decay in ((decayed, o.weight_decay), (others, 0.0)):
            if not chosen:
                continue
            with torch.no_grad():
                torch._fused_adamw_(
                    *([x[i] for i in chosen] for x in lists), [],
                    [steps] * len(chosen), lr=float(learning_rate),
                    beta1=float(o.beta_1), beta2=float(o.beta_2),
                    weight_decay=float(decay),
                    eps=o.epsilon / math.sqrt(1.0 - o.beta_2 ** step),
                    amsgrad=False, maximize=False)
