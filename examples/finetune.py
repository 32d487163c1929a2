"""Fine-tune and compress: a trained GPT -> LoRA on your texts -> merge ->
int8 -> SavedModel, printing what each step did.

    KERAS_BACKEND=jax python examples/finetune.py SOURCE TEXTS OUT

SOURCE is any model `keras-gpt train --init-from` accepts: a run directory
(`keras-gpt train --out runs/demo`), a Hugging Face GPT-2 folder converted
or not, a KerasHub preset. TEXTS is a folder (or file, or glob) of your
texts. OUT receives `lora-run/` (the LoRA run directory), `int8-run/` (the
merged model in int8) and `served/` (the SavedModel of the int8 model).
Without TEXTS, the source files of Python's own `json` package are used,
so the script runs offline on any machine.
"""

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

import keras_gpt
from keras_gpt.finetune import finetune, load_source, quantize_run


def size_mb(path):
    path = Path(path)
    files = [path] if path.is_file() else path.rglob("*")
    return sum(p.stat().st_size for p in files if p.is_file()) / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("texts", nargs="?")
    parser.add_argument("out", nargs="?", default="finetuned")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--prompt", default="def ")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.texts:
        args.texts = str(Path(json.__file__).parent)

    # 1. The source: weights, config and tokenizer.
    source = load_source(args.source)
    c = source.model.config
    print(f"1. Source {args.source} ({source.record['kind']}): "
          f"{c.n_layers} layers, d_model {c.d_model}, vocab {c.vocab_size}, "
          f"{source.model.count_params():,} parameters, "
          f"{source.tokenizer.kind} tokenizer")

    # 2. LoRA on the texts: a normal run directory (resumable), the factors
    #    also in lora-run/lora.safetensors.
    start = time.time()
    final = finetune(source, out / "lora-run", data=[args.texts],
                     lora_rank=args.lora_rank, steps=args.steps,
                     eval_every=args.steps // 2 if args.steps % 2 == 0
                     else args.steps, samples=0, verbose=2)
    lines = (out / "lora-run" / "metrics.jsonl").read_text().splitlines()
    before = json.loads(lines[0])["val_loss"]
    print(f"2. LoRA rank {args.lora_rank} on {args.texts}: validation loss "
          f"{before:.3f} -> {final['val_loss']:.3f} in {final['step']} steps "
          f"({time.time() - start:.0f} s); adapter "
          f"{size_mb(out / 'lora-run' / 'lora.safetensors'):.2f} MB")

    # 3. Merge: the deltas folded into the kernels, a plain GPT.
    model = keras.models.load_model(out / "lora-run" / "model.keras")
    trainable, total = model.lora_parameter_counts()
    ids = np.array([source.tokenizer.encode(args.prompt) or [0]], "int32")
    adapted = keras.ops.convert_to_numpy(model(ids))
    model.merge_lora()
    merged = keras.ops.convert_to_numpy(model(ids))
    print(f"3. Merged {trainable:,} LoRA parameters into {total - trainable:,}"
          f": logits differ by at most {np.abs(merged - adapted).max():.1e}")

    # 4. int8: per-channel int8 weights (the run directory merges too).
    _, float_bytes, int8_bytes = quantize_run(out / "lora-run",
                                              out / "int8-run")
    model.quantize("int8")
    int8 = keras.ops.convert_to_numpy(model(ids))
    print(f"4. int8: model.keras {float_bytes / 1e6:.2f} MB -> "
          f"{int8_bytes / 1e6:.2f} MB; logits' relative change "
          f"{np.linalg.norm(int8 - merged) / np.linalg.norm(merged):.4f}")

    # 5. A SavedModel for TF Serving: strings in, strings out, int8 inside.
    served = keras_gpt.export_saved_model(model, source.tokenizer,
                                          out / "served")
    print(f"5. SavedModel {served}: variables "
          f"{size_mb(served / 'variables'):.2f} MB")

    text = keras_gpt.generate(model, args.prompt, tokenizer=source.tokenizer,
                              max_new_tokens=60, temperature=0)
    print(f"Greedy continuation of {args.prompt!r} by the int8 model:\n"
          f"{args.prompt}{text}")


if __name__ == "__main__":
    main()
