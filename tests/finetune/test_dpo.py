"""DPO: the loss and rewards, the reference without a second copy, and a
preference learned on a synthetic task."""

import json
import math
import random

import keras
import numpy as np
import pytest
from tests.conftest import to_numpy

import keras_gpt
from keras_gpt import GPT, GPTConfig
from keras_gpt.data import build_preference_pairs, build_sft_examples
from keras_gpt.data.batches import ordered_batches, shuffled_batches
from keras_gpt.finetune.dpo import (DPOModel, completion_log_probs, dpo_loss,
                                    dpo_rewards, reference_log_probs)
from keras_gpt.tokenizers import ByteTokenizer, CharTokenizer
from keras_gpt.training.sft import compile_for_sft, make_sft_dataset

BYTE = ByteTokenizer()


def tiny_model(vocab_size=BYTE.vocab_size, context_length=24):
    return GPT(GPTConfig(vocab_size=vocab_size, context_length=context_length,
                         d_model=32, n_layers=1, n_heads=2))


def pair_arrays(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "2+2=", "chosen": "4", "rejected": "five"},
        {"prompt": "Say hi:", "chosen": " hi!", "rejected": " no"},
        {"prompt": "", "chosen": "abc", "rejected": "abd"},
        {"prompt": "x", "chosen": "y", "rejected": "zz"}]))
    return build_preference_pairs(path, BYTE, 24).arrays()


def numpy_dpo(log_probs, beta):
    pc, pr, rc, rr = log_probs.T.astype(np.float64)
    z = beta * ((pc - rc) - (pr - rr))
    loss = np.log1p(np.exp(-z))  # -log sigmoid(z)
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    return loss, chosen, rejected


def test_loss_and_rewards_match_numpy():
    rng = np.random.default_rng(0)
    log_probs = rng.normal(-20, 5, (6, 4)).astype(np.float32)
    log_probs[5] = [-3.0, -4.0, -2.0, -3.0]  # equal rewards: not accurate
    beta = 0.3
    loss, chosen, rejected = numpy_dpo(log_probs, beta)
    np.testing.assert_allclose(to_numpy(dpo_loss(log_probs, beta)), loss,
                               rtol=1e-5)
    got_c, got_r = dpo_rewards(log_probs, beta)
    np.testing.assert_allclose(to_numpy(got_c), chosen, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(got_r), rejected, rtol=1e-5, atol=1e-6)
    # Through the model's compute_loss and compute_metrics (what Keras'
    # train_step and test_step call): TRL's definitions.
    model = DPOModel(tiny_model(), beta=beta, reference="precomputed")
    model.compile(optimizer="adam")
    assert float(model.compute_loss(y_pred=log_probs)) == pytest.approx(
        loss.mean(), rel=1e-5)
    logs = model.compute_metrics(None, None, log_probs)
    assert float(logs["rewards/chosen"]) == pytest.approx(chosen.mean(),
                                                          rel=1e-5)
    assert float(logs["rewards/rejected"]) == pytest.approx(rejected.mean(),
                                                            rel=1e-5)
    assert float(logs["rewards/margins"]) == pytest.approx(
        (chosen - rejected).mean(), rel=1e-5)
    assert float(logs["rewards/accuracies"]) == pytest.approx(
        np.mean(chosen > rejected))
    assert chosen[5] == rejected[5]  # a tie is not counted as accurate


