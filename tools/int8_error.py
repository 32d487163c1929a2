"""How far int8 logits land from float32's, on the issue-7 bench model.

The bench model (6 layers, 6 heads, d_model 384, vocab 8192; random
weights, seed 0) reads --tokens random ids. Printed, against the float32
model's logits: the largest absolute error as a share of the largest
float32 logit, and how often the argmax agrees, for

- Keras' int8 model (`GPT.quantize("int8")`: int8 weights, rows quantized
  per row on the fly), on the backend `KERAS_BACKEND` names;
- on PyTorch also the decoder that `generate` runs
  (`keras_gpt.generation.torch_decoder`), one token at a time after a
  one-token prompt, with the products `int8_products` names for this CPU.

    KERAS_BACKEND=torch .venv/bin/python tools/int8_error.py [--tokens 40]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gpt import GPT, GPTConfig  # noqa: E402
from keras_gpt.bench import ISSUE_MODEL  # noqa: E402


def _error(logits, reference):
    return (float(np.abs(logits - reference).max() / np.abs(reference).max()),
            float((logits.argmax(-1) == reference.argmax(-1)).mean()))


def _decoded(model, ids):
    """The torch decoder's logits for `ids`, one token per step."""
    import torch

    from keras_gpt.generation.torch_decoder import TorchDecoder

    decoder = TorchDecoder.for_model(model).refresh()
    with torch.inference_mode():
        cache = decoder.init_cache(1, ids.shape[1])
        tokens = torch.tensor(ids)
        steps = [decoder.step(tokens[:, t:t + 1], cache, t)
                 for t in range(ids.shape[1])]
    return torch.cat(steps, 1).numpy()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=40)
    args = p.parse_args(argv)
    context, vocab = ISSUE_MODEL["context_length"], ISSUE_MODEL["vocab_size"]
    if not 1 <= args.tokens <= context:
        p.error(f"--tokens {args.tokens} is out of range: the bench model "
                f"reads 1 to {context} tokens (its context)")
    keras.utils.set_random_seed(0)
    model = GPT(GPTConfig(**ISSUE_MODEL))
    ids = np.random.default_rng(0).integers(
        0, vocab, (1, args.tokens)).astype("int32")
    reference = keras.ops.convert_to_numpy(model(ids))
    model.quantize("int8")
    rows = {"Keras int8 model": keras.ops.convert_to_numpy(model(ids))}
    if keras.backend.backend() == "torch":
        from keras_gpt.generation.torch_products import int8_products

        rows[f"torch decoder ({int8_products('cpu')})"] = _decoded(model, ids)
    print(f"int8 against float32, bench model, {args.tokens} tokens, "
          f"backend {keras.backend.backend()}:")
    for name, logits in rows.items():
        error, agree = _error(logits, reference)
        print(f"  {name:48} largest error {100 * error:.2f}% of the largest "
              f"logit, argmax agrees {100 * agree:.0f}%")


if __name__ == "__main__":
    main()
