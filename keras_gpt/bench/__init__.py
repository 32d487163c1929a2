"""`keras-gpt bench`: keras_gpt against KerasHub and Hugging Face, one table.

In one process, on the Keras backend `KERAS_BACKEND` names, for the same
model shape, batch and sequence length (see `implementations.py` for what
each implementation runs):

- training tokens/s, warm (after the first, compiling call), timed
  interleaved round by round (keras_gpt, keras_hub, hf_torch, keras_gpt,
  ...) and best of the rounds: these machines are noisy;
- model FLOP utilisation: (6 N + 12 L d_model T) FLOPs per token (N: the
  parameters without position embeddings; L layers; T the sequence
  length) times tokens/s, over the matmul peak measured in the same run
  (`measure.matmul_peak`): float32 on CPU, the run's dtype (float32 or
  bfloat16) on an accelerator;
- the first call's time (tracing, compiling, building) and the peak memory
  it added (`measure.MemoryProbe`);
- decoding tokens/s at each batch size, greedy (and top-k when asked).

It prints one table with keras_gpt / reference ratios and can write the
same figures as JSON. References whose packages are missing are skipped
with the reason printed.

Example:

```
KERAS_BACKEND=jax keras-gpt bench --json bench-jax.json
KERAS_BACKEND=torch python tools/benchmark.py --only train --rounds 5
keras-gpt bench --smoke                       # tiny model, seconds
```
"""

import argparse
import importlib.util
import json

import numpy as np

from keras_gpt.bench import implementations as impl
from keras_gpt.bench import measure, quantized

NAMES = ("keras_gpt", "keras_hub", "hf_torch")
ISSUE_MODEL = dict(n_layers=6, n_heads=6, d_model=384, vocab_size=8192,
                   context_length=256)
SMOKE_MODEL = dict(n_layers=2, n_heads=2, d_model=32, vocab_size=64,
                   context_length=32)


def add_arguments(p):
    """The benchmark's options (shared by `keras-gpt bench` and tools/)."""
    p.add_argument("--preset", help="A GPTConfig preset (e.g. gpt2-small); "
                   "default: 6 layers, 6 heads, d_model 384, vocab 8192.")
    for flag in ("n_layers", "n_heads", "d_model", "vocab_size"):
        p.add_argument("--" + flag.replace("_", "-"), type=int)
    p.add_argument("--seq-len", type=int,
                   help="Training sequence length = context length "
                        "(default 256, or the preset's).")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4,
                   help="Training steps per timed round (default 4).")
    p.add_argument("--rounds", type=int, default=3,
                   help="Timed rounds per implementation; the best counts.")
    p.add_argument("--dtype", default="float32",
                   choices=("float32", "mixed_bfloat16", "bfloat16"))
    p.add_argument("--decode-batch-sizes", default="1,8",
                   help="Comma-separated (default 1,8).")
    p.add_argument("--prompt-length", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--samplers", default="greedy",
                   help="Comma-separated: greedy, top_k (default greedy).")
    p.add_argument("--only", default="train,decode",
                   help="Comma-separated parts: train, decode.")
    p.add_argument("--skip", default="",
                   help="Comma-separated references to leave out: "
                        "keras_hub, hf_torch.")
    p.add_argument("--json", metavar="OUT", help="Write the results here.")
    p.add_argument("--smoke", action="store_true",
                   help="Tiny model, 2 steps, 1 round, 4 new tokens.")
    quantized.add_arguments(p)


def options_from_args(args):
    """Validated benchmark options (a dict) from parsed arguments."""
    from keras_gpt.config import GPTConfig

    model = dict(SMOKE_MODEL if args.smoke else ISSUE_MODEL)
    if args.preset:
        preset = GPTConfig.from_preset(args.preset)
        model = {k: getattr(preset, k) for k in model}
    for flag in ("n_layers", "n_heads", "d_model", "vocab_size"):
        if getattr(args, flag) is not None:
            model[flag] = getattr(args, flag)
    if args.seq_len is not None:
        model["context_length"] = args.seq_len
    o = dict(model=model, batch_size=args.batch_size, steps=args.steps,
             rounds=args.rounds, dtype=args.dtype,
             decode_batch_sizes=_ints(args.decode_batch_sizes,
                                      "--decode-batch-sizes"),
             prompt_length=args.prompt_length, new_tokens=args.new_tokens,
             samplers=_names(args.samplers, ("greedy", "top_k"), "--samplers"),
             only=_names(args.only, ("train", "decode"), "--only"),
             skip=_names(args.skip, NAMES[1:], "--skip"), json=args.json,
             **quantized.options(args))
    if args.smoke:
        o.update(batch_size=2, steps=2, rounds=1, decode_batch_sizes=[1],
                 prompt_length=4, new_tokens=4)
    GPTConfig(**model)  # validates the shape (heads divide d_model, ...)
    for key in ("batch_size", "steps", "rounds", "prompt_length",
                "new_tokens"):
        if o[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')}={o[key]} must be "
                             ">= 1.")
    if o["prompt_length"] + o["new_tokens"] > model["context_length"]:
        raise ValueError(
            f"--prompt-length {o['prompt_length']} + --new-tokens "
            f"{o['new_tokens']} exceeds the context length "
            f"{model['context_length']}.")
    return o


