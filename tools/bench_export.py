"""Greedy decoding through an exported SavedModel vs `keras_gpt.generate`.

Both run under TensorFlow on the same random-weight model in the same
process, interleaved (SavedModel, generate, SavedModel, ...), best of N
rounds; the machines are shared and noisy, so only the ratio of one run
means much. The SavedModel is called through its `generate` signature
(strings in, strings out: tokenizing and detokenizing are included, as in
serving); `generate` gets the same prompt string and tokenizer. The
tokenizer is a `CharTokenizer` over vocab_size - 1 CJK characters, so a
prompt of n characters is n tokens. The two outputs must be identical.

    python tools/bench_export.py              # 6 layers, 384 dims, ...
    python tools/bench_export.py --smoke      # seconds: a tiny model
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_gpt.bench import ISSUE_MODEL as FULL  # noqa: E402
SMOKE = dict(n_layers=1, n_heads=2, d_model=16, vocab_size=300,
             context_length=32)


def run(config, batch, prompt_tokens, new_tokens, rounds, seed=0):
    """Measures both; returns a dict of tokens/s figures and the ratio."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_gpt
    from keras_gpt import GPT, GPTConfig
    from keras_gpt.tokenizers import CharTokenizer

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("bench_export compares against keras_gpt.generate "
                         "under TensorFlow: run with KERAS_BACKEND="
                         "tensorflow.")
    keras.utils.set_random_seed(seed)
    config = GPTConfig(**config)
    model = GPT(config)
    chars = [chr(0x4E00 + i) for i in range(config.vocab_size - 1)]
    tokenizer = CharTokenizer(chars)
    rng = np.random.default_rng(seed)
    prompts = ["".join(rng.choice(chars, prompt_tokens))
               for _ in range(batch)]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        target = keras_gpt.export_saved_model(model, tokenizer, folder)
        export_s = time.perf_counter() - start
        signature = tf.saved_model.load(str(target)).signatures["generate"]
        inputs = dict(prompts=tf.constant(prompts),
                      max_new_tokens=tf.constant(new_tokens),
                      temperature=tf.constant(0.0), top_k=tf.constant(0),
                      top_p=tf.constant(1.0),
                      seed=tf.constant(0, tf.int64))

        def served():
            out = signature(**inputs)
            texts = [t.decode("utf-8") for t in out["completions"].numpy()]
            return texts, int(out["lengths"].numpy().sum())

        def library():
            texts = keras_gpt.generate(model, prompts, tokenizer=tokenizer,
                                       max_new_tokens=new_tokens,
                                       temperature=0)
            return texts, sum(len(tokenizer.encode(t)) for t in texts)

        times = {"saved_model": [], "generate": []}
        outputs = {}
        for name, fn in (("saved_model", served), ("generate", library)):
            outputs[name] = fn()  # compiles
        for _ in range(rounds):
            for name, fn in (("saved_model", served), ("generate", library)):
                start = time.perf_counter()
                outputs[name] = fn()
                times[name].append(time.perf_counter() - start)
    if outputs["saved_model"] != outputs["generate"]:
        raise AssertionError("The SavedModel's greedy output differs from "
                             "keras_gpt.generate's.")
    tokens = outputs["generate"][1]
    speed = {name: tokens / min(t) for name, t in times.items()}
    return {"tokens": tokens, "saved_model_tok_s": speed["saved_model"],
            "generate_tok_s": speed["generate"],
            "ratio": speed["saved_model"] / speed["generate"],
            "export_s": export_s}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="A tiny model, 8 new tokens, one round.")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.smoke:
        config, new, rounds = SMOKE, 8, 1
    else:
        config, new, rounds = FULL, args.new_tokens, args.rounds
    result = run(config, args.batch, args.prompt_tokens, new, rounds)
    print(f"model {config}, batch {args.batch}, prompt {args.prompt_tokens} "
          f"+ {new} new tokens, best of {rounds} rounds, interleaved")
    print(f"SavedModel greedy:         {result['saved_model_tok_s']:8.1f} "
          "tokens/s")
    print(f"keras_gpt.generate (TF):   {result['generate_tok_s']:8.1f} "
          "tokens/s")
    print(f"ratio SavedModel/generate: {result['ratio']:8.2f}x  "
          f"({result['tokens']} tokens per call, identical outputs)")
    print(f"export_saved_model:        {result['export_s']:8.1f} s")
    return result


if __name__ == "__main__":
    main()
