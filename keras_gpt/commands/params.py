"""`keras-gpt params PRESET`: the parameter count of each part of a preset's
GPT (the seed's table: W_E, Query, Key, Value, Output, up- and
down-projection, W_U; then positions, biases and LayerNorms), computed from
the config without building the model."""

from keras_gpt.commands.flags import integer
from keras_gpt.config import PRESETS, GPTConfig
from keras_gpt.params import parameter_table


def register(commands):
    parser = commands.add_parser(
        "params", help="Parameter count per component, without building.",
        description=__doc__)
    parser.add_argument("preset", choices=list(PRESETS), metavar="PRESET",
                        help=f"One of: {', '.join(PRESETS)} (required).")
    parser.add_argument("--vocab-size", type=integer(1),
                        help="Vocabulary size (default: the preset's).")
    parser.add_argument("--context-length", type=integer(1),
                        help="Tokens per sequence (default: the preset's).")
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
