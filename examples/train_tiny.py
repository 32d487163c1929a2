"""Train a tiny GPT with plain `model.fit` and print a greedy continuation.

Runs on any backend: `KERAS_BACKEND=jax python examples/train_tiny.py`.
The text is the Python documentation that ships inside CPython
(`pydoc_data`), encoded byte by byte, so nothing is downloaded.
"""

import argparse
import time

import keras
import numpy as np
from pydoc_data.topics import topics

import keras_gpt
from keras_gpt import GPT, GPTConfig, compile_for_pretraining


def windows(data, context_length, count, rng):
    starts = rng.integers(0, len(data) - context_length - 1, count)
    chunk = np.stack([data[s:s + context_length + 1] for s in starts])
    return chunk[:, :-1], chunk[:, 1:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    text = "\n\n".join(topics[k] for k in sorted(topics))
    data = np.frombuffer(text.encode("utf-8"), np.uint8).astype("int32")
    split = int(0.9 * len(data))
    config = GPTConfig(vocab_size=256, context_length=64, d_model=128,
                       n_layers=4, n_heads=4)
    model = GPT(config)
    compile_for_pretraining(model, total_steps=args.steps, learning_rate=2e-3)
    rng = np.random.default_rng(args.seed)
    x, y = windows(data[:split], 64, args.steps * args.batch_size, rng)
    vx, vy = windows(data[split:], 64, 8 * args.batch_size, rng)
    print(f"backend {keras.backend.backend()}, "
          f"{model.count_params():,} parameters, {len(data):,} bytes of text")
    start = time.time()
    model.fit(x, y, batch_size=args.batch_size, epochs=1,
              validation_data=(vx, vy), verbose=2)
    print(f"trained {args.steps} steps in {time.time() - start:.1f} s")
    prompt = "The return statement"
    out = keras_gpt.generate(model, list(prompt.encode()), max_new_tokens=40,
                             temperature=0)
    print("greedy continuation:\n" + prompt
          + bytes(out).decode("utf-8", errors="replace"))


if __name__ == "__main__":
    main()
