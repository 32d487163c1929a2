"""Decoding speed: keras_gpt.generate against KerasHub and Hugging Face.

The backend is the one `KERAS_BACKEND` names. For each batch size and
sampler (greedy; top-k 50) this times, interleaved round by round (ours,
KerasHub, HF, ours, ...) on the same shapes (prompt of 16 random ids, 200
new tokens, no early stop):

- ours: `keras_gpt.generate` on a random-weight `GPT` (6 layers, 6 heads,
  d_model 384, vocab 8192, context 256);
- KerasHub: `GPT2CausalLM(preprocessor=None).generate` on token ids, its
  `GPT2Backbone` of the same shape, on the same backend;
- HF: transformers' `GPT2LMHeadModel.generate` (PyTorch eager), when
  transformers is importable (skipped with the reason otherwise).

It prints tokens/s (best round: these machines are noisy), the first call's
time (tracing and compiling) and ours / reference ratios measured in this
run; `--json` writes the same figures.

Example:

```
KERAS_BACKEND=jax python tools/bench_generate.py --rounds 5
KERAS_BACKEND=torch python tools/bench_generate.py --batch-sizes 1 --json out.json
python tools/bench_generate.py --smoke        # tiny model, seconds
```
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

FULL = dict(vocab_size=8192, context_length=256, d_model=384, n_layers=6,
            n_heads=6)
SMOKE = dict(vocab_size=64, context_length=32, d_model=32, n_layers=2,
             n_heads=2)
TOP_K = 50


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="Timed rounds per implementation (best counts).")
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,8",
                        help="Comma-separated, e.g. 1,8.")
    parser.add_argument("--samplers", default="greedy,top_k",
                        help="Comma-separated: greedy, top_k.")
    parser.add_argument("--no-keras-hub", action="store_true")
    parser.add_argument("--no-hf", action="store_true")
    parser.add_argument("--json", metavar="OUT", help="Write results here.")
    parser.add_argument("--smoke", action="store_true",
                        help="Tiny model, 2 rounds, 8 new tokens, batch 1.")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.new_tokens, args.prompt_length = 2, 8, 4
        args.batch_sizes, args.no_hf = "1", True
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.samplers = args.samplers.split(",")
    for s in args.samplers:
        if s not in ("greedy", "top_k"):
            parser.error(f"unknown sampler {s!r}; expected greedy or top_k")
    return args


def ours(shape, prompts, new_tokens, sampler):
    import keras_gpt

    model = keras_gpt.GPT(keras_gpt.GPTConfig(**shape))
    kwargs = (dict(temperature=0) if sampler == "greedy"
              else dict(temperature=1.0, top_k=TOP_K, seed=1))

    def run():
        out = keras_gpt.generate(model, prompts, max_new_tokens=new_tokens,
                                 eot_id=None, **kwargs)
        assert all(len(row) == new_tokens for row in out)

    return run


def keras_hub(shape, prompts, new_tokens, sampler):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=shape["vocab_size"], num_layers=shape["n_layers"],
        num_heads=shape["n_heads"], hidden_dim=shape["d_model"],
        intermediate_dim=4 * shape["d_model"],
        max_sequence_length=shape["context_length"], dropout=0.0)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy" if sampler == "greedy"
               else keras_hub.samplers.TopKSampler(k=TOP_K, seed=1))
    batch, length = prompts.shape
    total = length + new_tokens
    token_ids = np.zeros((batch, total), "int32")
    token_ids[:, :length] = prompts
    mask = np.zeros((batch, total), bool)
    mask[:, :length] = True
    inputs = {"token_ids": token_ids, "padding_mask": mask}

    def run():
        out = lm.generate(inputs, stop_token_ids=None)
        assert np.asarray(out["token_ids"]).shape == (batch, total)

    return run


def hugging_face(shape, prompts, new_tokens, sampler):
    import torch
    import transformers

    config = transformers.GPT2Config(
        vocab_size=shape["vocab_size"], n_positions=shape["context_length"],
        n_embd=shape["d_model"], n_layer=shape["n_layers"],
        n_head=shape["n_heads"], resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=0, eos_token_id=None, pad_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.tensor(prompts, dtype=torch.long)
    mask = torch.ones_like(ids)
    kwargs = (dict(do_sample=False) if sampler == "greedy"
              else dict(do_sample=True, top_k=TOP_K, temperature=1.0,
                        top_p=1.0))

    def run():
        torch.manual_seed(1)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask,
                                 max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, pad_token_id=0,
                                 eos_token_id=None, **kwargs)
        assert tuple(out.shape) == (len(prompts), prompts.shape[1]
                                    + new_tokens)

    return run


def time_call(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    import keras

    backend = keras.backend.backend()
    shape = SMOKE if args.smoke else FULL
    makers = {"ours": ours}
    if not args.no_keras_hub:
        makers["keras_hub"] = keras_hub
    skipped = {}
    if not args.no_hf:
        try:
            import transformers  # noqa: F401
            makers["hf_torch"] = hugging_face
        except ImportError as error:
            skipped["hf_torch"] = f"transformers is not importable ({error})"
    for name, reason in skipped.items():
        print(f"skipping {name}: {reason}")
    print(f"backend {backend}, keras {keras.__version__}; model {shape}; "
          f"prompt {args.prompt_length} + {args.new_tokens} new tokens; "
          f"best of {args.rounds} interleaved rounds")

    results = []
    rng = np.random.default_rng(0)
    for batch in args.batch_sizes:
        prompts = rng.integers(0, shape["vocab_size"],
                               (batch, args.prompt_length)).astype("int32")
        for sampler in args.samplers:
            runs, first, best = {}, {}, {}
            for name, make in makers.items():
                runs[name] = make(shape, prompts, args.new_tokens, sampler)
                first[name] = time_call(runs[name])
                best[name] = float("inf")
            for _ in range(args.rounds):
                for name, run in runs.items():
                    best[name] = min(best[name], time_call(run))
            row = {"backend": backend, "batch": batch, "sampler": sampler}
            for name in runs:
                row[f"{name}_tokens_per_s"] = batch * args.new_tokens / best[name]
                row[f"{name}_first_call_s"] = first[name]
            for name in runs:
                if name != "ours":
                    row[f"ours_over_{name}"] = (row["ours_tokens_per_s"]
                                                / row[f"{name}_tokens_per_s"])
            results.append(row)
            print(format_row(row, list(runs)), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "skipped": skipped}, f, indent=2)
    return results


def format_row(row, names):
    parts = [f"{row['backend']:<10} batch {row['batch']:<2} "
             f"{row['sampler']:<6}"]
    for name in names:
        parts.append(f"{name} {row[f'{name}_tokens_per_s']:8.1f} tok/s "
                     f"(first call {row[f'{name}_first_call_s']:.1f} s)")
    for name in names:
        if name != "ours":
            parts.append(f"ours/{name} {row[f'ours_over_{name}']:.2f}x")
    return " | ".join(parts)


if __name__ == "__main__":
    main()
