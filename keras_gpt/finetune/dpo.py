"""Direct preference optimization (DPO, Rafailov et al. 2023): the RLHF
objective without a reward model, as a Keras model that `fit` trains.

For a prompt x with a chosen completion y_c and a rejected one y_r, the
policy pi (the GPT being trained) and a frozen reference model give summed
log-probabilities of each completion's tokens, and the loss per pair is

    -log sigmoid(beta * ((log pi(y_c|x) - log ref(y_c|x))
                         - (log pi(y_r|x) - log ref(y_r|x)))).

The rewards are TRL's (`DPOTrainer`): `rewards/chosen` = beta * (log pi -
log ref) of the chosen completion, `rewards/rejected` the same of the
rejected one, `rewards/accuracies` the fraction of pairs whose chosen
reward is strictly larger, `rewards/margins` the mean of chosen - rejected.

The reference costs no second copy of the weights:

- `reference="adapter"`: the policy has LoRA factors (`GPT.enable_lora`)
  and the reference is the same layers with the LoRA delta switched off
  while its pass is traced (the base weights are frozen, so it stays the
  model LoRA started from);
- `reference="precomputed"`: the reference's log-probabilities are
  computed once before training (`reference_log_probs`) and come with each
  batch (`ref_chosen`, `ref_rejected`).

Both passes run with dropout off (TRL's default, `disable_dropout`), so
at step 0 the policy equals the reference: the loss is log 2 and every
reward 0.
"""

import contextlib
import math

import keras
from keras import ops

from keras_gpt.backend import check_token_ids, token_cross_entropy

REFERENCES = ("adapter", "precomputed")
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies",
           "rewards/margins")


def check_beta(beta):
    """Raises ValueError unless `beta` is a finite number > 0."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) \
            or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"--beta {beta!r} must be a finite number > 0 (the "
                         "strength of DPO's pull towards the reference; TRL's "
                         "default is 0.1).")
    return float(beta)


def completion_log_probs(model, ids, mask):
    """Summed log-probabilities of the masked next-token targets.

    Args:
        model: A GPT (called with dropout off).
        ids: int (batch, length): prompt then completion, padded.
        mask: (batch, length - 1): 1 where `ids[:, t + 1]` is a completion
            token.

    Returns:
        float32 (batch,): sum over t of mask * log p(ids[t + 1] | ids[:t + 1]).
    """
    logits = ops.cast(model(ids[:, :-1], training=False), "float32")
    targets = check_token_ids(ops.cast(ids[:, 1:], "int32"),
                              ops.shape(logits)[-1])
    return -ops.sum(token_cross_entropy(logits, targets)
                    * ops.cast(mask, "float32"), axis=-1)


def dpo_loss(log_probs, beta):
    """Per-pair DPO loss from (batch, 4) log-probabilities: policy chosen,
    policy rejected, reference chosen, reference rejected."""
    policy_c, policy_r, ref_c, ref_r = ops.unstack(
        ops.convert_to_tensor(log_probs, "float32"), 4, axis=-1)
    return -ops.log_sigmoid(beta * ((policy_c - ref_c) - (policy_r - ref_r)))


def dpo_rewards(log_probs, beta):
    """`(chosen, rejected)` implicit rewards, beta * (policy - reference),
    (batch,) each, without gradient."""
    policy_c, policy_r, ref_c, ref_r = ops.unstack(ops.stop_gradient(
        ops.convert_to_tensor(log_probs, "float32")), 4, axis=-1)
    return beta * (policy_c - ref_c), beta * (policy_r - ref_r)


@contextlib.contextmanager
def adapter_off(model):
    """Inside, `model`'s LoRA layers compute their frozen base alone (the
    layers read `lora_enabled` when called, as Keras' `Dense` does)."""
    layers = [layer for layer in model._flatten_layers()
              if getattr(layer, "lora_enabled", False)]
    for layer in layers:
        layer.lora_enabled = False
    try:
        yield
    finally:
        for layer in layers:
            layer.lora_enabled = True


