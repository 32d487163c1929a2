"""`keras-gpt quantize RUN_DIR --out OUT_DIR`: an int8 copy of a run.

Every projection and the token embedding (and an untied unembedding) get
int8 weights with one float scale per output channel (Keras'
`Model.quantize("int8")`); a LoRA run is merged first. OUT_DIR is a run
directory that `generate` and `export` accept, and `train --init-from
OUT_DIR --lora-rank R` trains a LoRA on.
"""


def register(commands):
    p = commands.add_parser(
        "quantize", help="Write an int8 copy of a run directory.",
        description=__doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="The run to quantize.")
    p.add_argument("--out", required=True, metavar="OUT_DIR",
                   help="A new (or empty) run directory.")
    p.add_argument("--mode", default="int8", help="Quantization mode "
                   "(int8, the only one).")
    p.set_defaults(run=run)


def run(args):
    from keras_gpt.finetune import quantize_run

    out, before, after = quantize_run(args.run_dir, args.out, mode=args.mode)
    print(f"Quantized {args.run_dir} -> {out} ({args.mode}): model.keras "
          f"{before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    return 0
