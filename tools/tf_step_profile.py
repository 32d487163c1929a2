"""Where a TensorFlow (XLA) training step's time goes, op group by op group.

Traces a few `fit` steps of the benchmark's model with TensorFlow's profiler,
matches each XLA thunk the trace shows to the optimized HLO (dumped by XLA in
the same run) and through it to the Keras op that made it, and prints ms per
step: matrix products and everything else, grouped by op name (`block_3` and
`block_5` count as one `block`). Thunks that run at the same time on the two
threads both count, so the total can exceed the step's wall time.

    .venv/bin/python tools/tf_step_profile.py [--steps 4] [--top 25] [--smoke]

`--smoke`: a tiny model, 2 steps (tests/bench/test_bench.py runs it).
"""

import argparse
import collections
import glob
import os
import re
import shutil
import sys
import tempfile

DUMP = tempfile.mkdtemp(prefix="tf_step_profile_")
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to="
                           f"{DUMP}/hlo --xla_dump_hlo_as_text "
                           "--xla_dump_hlo_pass_re=NONE")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from keras_gpt.bench import ISSUE_MODEL as MODEL  # noqa: E402
from keras_gpt.config import GPTConfig  # noqa: E402
from keras_gpt.data.windows import without_autotune  # noqa: E402
from keras_gpt.model import GPT  # noqa: E402
from keras_gpt.training import compile_for_pretraining  # noqa: E402

SMOKE = dict(n_layers=1, n_heads=2, d_model=16, vocab_size=64,
             context_length=16)


def _op_names(hlo_text):
    """HLO instruction name -> (is a dot, the Keras op name it came from,
    or for XLA's own instructions their kind, e.g. `(wrapped_reduce-window)`)."""
    names = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = \S+ ([\w\-]+)\((.*)$",
                         hlo_text, re.M):
        op_name = re.search(r'op_name="([^"]*)"', m.group(3))
        kind = re.sub(r"[._]\d+$", "", m.group(1))
        names[m.group(1)] = (m.group(2) == "dot", op_name.group(1)
                             if op_name else f"({kind})")
    return names


def _group(op_name):
    name = re.sub(r"block_\d+", "block", op_name)
    name = re.sub(r"_\d+(?=/|$)", "", name)
    return "/".join(name.split("/")[:5])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.top < 1:
        parser.error(f"--steps {args.steps} and --top {args.top} must be "
                     ">= 1.")
    m, steps = (SMOKE, 2) if args.smoke else (MODEL, args.steps)
    ids = np.random.default_rng(0).integers(
        0, m["vocab_size"], (8 * steps, m["context_length"])).astype("int32")
    dataset = without_autotune(
        tf.data.Dataset.from_tensor_slices((ids, ids)).batch(8))
    model = GPT(GPTConfig(**m, dropout=0.0))
    compile_for_pretraining(model, total_steps=10 ** 6)
    model.fit(dataset, shuffle=False, verbose=0)  # compile
    tf.profiler.experimental.start(f"{DUMP}/trace")
    model.fit(dataset, shuffle=False, verbose=0)
    tf.profiler.experimental.stop()

    modules = glob.glob(f"{DUMP}/hlo/*one_step_on_data*"
                        "cpu_after_optimizations.txt")
    names = _op_names(open(max(modules, key=os.path.getsize)).read())
    space = xplane_pb2.XSpace()
    trace, = glob.glob(f"{DUMP}/trace/**/*.xplane.pb", recursive=True)
    space.ParseFromString(open(trace, "rb").read())
    groups = {True: collections.Counter(), False: collections.Counter()}
    for plane in space.planes:
        for line in plane.lines:
            if "Eigen" not in line.name:  # XLA's thunks run on these threads
                continue
            for event in line.events:
                thunk = plane.event_metadata[event.metadata_id].name
                if thunk in names:
                    is_dot, op_name = names[thunk]
                    groups[is_dot][_group(op_name)] += (
                        event.duration_ps / 1e9 / steps)
    print(f"TensorFlow {tf.__version__}, XLA; {m}, batch 8; ms per step "
          f"over {steps} traced steps")
    for is_dot, title in ((True, "matrix products"), (False, "other ops")):
        counter = groups[is_dot]
        print(f"{title}: {sum(counter.values()):.1f} ms")
        for group, ms in counter.most_common(args.top):
            print(f"  {ms:8.2f} ms  {group}")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(DUMP, ignore_errors=True)
