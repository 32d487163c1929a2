"""One module per `keras-gpt` subcommand; each has `register(subparsers)`."""
