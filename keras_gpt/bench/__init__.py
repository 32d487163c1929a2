"""`keras-gpt bench`: keras_gpt against KerasHub and Hugging Face, one table.

In one process, on the Keras backend `KERAS_BACKEND` names, for the same
model shape, batch and sequence length (`--config default`: 6 layers,
d_model 384, vocab 8192, context 256, batch 8; `--config baby`: nanoGPT's
CPU char config; see `options.py` and, for what each row runs,
`implementations.py`). Two rows are ours: `keras_gpt` trains through
`compile_for_pretraining`, `keras_gpt_plain` through the plain
`model.compile(optimizer=AdamW, loss=SparseCategoricalCrossentropy(
from_logits=True))` that Keras users write (`GPT.compile` picks the fast
loss and XLA choice for it). Measured:

- training tokens/s and ms per step, warm (after the first, compiling
  call), timed interleaved round by round (keras_gpt, keras_gpt_plain,
  keras_hub, hf_torch, keras_gpt, ...) and best of the rounds: these
  machines are noisy;
- model FLOP utilisation: (6 N + 12 L d_model T) FLOPs per token (N: the
  parameters without position embeddings; L layers; T the sequence
  length) times tokens/s, over the matmul peak measured in the same run
  (`measure.matmul_peak`): float32 on CPU, the run's dtype (float32 or
  bfloat16) on an accelerator (`--no-peak` and `--smoke` skip it);
- the first call's time (tracing, compiling, building) and the peak memory
  it added (`measure.MemoryProbe`);
- decoding tokens/s at each batch size, greedy (and top-k when asked);
  decoding does not depend on how a model was compiled, so it has one row
  of ours.

It prints one table with our / reference ratios (`table.py`) and can write
the same figures as JSON. References whose packages are missing are
skipped with the reason printed. Parts (`options.PARTS`) are run by
`PART_RUNNERS` and printed by `table.ROW_GROUPS`; a new part adds itself
to both.

Example:

```
KERAS_BACKEND=jax keras-gpt bench --json bench-jax.json
KERAS_BACKEND=torch keras-gpt bench --config baby --only train --rounds 5
keras-gpt bench --smoke                       # tiny model, seconds
```
"""

import argparse
import importlib.util
import json

import numpy as np

from keras_gpt.bench import implementations as impl
from keras_gpt.bench import measure, quantized
from keras_gpt.bench.options import (BABY_MODEL, CONFIGS,  # noqa: F401
                                     ISSUE_MODEL, NAMES, SMOKE_MODEL,
                                     add_arguments, options_from_args)
from keras_gpt.bench.table import format_table


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
    peak = (measure.matmul_peak(backend, accelerator, peak_dtype)
            if o.get("peak", True) else None)
    n_params = _non_position_params(o["model"])
    result = {"backend": backend, "keras": keras.__version__,
              "machine": measure.machine(), "options": o,
              "matmul_peak_gflops": peak, "matmul_peak_dtype": peak_dtype,
              "params_without_positions": n_params,
              "flops_per_token": flops_per_token(o["model"], n_params),
              "skipped": skipped, "train": {}, "decode": [],
              "complete": False}
    save = save or (lambda result: None)
    for part in o["only"]:
        PART_RUNNERS[part](o, names, backend, accelerator, result, save)
    result["complete"] = True
    save(result)
    return result


def _available(skip):
    names, skipped = ["keras_gpt"], {}
    for name in NAMES[1:]:
        if name in skip:
            skipped[name] = "--skip"
            continue
        missing = [m for m in impl.NEEDS.get(name, ())
                   if importlib.util.find_spec(m) is None]
        if missing:
            skipped[name] = f"{', '.join(missing)} not importable"
            continue
        for module in impl.NEEDS.get(name, ()):  # not counted as its memory
            importlib.import_module(module)
        names.append(name)
    return names, skipped


def _framework(name, backend):
    return "torch" if name == "hf_torch" else backend


def _train(o, names, backend, accelerator, result, save):
    x, y = impl.random_batches(o["model"], o["batch_size"], o["steps"])
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
    tokens = x.size  # batch_size x steps x context_length
    peak = result["matmul_peak_gflops"]
    for name in names:
        tps = tokens / best[name]
        rows[name].update(tokens_per_s=tps, ms_per_step=1000 * best[name]
                          / o["steps"])
        if peak:
            rows[name]["mfu"] = tps * result["flops_per_token"] / (
                peak["best"] * 1e9)
    result["train"] = rows
    save(result)


def _decode(o, names, backend, accelerator, result, save):
    """One row per batch size and sampler, saved as it is measured."""
    names = [name for name in names if name in impl.DECODERS]
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
            result["decode"].append(row)
            save(result)


# Measured with `time keras-gpt bench` (2026-12-02, 2-core AMD EPYC, JAX).
SMOKE_NOTE = ("--smoke ran the smallest shapes to check that every row runs; "
              "its speeds mean nothing. The full bench (without --smoke: "
              "the default size, 3 rounds, training and decoding) takes "
              "about 2.5 minutes per backend on 2 CPU cores.")

# What runs each part of `o["only"]` (its rows go to `table.ROW_GROUPS`).
PART_RUNNERS = {"train": _train, "decode": _decode}


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
    if o["config"] == "smoke":
        print(SMOKE_NOTE, flush=True)
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
