"""`keras-gpt bench --quantize int8`: one model, float32 against int8.

The same weights decode in float32 and after `GPT.quantize("int8")`, timed
interleaved (float32, int8, float32, ...; best of `--rounds`) for each
decoding batch size and sampler, with the int8 / float32 speed ratio; then
the validation loss of each on the same windows. With `--run-dir RUN_DIR` the
model is a trained run's and the windows its own validation tokens;
otherwise the bench model (random weights) on random ids, where both losses
sit near log(vocab) and only their difference means anything.
"""

import json
from pathlib import Path

import numpy as np

from keras_gpt.backend.timing import interleaved_best, time_call

MODES = ("int8",)
VAL_BATCHES = 8


def add_arguments(p):
    p.add_argument("--quantize", choices=MODES, metavar="MODE",
                   help="Compare the model in float32 and in MODE (int8): "
                        "decoding speed side by side and validation loss; "
                        "replaces the comparison with other implementations.")
    p.add_argument("--run-dir", metavar="RUN_DIR",
                   help="With --quantize: a trained run's model and "
                        "validation data instead of the random bench model.")


def options(args):
    if args.run_dir and not args.quantize:
        raise ValueError("--run-dir goes with --quantize int8.")
    return {"quantize": args.quantize, "run_dir": args.run_dir}


def _models(o):
    """(float model, its int8 copy, validation ids)."""
    from keras_gpt.config import GPTConfig
    from keras_gpt.model import GPT

    if o["run_dir"]:
        from keras_gpt.checkpoints import load_model
        from keras_gpt.files import run_model_file, run_tokenizer_dir
        from keras_gpt.tokenizers import load_tokenizer
        from keras_gpt.training.run import prepare_data

        model = load_model(run_model_file(o["run_dir"]), compile=False)
        if model.lora_rank is not None:
            model.merge_lora()
        run_dir = Path(o["run_dir"])
        run_options = json.loads((run_dir / "run.json").read_text())
        _, _, val = prepare_data(run_options,
                                 load_tokenizer(run_tokenizer_dir(run_dir)))
        val = np.asarray(val, np.int64)
    else:
        model = GPT(GPTConfig(**o["model"], dropout=0.0))
        val = np.random.default_rng(2).integers(
            0, o["model"]["vocab_size"], 64 * o["model"]["context_length"])
    quantized = GPT.from_config(model.get_config())
    quantized.set_weights(model.get_weights())
    quantized.quantize(o["quantize"])
    return model, quantized, val


def _windows(val, context, batch=8, count=VAL_BATCHES):
    """Evenly spaced (x, y) windows over the validation ids."""
    span = context + 1
    n = min(batch * count, max(1, (len(val) - 1) // span))
    starts = np.linspace(0, len(val) - span, n).astype(np.int64)
    rows = np.stack([val[s:s + span] for s in starts]).astype("int32")
    return rows[:, :-1], rows[:, 1:]


def _loss(model, x, y):
    from keras_gpt.losses import next_token_loss

    loss = next_token_loss()
    total = 0.0
    for i in range(0, len(x), 8):
        logits = model.predict_on_batch(x[i:i + 8])
        total += float(np.asarray(loss(y[i:i + 8], logits))) * len(x[i:i + 8])
    return total / len(x)


def run(o, log=print):
    """{"decode": rows, "val_loss": {...}, "model": shape}: float32 vs int8.

    Each decoding row holds tokens/s and first-call seconds per variant
    and `ratio` (int8 / float32 tokens/s).
    """
    from keras_gpt.generation import generate

    model, quantized, val = _models(o)
    variants = {"float32": model, o["quantize"]: quantized}
    c = model.config
    rng = np.random.default_rng(1)
    new = min(o["new_tokens"], c.context_length - o["prompt_length"])
    rows = []
    for batch in o["decode_batch_sizes"]:
        prompts = rng.integers(0, c.vocab_size,
                               (batch, o["prompt_length"])).astype("int32")
        for sampler in o["samplers"]:
            kwargs = (dict(temperature=0) if sampler == "greedy"
                      else dict(temperature=1.0, top_k=50, seed=1))
            runs = {name: (lambda m=m: generate(
                        m, prompts, max_new_tokens=new, eot_id=None, **kwargs))
                    for name, m in variants.items()}
            row = {"batch": batch, "sampler": sampler, "new_tokens": new}
            for name, fn in runs.items():
                row[name] = {"first_call_s": time_call(fn)[0]}
            best = interleaved_best(runs, o["rounds"])
            for name in runs:
                row[name]["tokens_per_s"] = batch * new / best[name]
            row["ratio"] = (row[o["quantize"]]["tokens_per_s"]
                            / row["float32"]["tokens_per_s"])
            rows.append(row)
            log(format_row(row, o["quantize"]))
    x, y = _windows(val, c.context_length)
    losses = {name: _loss(m, x, y) for name, m in variants.items()}
    source = o["run_dir"] or "random bench model"
    return {"model": c.to_dict(), "source": source,
            "int8_products": _int8_products(quantized),
            "decode": rows, "val_loss": losses,
            "val_windows": int(len(x))}


def _int8_products(model):
    """What int8 decoding multiplies here (PyTorch's decoder chooses by
    processor, so figures from different machines differ in kind)."""
    import keras

    if keras.backend.backend() != "torch":
        return "int8 x int8 (Keras' arithmetic, XLA)"
    from keras_gpt.generation.torch_products import int8_products

    return int8_products(model.variables[0].value.device.type)


def format_row(row, mode):
    f, q = row["float32"], row[mode]
    return (f"decode {row['sampler']} batch {row['batch']} tokens/s: "
            f"float32 {f['tokens_per_s']:.0f}, {mode} {q['tokens_per_s']:.0f}"
            f" ({row['ratio']:.2f}x)")


def format_table(result, mode):
    """The comparison as text."""
    c = result["model"]
    lines = [f"float32 vs {mode}: {result['source']} ({c['n_layers']} "
             f"layers, {c['n_heads']} heads, d_model {c['d_model']}, vocab "
             f"{c['vocab_size']}); timed interleaved, best of the rounds; "
             f"int8 products: {result['int8_products']}"]
    lines += [format_row(row, mode) for row in result["decode"]]
    losses = result["val_loss"]
    change = (losses[mode] - losses["float32"]) / losses["float32"]
    lines.append(f"validation loss ({result['val_windows']} windows): float32 "
                 f"{losses['float32']:.4f}, {mode} {losses[mode]:.4f} "
                 f"({100 * change:+.3f}%)")
    return "\n".join(lines)