@keras.saving.register_keras_serializable(package="keras_gpt")
class DPOModel(keras.Model):
    """A GPT trained by DPO with `fit`.

    The inputs are a dict of `chosen` and `rejected` ids (batch, length)
    and their `chosen_mask` / `rejected_mask` (batch, length - 1), as
    `keras_gpt.data.PreferencePairs.arrays()` gives them, plus
    `ref_chosen` / `ref_rejected` (batch,) with a precomputed reference.
    `call` returns the (batch, 4) log-probabilities (policy chosen, policy
    rejected, reference chosen, reference rejected); `compute_loss` is the
    mean DPO loss and `compute_metrics` updates the rewards, so Keras'
    own `train_step` and `test_step` run it on every backend, with the
    progress bar and `History` showing `loss` and `rewards/*` (and
    `val_...` on held-out pairs). No `y`: the dataset yields the dict alone.

    Args:
        policy: The `keras_gpt.GPT` to train (its weights, or its LoRA
            factors, are the trainable variables).
        beta: DPO's temperature (> 0).
        reference: `"adapter"` (the policy without its LoRA delta) or
            `"precomputed"`; default "adapter" if the policy has LoRA.
        **kwargs: `keras.Model` arguments.

    Example:

    ```python
    policy.enable_lora(8)
    model = DPOModel(policy, beta=0.1)
    model.compile(optimizer=keras.optimizers.AdamW(5e-4))
    data = tf.data.Dataset.from_tensor_slices(pairs.arrays()).batch(8)
    model.fit(data.repeat(), steps_per_epoch=50, epochs=4)
    policy.save("policy.keras")
    ```
    """

    def __init__(self, policy, beta=0.1, reference=None, **kwargs):
        super().__init__(**kwargs)
        self.beta = check_beta(beta)
        has_lora = getattr(policy, "lora_rank", None) is not None
        reference = reference or ("adapter" if has_lora else "precomputed")
        if reference not in REFERENCES:
            raise ValueError(f"reference={reference!r}: choose "
                             f"{' or '.join(REFERENCES)}.")
        if reference == "adapter" and not has_lora:
            raise ValueError("reference='adapter' needs a policy with LoRA "
                             "(policy.enable_lora(rank)): the reference is "
                             "the policy without its adapter.")
        self.policy = policy
        self.reference = reference
        self.reward_metrics = [keras.metrics.Mean(name=name)
                               for name in METRICS]
        self.built = True

    def call(self, inputs, training=None):
        ids = ops.concatenate([inputs["chosen"], inputs["rejected"]], axis=0)
        mask = ops.concatenate([inputs["chosen_mask"],
                                inputs["rejected_mask"]], axis=0)
        policy_c, policy_r = ops.split(
            completion_log_probs(self.policy, ids, mask), 2)
        if self.reference == "adapter":
            with adapter_off(self.policy):
                reference = completion_log_probs(self.policy, ids, mask)
            ref_c, ref_r = ops.split(ops.stop_gradient(reference), 2)
        else:
            ref_c = ops.cast(inputs["ref_chosen"], "float32")
            ref_r = ops.cast(inputs["ref_rejected"], "float32")
        return ops.stack([policy_c, policy_r, ref_c, ref_r], axis=-1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        loss = ops.mean(dpo_loss(y_pred, self.beta))
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        chosen, rejected = dpo_rewards(y_pred, self.beta)
        values = (chosen, rejected, ops.cast(chosen > rejected, "float32"),
                  chosen - rejected)
        for metric, value in zip(self.reward_metrics, values):
            metric.update_state(value)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def get_config(self):
        return {**super().get_config(),
                "policy": keras.saving.serialize_keras_object(self.policy),
                "beta": self.beta, "reference": self.reference}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["policy"] = keras.saving.deserialize_keras_object(
            config["policy"])
        return cls(**config)


def reference_log_probs(model, arrays, batch_size=16):
    """The reference's summed log-probabilities of every pair's chosen and
    rejected completion, computed once (dropout off).

    Args:
        model: The reference GPT (before training: the policy itself).
        arrays: `PreferencePairs.arrays()`.
        batch_size: Pairs per compiled call.

    Returns:
        `(ref_chosen, ref_rejected)`: float32 NumPy arrays (pairs,).
    """
    import numpy as np

    from keras_gpt.backend import compile_inference

    names = ("chosen", "rejected", "chosen_mask", "rejected_mask")
    fn = compile_inference(model, lambda ids, mask: completion_log_probs(
        model, ids, mask))
    n = len(arrays["chosen"])
    out = {"chosen": [], "rejected": []}
    for start in range(0, n, batch_size):
        rows = np.arange(start, start + batch_size) % n  # full batches only
        batch = {k: arrays[k][rows] for k in names}
        for part in ("chosen", "rejected"):
            values = keras.ops.convert_to_numpy(fn(
                ops.convert_to_tensor(batch[part]),
                ops.convert_to_tensor(batch[f"{part}_mask"])))
            out[part].append(values[:min(batch_size, n - start)])
    return (np.concatenate(out["chosen"]).astype(np.float32),
            np.concatenate(out["rejected"]).astype(np.float32))
