"""`keras-gpt`: the command line. It only wires library calls together."""

import argparse
import os
import sys

# Quiet TensorFlow's C++ start-up log lines before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _params(args):
    from keras_gpt.config import GPTConfig
    from keras_gpt.params import parameter_table

    overrides = {k: v for k, v in (("vocab_size", args.vocab_size),
                                    ("context_length", args.context_length))
                 if v is not None}
    config = GPTConfig.from_preset(args.preset, **overrides)
    print(f"{args.preset}: {config.n_layers} layers, d_model {config.d_model}, "
          f"{config.n_heads} heads of {config.d_head}, d_mlp {config.d_mlp}, "
          f"vocab {config.vocab_size}, context {config.context_length}")
    print(parameter_table(config))
    return 0


def build_parser():
    from keras_gpt.config import PRESETS

    parser = argparse.ArgumentParser(
        prog="keras-gpt",
        description="Train, inspect and sample GPT models built on Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True)

    params = commands.add_parser(
        "params", help="Parameter count per component, without building.")
    params.add_argument("preset", choices=list(PRESETS), metavar="PRESET",
                        help=f"One of: {', '.join(PRESETS)}.")
    params.add_argument("--vocab-size", type=int)
    params.add_argument("--context-length", type=int)
    params.set_defaults(run=_params)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"keras-gpt {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
