"""Supervised fine-tuning (SFT): prompt/completion or chat examples, with the
loss on the completion tokens only.

Each example (see `keras_gpt.data.jsonl`) is padded to the longest one;
a batch is `(x, y, sample_weight)`: `x` the ids, `y` the next ids, and
`sample_weight` 1 where `y` is a completion (or assistant) token and 0 on
the prompt and the padding. Keras applies the weights in the loss
(`NextTokenLoss` with `reduction="mean_with_sample_weight"`: the mean
cross-entropy over the learned tokens of the batch), so `fit`, `evaluate`,
the metrics and every backend see the same thing, and prompt tokens get no
gradient. Examples are padded rather than packed: a row holds one example,
so no example attends to another.

`keras-gpt train --init-from SOURCE --sft DATA.jsonl` runs it
(`keras_gpt.training.run`); for a loop of your own:

```python
from keras_gpt.data import build_sft_examples
from keras_gpt.training.sft import compile_for_sft, make_sft_dataset

examples = build_sft_examples("chat.jsonl", tokenizer, model.config.context_length)
train, val = examples.split(0.1)
compile_for_sft(model, total_steps=300, learning_rate=3e-4)
model.fit(make_sft_dataset(train, batch_size=8), steps_per_epoch=100,
          epochs=3, validation_data=make_sft_eval_dataset(val, 8))
```
"""

from keras_gpt.backend import training_jit_compile
from keras_gpt.data import batches
from keras_gpt.data.examples import build_sft_examples, describe
from keras_gpt.losses import NextTokenLoss
from keras_gpt.training.recipe import make_optimizer


def sft_loss():
    """Next-token cross-entropy averaged over the tokens whose sample weight
    is 1 (`sum(w * ce) / sum(w)` per batch)."""
    return NextTokenLoss(reduction="mean_with_sample_weight")


def compile_for_sft(model, total_steps, jit_compile="auto", **optimizer_kwargs):
    """`model.compile` with `make_optimizer` and `sft_loss`.

    Args, returns: as `keras_gpt.training.compile_for_pretraining`.
    """
    model.compile(optimizer=make_optimizer(total_steps, **optimizer_kwargs),
                  loss=sft_loss(),
                  jit_compile=training_jit_compile(jit_compile))
    return model


def _with_targets(tokens, weights):
    return tokens[:, :-1], tokens[:, 1:], weights


def make_sft_dataset(examples, batch_size, seed=0, skip_batches=0,
                     length=None):
    """An infinite `tf.data.Dataset` of `(x, y, sample_weight)` batches.

    Each epoch visits every example once in a seeded random order
    (`keras_gpt.data.batches.shuffled_batches`); rows are padded to
    `length` tokens (default: the longest example), so `x`, `y` and the
    weights are `(batch_size, length - 1)`.

    Args:
        examples: `keras_gpt.data.SFTExamples`.
        batch_size: Examples per batch.
        seed: The order's seed.
        skip_batches: Batches already consumed (resuming).
        length: Tokens per padded example.

    Example:

    ```python
    model.fit(make_sft_dataset(train, 8), steps_per_epoch=100, epochs=2)
    ```
    """
    return batches.shuffled_batches(examples.arrays(length), batch_size,
                                    seed, skip_batches).map(_with_targets)


def make_sft_eval_dataset(examples, batch_size, steps=None, length=None):
    """Every example once (at most `steps` batches), in order, as
    `(x, y, sample_weight)` batches."""
    return batches.ordered_batches(examples.arrays(length), batch_size,
                                   steps).map(_with_targets)


# The run's side (`keras_gpt.training.run`) -----------------------------------

def check_sft_options(o):
    if o.get("data"):
        raise ValueError("--sft and --data cannot be combined: --sft reads "
                         "prompt/completion JSON Lines, --data plain text.")
    if not o.get("init_from"):
        raise ValueError("--sft needs --init-from SOURCE: supervised "
                         "fine-tuning adapts a trained model.")


def prepare_sft(o, tokenizer, cache_dir, verbose=1):
    """`(tokenizer, train examples, held-out examples)` of `o["sft"]`; the
    counts go into `o["sft_data"]` (run.json)."""
    from pathlib import Path

    cache_dir = Path(cache_dir or Path.home() / ".cache" / "keras_gpt")
    examples = build_sft_examples(o["sft"], tokenizer, o["context_length"],
                                  cache_dir=cache_dir / "examples")
    train, val = examples.split(o["val_fraction"], o["seed"])
    o["sft_data"] = {k: examples.stats[k] for k in ("examples", "truncated",
                                                    "longest")}
    o["sft_data"].update(train=len(train), held_out=len(val))
    if verbose:
        print(f"SFT data {describe(examples)}; {len(val)} held out.")
    return tokenizer, train, val


def sft_fit_data(o, tokenizer, train, val, step):
    """The run's datasets, tokens per step, and sample prompts (held-out
    prompts that leave room to answer)."""
    length = max(train.stats["longest"], val.stats["longest"])
    batch = o["batch_size"]
    train_ds = make_sft_dataset(train, batch, seed=o["seed"],
                                skip_batches=step, length=length)
    val_ds = make_sft_eval_dataset(val, batch, o["eval_steps"], length=length)
    prompts = []
    for i in range(len(val)):
        ids, learned = val.tokens[i], val.learned[i]
        prompt = ids[:int(learned.argmax())]
        if len(prompt) <= o["context_length"] - 8:
            prompts.append(tokenizer.decode(prompt))
    return train_ds, val_ds, batch * (length - 1), prompts[:o["samples"]]
