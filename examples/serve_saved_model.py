"""Export a trained run as a SavedModel and query it the way TF Serving is.

    python examples/serve_saved_model.py               # trains a tiny run
    python examples/serve_saved_model.py RUN_DIR --out served/gpt

The export (`keras_gpt.export_run`) holds the tokenizer and the decoding
loop, so a client sends strings and gets strings. This script loads it with
`tf.saved_model.load` and answers the JSON bodies of TF Serving's REST
`:predict` requests with the same rules the server applies (row format
"instances" -> "predictions", columnar "inputs" -> "outputs"). To serve it
for real (the decoding loop is XLA-compiled, hence the flag on CPU):

    tensorflow_model_server --rest_api_port=8501 --model_name=gpt \\
        --model_base_path=$PWD/served/gpt --xla_cpu_compilation_enabled=true
    curl -d '{"instances": ["Once upon a time"]}' \\
        http://localhost:8501/v1/models/gpt:predict

Any backend trains; the export always runs under TensorFlow.
"""

import argparse
import base64
import json
import tempfile
from pathlib import Path


def train_tiny(run_dir, steps):
    """A small run on the built-in corpus (a minute or two on 2 cores)."""
    from keras_gpt.commands.main import main

    code = main(["train", "--tokenizer", "bpe", "--vocab-size", "512",
                 "--n-layers", "2", "--n-heads", "2", "--d-model", "64",
                 "--context-length", "64", "--batch-size", "16",
                 "--steps", str(steps), "--eval-every", str(steps),
                 "--samples", "0", "--out", str(run_dir)])
    if code:
        raise SystemExit(code)


def predict(served, body):
    """TF Serving's REST :predict on a loaded SavedModel: JSON in and out.

    `{"signature_name": ..., "instances": [...]}` (one entry per row; a
    dict per row when the signature has several inputs) answers
    `{"predictions": [...]}` (one entry per row); `{"inputs": {...}}`
    (named, whole tensors; scalars allowed) answers `{"outputs": {...}}`.
    Bytes that are not UTF-8 travel as `{"b64": base64 text}`.
    """
    import tensorflow as tf

    request = json.loads(body)
    function = served.signatures[request.get("signature_name",
                                             "serving_default")]
    specs = function.structured_input_signature[1]
    if "instances" in request:
        rows = request["instances"]
        if len(specs) == 1:
            rows = [{next(iter(specs)): row} for row in rows]
        inputs = {name: [row[name] for row in rows] for name in specs}
    else:
        inputs = request["inputs"]
        if not isinstance(inputs, dict):
            inputs = {next(iter(specs)): inputs}
    outputs = function(**{name: tf.constant(_bytes(inputs[name]), spec.dtype)
                          for name, spec in specs.items()})
    outputs = {name: _json(value.numpy()) for name, value in outputs.items()}
    if "instances" not in request:
        return json.dumps({"outputs": outputs})
    rows = [dict(zip(outputs, values)) for values in zip(*outputs.values())]
    if len(outputs) == 1:
        rows = [next(iter(row.values())) for row in rows]
    return json.dumps({"predictions": rows})


def _bytes(value):
    """JSON input values, with `{"b64": ...}` objects decoded to bytes."""
    if isinstance(value, list):
        return [_bytes(v) for v in value]
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    return value


def _json(array):
    if array.dtype == object:  # tf.string
        return [s.decode("utf-8", errors="replace") for s in array.ravel()]
    return array.tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                        help="A trained run (default: train a tiny one).")
    parser.add_argument("--out", help="The model's base directory (default: "
                                      "a temporary one).")
    parser.add_argument("--steps", type=int, default=300,
                        help="Training steps of the tiny run.")
    args = parser.parse_args()

    import keras_gpt

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run_dir
        if run_dir is None:
            run_dir = Path(scratch) / "run"
            train_tiny(run_dir, args.steps)
        out = Path(args.out or Path(scratch) / "served")
        target = keras_gpt.export_run(run_dir, out, max_new_tokens=24)
        print(f"\nExported {run_dir} -> {target}")

        import importlib

        import tensorflow as tf

        importlib.import_module("tensorflow_text")  # its ops (SentencePiece)

        served = tf.saved_model.load(str(target))
        print("Signatures:", ", ".join(sorted(served.signatures)))
        bodies = [
            {"instances": ["The ", "def main():\n", "",
                           {"b64": base64.b64encode(b"caf\xe9").decode()}]},
            {"signature_name": "generate",
             "inputs": {"prompts": ["The meaning of"], "max_new_tokens": 32,
                        "temperature": 0.8, "top_k": 40, "top_p": 0.95,
                        "seed": 7}},
            {"signature_name": "tokenize", "instances": ["Hello, world"]},
        ]
        for body in bodies:
            body = json.dumps(body)
            print(f"\nPOST /v1/models/gpt:predict\n{body}")
            print(f"-> {predict(served, body)}")
        if args.out is None:
            print("\n(The export is in a temporary directory: pass --out DIR "
                  "to keep it.)")
        print("Serve it: tensorflow_model_server --rest_api_port=8501 "
              f"--model_name=gpt --model_base_path={out.resolve()} "
              "--xla_cpu_compilation_enabled=true")


if __name__ == "__main__":
    main()