@pytest.mark.parametrize("reference", ["adapter", "precomputed"])
def test_at_step_zero_the_policy_is_the_reference(tmp_path, reference):
    import tensorflow as tf

    arrays = pair_arrays(tmp_path)
    policy = tiny_model()
    if reference == "adapter":
        policy.enable_lora(4)
    else:
        arrays["ref_chosen"], arrays["ref_rejected"] = reference_log_probs(
            policy, arrays, batch_size=3)
    model = DPOModel(policy, beta=0.1)
    assert model.reference == reference
    model.compile(optimizer="adam")
    logs = model.evaluate(tf.data.Dataset.from_tensor_slices(arrays).batch(4),
                          verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(math.log(2), abs=1e-6)
    for name in ("chosen", "rejected", "margins"):
        assert abs(logs[f"rewards/{name}"]) < 1e-5, name
    if reference == "adapter":  # the same program: exactly equal rewards
        assert logs["rewards/accuracies"] == 0.0


def test_the_adapter_reference_is_the_base_without_lora(tmp_path):
    arrays = pair_arrays(tmp_path)
    policy = tiny_model()
    ids = np.concatenate([arrays["chosen"], arrays["rejected"]])
    mask = np.concatenate([arrays["chosen_mask"], arrays["rejected_mask"]])
    base = to_numpy(completion_log_probs(policy, ids, mask))
    base_weights = {v.path: to_numpy(v) for v in policy.weights}
    policy.enable_lora(4, targets="qkv,out,up,down")
    for layer in policy._flatten_layers():
        if getattr(layer, "lora_enabled", False):
            layer.lora_kernel_b.assign(np.random.default_rng(0).normal(
                0, 0.3, layer.lora_kernel_b.shape))
    model = DPOModel(policy, beta=0.1)
    out = to_numpy(model(arrays))
    np.testing.assert_allclose(out[:, 2:].T.reshape(-1), base, rtol=1e-5,
                               atol=1e-5)
    assert np.abs(out[:, :2].T.reshape(-1) - base).max() > 1e-2
    # A training step moves the factors only: the reference stays the base.
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.train_on_batch(arrays)
    after = to_numpy(model(arrays))
    np.testing.assert_allclose(after[:, 2:], out[:, 2:], rtol=1e-5, atol=1e-5)
    assert np.abs(after[:, :2] - out[:, :2]).max() > 1e-4
    assert {v.path for v in policy.trainable_variables}.isdisjoint(
        base_weights)
    for variable in policy.weights:
        if variable.path in base_weights:
            np.testing.assert_array_equal(to_numpy(variable),
                                          base_weights[variable.path])


def test_dpo_teaches_a_preference_on_held_out_prompts(tmp_path):
    """SFT teaches " ok." mostly (3 in 4 lines, the rest " OK!"); DPO on
    pairs preferring " OK!" must make greedy answers to prompts it never
    saw follow the rule, and the held-out reward accuracy reach 0.9."""
    rng = random.Random(0)
    letters = "abcdefghij"
    prompts = sorted({"".join(rng.choice(letters) for _ in range(3)) + ":"
                      for _ in range(200)})
    rng.shuffle(prompts)
    train, held_out = prompts[:-16], prompts[-16:]
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps(
        {"prompt": p, "completion": " ok." if rng.random() < 0.75
         else " OK!"}) + "\n" for p in train))
    prefs = {}
    for name, part in (("train", train), ("held_out", held_out)):
        prefs[name] = tmp_path / f"{name}.jsonl"
        prefs[name].write_text("".join(json.dumps(
            {"prompt": p, "chosen": " OK!", "rejected": " ok."}) + "\n"
            for p in part))
    tokenizer = CharTokenizer.train([letters + ": okOK!."])
    model = tiny_model(tokenizer.vocab_size, context_length=16)
    compile_for_sft(model, total_steps=60, learning_rate=1e-2)
    model.fit(make_sft_dataset(build_sft_examples(sft, tokenizer, 16), 16),
              steps_per_epoch=60, epochs=1, verbose=0, shuffle=False)

    def follows_the_rule():
        answers = keras_gpt.generate(model, held_out, tokenizer=tokenizer,
                                     max_new_tokens=4, temperature=0)
        return np.mean([a.startswith(" OK!") for a in answers])

    before = follows_the_rule()
    # "abc:" then " OK!" or " ok." and end-of-text: 9 tokens in each part.
    arrays = {name: build_preference_pairs(path, tokenizer, 16).arrays(9)
              for name, path in prefs.items()}
    for part in arrays.values():
        part["ref_chosen"], part["ref_rejected"] = reference_log_probs(
            model, part)
    dpo = DPOModel(model, beta=2.0)
    dpo.compile(optimizer=keras.optimizers.Adam(5e-4))
    history = dpo.fit(shuffled_batches(arrays["train"], 16), epochs=1,
                      steps_per_epoch=30, verbose=0, shuffle=False,
                      validation_data=ordered_batches(arrays["held_out"], 16))
    after = follows_the_rule()
    print(f"greedy answers following the rule: {before:.2f} -> {after:.2f}; "
          f"held-out reward accuracy "
          f"{history.history['val_rewards/accuracies'][-1]:.2f}")
    assert history.history["val_rewards/accuracies"][-1] >= 0.9
    assert before <= 0.25 and after >= 0.9
