"""`keras-gpt params PRESET`: the parameter table, without building."""

from keras_gpt.config import PRESETS, GPTConfig
from keras_gpt.params import parameter_table


def register(commands):
    parser = commands.add_parser(
        "params", help="Parameter count per component, without building.")
    parser.add_argument("preset", choices=list(PRESETS), metavar="PRESET",
                        help=f"One of: {', '.join(PRESETS)}.")
    parser.add_argument("--vocab-size", type=int)
    parser.add_argument("--context-length", type=int)
    parser.set_defaults(run=run)


def run(args):
    overrides = {k: v for k, v in (("vocab_size", args.vocab_size),
                                    ("context_length", args.context_length))
                 if v is not None}
    config = GPTConfig.from_preset(args.preset, **overrides)
    print(f"{args.preset}: {config.n_layers} layers, d_model {config.d_model}, "
          f"{config.n_heads} heads of {config.d_head}, d_mlp {config.d_mlp}, "
          f"vocab {config.vocab_size}, context {config.context_length}")
    print(parameter_table(config))
    return 0