def _ints(text, flag):
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected integers like 1,8.")
    if not values or min(values) < 1:
        raise ValueError(f"{flag} {text!r}: expected integers >= 1.")
    return values


def _names(text, allowed, flag):
    names = [v for v in text.split(",") if v]
    for name in names:
        if name not in allowed:
            raise ValueError(f"{flag}: unknown {name!r}; expected one of "
                             f"{', '.join(allowed)}.")
    return names


def flops_per_token(model, n_params):
    """6 N + 12 L d_model T: training FLOPs per token (PaLM's estimate)."""
    return (6 * n_params + 12 * model["n_layers"] * model["d_model"]
            * model["context_length"])


def _non_position_params(model):
    from keras_gpt.config import GPTConfig
    from keras_gpt.params import parameter_table

    config = GPTConfig(**model)
    table = parameter_table(config)
    positions = config.context_length * config.d_model \
        if config.positions == "learned" else 0
    return table.total - positions


def run_benchmark(o, log=print, save=None):
    """Measure everything `o` (see `options_from_args`) asks; a dict.

    `save(result)`, if given, is called after the training part and after
    each decoding row, with `result["complete"]` False until the end: a
    run stopped part-way (a time limit on a lent GPU) keeps what it
    measured.
    """
    import keras

    backend = keras.backend.backend()
    accelerator = measure.accelerator_name()
    names, skipped = _available(o["skip"])
    for name, reason in skipped.items():
        log(f"skipping {name}: {reason}")
    # On CPU the peak is float32's also for bfloat16 runs: the CPU target is
    # over that peak, and without bf16 matrix units a bf16 2048^3 product is
    # slow even to time (torch's took 63 s on an AVX2 EPYC).
    peak_dtype = ("bfloat16" if accelerator and "bfloat16" in o["dtype"]
                  else "float32")
    peak = measure.matmul_peak(backend, accelerator, peak_dtype)
    n_params = _non_position_params(o["model"])
    result = {"backend": backend, "keras": keras.__version__,
              "machine": measure.machine(), "options": o,
              "matmul_peak_gflops": peak, "matmul_peak_dtype": peak_dtype,
              "params_without_positions": n_params,
              "flops_per_token": flops_per_token(o["model"], n_params),
              "skipped": skipped, "train": {}, "decode": [],
              "complete": False}
    save = save or (lambda result: None)
    if "train" in o["only"]:
        result["train"] = _train(o, names, backend, accelerator, result)
        save(result)
    if "decode" in o["only"]:
        for row in _decode(o, names, backend, accelerator):
            result["decode"].append(row)
            save(result)
    result["complete"] = True
    save(result)
    return result


def _available(skip):
    names, skipped = ["keras_gpt"], {}
    for name in NAMES[1:]:
        if name in skip:
            skipped[name] = "--skip"
            continue
        missing = [m for m in impl.NEEDS[name]
                   if importlib.util.find_spec(m) is None]
        if missing:
            skipped[name] = f"{', '.join(missing)} not importable"
            continue
        for module in impl.NEEDS[name]:  # not counted as its memory
            importlib.import_module(module)
        names.append(name)
    return names, skipped


def _framework(name, backend):
    return "torch" if name == "hf_torch" else backend


