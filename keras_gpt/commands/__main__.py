"""`python -m keras_gpt.commands ...`: the same as the `keras-gpt` command."""

import sys

from keras_gpt.commands.main import main

sys.exit(main())
