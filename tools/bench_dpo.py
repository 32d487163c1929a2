"""What a DPO step with LoRA costs against a plain fine-tuning step (issue 22).

One model with LoRA factors (rank 8 on qkv) and one batch of B preference
pairs, each pair two sequences of `--length` tokens (prompt, then the
chosen or rejected completion; the completion is the second half). Timed
in one process, interleaved (DPO, then each plain step, round after round),
best of the rounds, after a compiling warm-up:

- dpo: `DPOModel` with the adapter reference: the policy's forward and
  backward pass over the 2B sequences, and the reference's forward pass
  over them with the LoRA delta off;
- sft-2B: the same LoRA model's fine-tuning step (`compile_for_sft`, loss
  on the completions) over the same 2B sequences (the same token batch);
- sft-B: the same step over B sequences (the chosen ones only).

The target (issue 22) is dpo / sft-2B <= 2.5. Printed: ms per step and the
ratios. The machine may be shared: the ratios are what to read.

    KERAS_BACKEND=jax .venv/bin/python tools/bench_dpo.py
    KERAS_BACKEND=torch .venv/bin/python tools/bench_dpo.py --rounds 5

`--smoke`: a tiny model, two rounds of three steps.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gpt import GPT, GPTConfig  # noqa: E402
from keras_gpt.finetune.dpo import DPOModel  # noqa: E402
from keras_gpt.training.recipe import make_optimizer  # noqa: E402
from keras_gpt.training.sft import compile_for_sft  # noqa: E402

MODEL = dict(n_layers=6, n_heads=6, d_model=384, vocab_size=8192)
SMOKE = dict(n_layers=1, n_heads=2, d_model=16, vocab_size=64)


def batches(config, pairs, length, seed=0):
    """A DPO batch dict and the two SFT batches (x, y, weights), fixed."""
    rng = np.random.default_rng(seed)
    ids = {k: rng.integers(0, config.vocab_size, (pairs, length + 1),
                           dtype=np.int32) for k in ("chosen", "rejected")}
    mask = np.zeros((pairs, length), np.float32)
    mask[:, length // 2:] = 1.0
    dpo = {**ids, "chosen_mask": mask, "rejected_mask": mask}
    both = np.concatenate([ids["chosen"], ids["rejected"]])
    sft_2b = (both[:, :-1], both[:, 1:], np.concatenate([mask, mask]))
    sft_b = (ids["chosen"][:, :-1], ids["chosen"][:, 1:], mask)
    return dpo, sft_2b, sft_b


def repeated(batch):
    import tensorflow as tf

    return tf.data.Dataset.from_tensors(batch).repeat()


class _FirstStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.done = time.perf_counter()


def step_time(model, dataset, steps):
    """Seconds per step after the first of `steps` (so neither fit's
    start-up nor the first step's dispatch counts); fit's return waits for
    the last step."""
    first = _FirstStep()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0,
              shuffle=False, callbacks=[first])
    return (time.perf_counter() - first.done) / (steps - 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4, help="B (default 4).")
    parser.add_argument("--length", type=int, default=256,
                        help="Tokens per sequence (default 256).")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5,
                        help="Steps per timing (default 5).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.length, args.steps, args.rounds, args.pairs = 16, 3, 2, 2
    shape = SMOKE if args.smoke else MODEL
    config = GPTConfig(**shape, context_length=args.length)
    keras.utils.set_random_seed(0)
    policy = GPT(config)
    policy.enable_lora(args.rank)
    dpo_model = DPOModel(policy, beta=0.1)
    dpo_model.compile(optimizer=make_optimizer(1000))
    compile_for_sft(policy, total_steps=1000)  # the same variables
    dpo_batch, sft_2b, sft_b = batches(config, args.pairs, args.length)
    runs = {"dpo": (dpo_model, repeated(dpo_batch)),
            "sft-2B": (policy, repeated(sft_2b)),
            "sft-B": (policy, repeated(sft_b))}
    for model, data in runs.values():
        step_time(model, data, 2)  # compile
    best = {name: float("inf") for name in runs}
    for _ in range(args.rounds):
        for name, (model, data) in runs.items():
            best[name] = min(best[name], step_time(model, data, args.steps))
    print(f"backend {keras.backend.backend()}; {shape['n_layers']} layers, "
          f"d_model {shape['d_model']}, vocab {shape['vocab_size']}; "
          f"{args.pairs} pairs x 2 x {args.length} tokens; LoRA rank "
          f"{args.rank} (qkv); best of {args.rounds} rounds of {args.steps} "
          "steps, interleaved")
    for name, seconds in best.items():
        print(f"  {name:7s} {1000 * seconds:9.1f} ms/step")
    ratios = {"dpo / sft-2B": best["dpo"] / best["sft-2B"],
              "dpo / sft-B": best["dpo"] / best["sft-B"]}
    for name, ratio in ratios.items():
        print(f"  {name}: {ratio:.2f}x")
    return ratios


if __name__ == "__main__":
    main()
