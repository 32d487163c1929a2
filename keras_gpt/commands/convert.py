"""`keras-gpt convert --from hf|keras-hub SRC --out RUN_DIR`: a GPT-2
checkpoint as a run directory that `generate`, `train --resume` and `export`
accept.

SRC is a local Hugging Face GPT-2 folder (config.json, model.safetensors or
pytorch_model.bin, vocab.json, merges.txt) for `--from hf`, or for
`--from keras-hub` a KerasHub preset folder (or name already cached) of a
GPT2CausalLM or GPT2Backbone, or a `.keras` file of one.
"""

from keras_gpt.commands.flags import real


def register(commands):
    p = commands.add_parser(
        "convert", help="Convert a Hugging Face or KerasHub GPT-2 into a run "
                        "directory.", description=__doc__)
    p.add_argument("--from", dest="source_format", required=True,
                   choices=("hf", "keras-hub"),
                   help="Format of SRC (required, no default).")
    p.add_argument("source", metavar="SRC",
                   help="What to convert (required).")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="A new (or empty) run directory (required).")
    p.add_argument("--dropout", type=real(0, 1, high_open=True), default=0.0,
                   help="Dropout rate of the converted model (default 0).")
    p.set_defaults(run=run)


def run(args):
    from pathlib import Path

    from keras_gpt.convert import (ConversionError, from_huggingface,
                                   from_keras_hub, write_run)
    from keras_gpt.convert.huggingface import missing_tokenizer_files
    from keras_gpt.convert.keras_hub import load_keras_hub

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"{out} already holds files; choose another "
                              "--out.")
    if args.source_format == "hf":
        model, tokenizer = from_huggingface(args.source, dropout=args.dropout,
                                            warn=False)
        if tokenizer is None:
            raise ConversionError(
                f"{args.source} has no tokenizer files (missing "
                f"{', '.join(missing_tokenizer_files(args.source))}); a run "
                "directory needs the tokenizer: copy GPT-2's vocab.json and "
                "merges.txt into it.")
    else:
        model, tokenizer = from_keras_hub(load_keras_hub(args.source),
                                          dropout=args.dropout)
        if tokenizer is None:
            raise ConversionError(
                f"{args.source} holds no tokenizer (a bare backbone); a run "
                "directory needs one: convert a GPT2CausalLM preset.")
    write_run(model, tokenizer, out)
    print(f"Converted {args.source} -> {out}: {model.config.n_layers} "
          f"layers, d_model {model.config.d_model}, vocab "
          f"{model.config.vocab_size}, {model.count_params():,} parameters.")
    return 0