def _train(o, names, backend, accelerator, result):
    m = o["model"]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, m["vocab_size"], (o["batch_size"] * o["steps"],
                                            m["context_length"] + 1))
    x, y = ids[:, :-1].astype("int32"), ids[:, 1:].astype("int32")
    blocks, rows = {}, {}
    for name in names:
        device = "cuda" if accelerator else "cpu"
        with measure.MemoryProbe(_framework(name, backend), device) as probe:
            blocks[name] = impl.TRAINERS[name](o, x, y)
            first, loss = measure.time_call(blocks[name])
        if not np.isfinite(loss):
            raise RuntimeError(f"{name}: training loss is {loss}.")
        rows[name] = {"first_call_s": first,
                      "peak_memory_bytes": probe.peak_bytes,
                      "memory_kind": probe.kind}
    best = measure.interleaved_best(blocks, o["rounds"])
    tokens = o["batch_size"] * o["steps"] * m["context_length"]
    for name in names:
        tps = tokens / best[name]
        rows[name].update(tokens_per_s=tps, mfu=tps * result[
            "flops_per_token"] / (result["matmul_peak_gflops"]["best"] * 1e9))
    return rows


def _decode(o, names, backend, accelerator):
    """Yields one row per batch size and sampler."""
    rng = np.random.default_rng(1)
    for batch in o["decode_batch_sizes"]:
        prompts = rng.integers(0, o["model"]["vocab_size"],
                               (batch, o["prompt_length"])).astype("int32")
        for sampler in o["samplers"]:
            runs, row = {}, {"batch": batch, "sampler": sampler}
            for name in names:
                runs[name] = impl.DECODERS[name](o, prompts, o["new_tokens"],
                                                 sampler)
                row[name] = {"first_call_s": measure.time_call(runs[name])[0]}
            best = measure.interleaved_best(runs, o["rounds"])
            for name in names:
                row[name]["tokens_per_s"] = (batch * o["new_tokens"]
                                             / best[name])
            yield row


def format_table(r):
    """The results as text: a header and one line per measurement."""
    o, m = r["options"], r["options"]["model"]
    names = [n for n in NAMES if n not in r["skipped"]]
    refs = names[1:]
    where = r["machine"].get("accelerator") or (
        f"{r['machine']['processor']} ({r['machine']['cpus']} CPUs)")
    peak = r["matmul_peak_gflops"]
    lines = [
        f"keras-gpt bench: backend {r['backend']} (keras {r['keras']}) on "
        f"{where}",
        f"model {m['n_layers']} layers, {m['n_heads']} heads, d_model "
        f"{m['d_model']}, vocab {m['vocab_size']}, seq {m['context_length']};"
        f" {o['dtype']}; N = {r['params_without_positions']:,} (no positions)",
        f"{r['matmul_peak_dtype']} matmul peak GFLOP/s: " + ", ".join(
            f"{k} {v:.0f}" for k, v in peak.items()),
        f"{'':34}" + "".join(f"{n:>12}" for n in names)
        + "".join(f"{'vs ' + n:>13}" for n in refs)]

    def line(label, values, fmt, ratio=False):
        cells = "".join(f"{fmt(v):>12}" if v is not None else f"{'-':>12}"
                        for v in values)
        if ratio and values[0]:
            cells += "".join(f"{values[0] / v:>12.2f}x" if v else f"{'-':>13}"
                             for v in values[1:])
        lines.append(f"{label:34}{cells}")

    train = r["train"]
    if train:
        get = lambda key: [train[n][key] if n in train else None  # noqa: E731
                           for n in names]
        line(f"train tokens/s (batch {o['batch_size']})",
             get("tokens_per_s"), lambda v: f"{v:.0f}", ratio=True)
        line("train MFU", get("mfu"), lambda v: f"{100 * v:.1f}%")
        line("train first call s", get("first_call_s"), lambda v: f"{v:.1f}")
        line("train peak memory MB", get("peak_memory_bytes"),
             lambda v: f"{v / 2 ** 20:.0f}")
    for row in r["decode"]:
        label = f"decode {row['sampler']} batch {row['batch']}"
        line(f"{label} tokens/s",
             [row[n]["tokens_per_s"] if n in row else None for n in names],
             lambda v: f"{v:.0f}", ratio=True)
        line(f"{label} first call s",
             [row[n]["first_call_s"] if n in row else None for n in names],
             lambda v: f"{v:.1f}")
    return "\n".join(lines)


def run_and_report(o):
    """Run, print the table, write JSON when asked; returns the results."""
    from keras_gpt.files import atomic_write

    def save(results):
        atomic_write(o["json"], json.dumps(results, indent=2))

    if o.get("quantize"):
        results = quantized.run(o)
        if o["json"]:
            save(results)
        print(quantized.format_table(results, o["quantize"]), flush=True)
        return results
    results = run_benchmark(o, save=save if o["json"] else None)
    print(format_table(results), flush=True)
    return results


def main(argv=None):
    """tools/benchmark.py's entry point (same options as `keras-gpt bench`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        o = options_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    run_and_report(o)
    return 0
