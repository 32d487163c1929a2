"""`keras-gpt bench`: training and decoding speed against KerasHub and
Hugging Face on the backend KERAS_BACKEND names; one table (and JSON)."""

from keras_gpt import bench


def register(commands):
    p = commands.add_parser(
        "bench", help="Training and decoding speed against KerasHub and "
                      "Hugging Face.",
        description=bench.__doc__.split("\n\n")[0])
    bench.add_arguments(p)
    p.set_defaults(run=run)


def run(args):
    bench.run_and_report(bench.options_from_args(args))
    return 0
