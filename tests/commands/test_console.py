"""The `keras-gpt` process: no TensorFlow start-up lines unless asked for,
and errors still one line on stderr."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.backend_independent


def _command(*args, **env):
    """`python -m keras_gpt.commands ARGS` under TensorFlow (whose import
    writes the start-up lines), without the suite's TF_CPP_MIN_LOG_LEVEL."""
    environ = {k: v for k, v in os.environ.items()
               if k != "TF_CPP_MIN_LOG_LEVEL"}
    environ.update(KERAS_BACKEND="tensorflow", **env)
    return subprocess.run([sys.executable, "-m", "keras_gpt.commands", *args],
                          env=environ, capture_output=True, text=True)


def test_commands_print_no_native_start_up_lines():
    done = _command("params", "tiny")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("tiny: 2 layers")


def test_errors_stay_one_line_on_stderr():
    done = _command("plan", "tiny", "--device-memory", "lots")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "keras-gpt plan: error: Cannot read the memory size 'lots': give a "
        "number and a unit, e.g. 141GB or 80GiB (units: B, KB, MB, GB, TB, "
        "KiB, MiB, GiB, TiB)."]


def test_verbose_and_the_users_own_log_level_show_native_lines():
    """What native code writes to the stderr descriptor reaches it again
    with --verbose or a TF_CPP_MIN_LOG_LEVEL the user set (a write to
    descriptor 2 stands in for TensorFlow, whose lines vary by machine)."""
    probe = "import os; os.write(2, b'native line\\n')"
    for args, env in ((["--verbose"], {}), ([], {"TF_CPP_MIN_LOG_LEVEL": "0"}),
                      ([], {})):
        environ = {k: v for k, v in os.environ.items()
                   if k != "TF_CPP_MIN_LOG_LEVEL"}
        environ.update(KERAS_BACKEND="tensorflow", **env)
        done = subprocess.run(
            [sys.executable, "-c",
             "import sys; sys.argv[0] = 'keras-gpt'; sys.argv[1:] = "
             f"{args!r}; import keras_gpt; {probe}"],
            env=environ, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        shown = "native line" in done.stderr
        assert shown == bool(args or env), (args, env, done.stderr)


def _cgroup(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_usable_cores_reads_the_affinity_and_a_cgroup_quota(tmp_path):
    from keras_gpt.commands.console import usable_cores

    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(tmp_path / "none") == affinity
    unlimited = {"cpu.max": "max 100000\n"}
    assert usable_cores(_cgroup(tmp_path / "v2", unlimited)) == affinity
    half = {"cpu.max": "50000 100000\n"}
    assert usable_cores(_cgroup(tmp_path / "half", half)) == 1
    v1 = {"cpu/cpu.cfs_quota_us": "100000\n",
          "cpu/cpu.cfs_period_us": "100000\n"}
    assert usable_cores(_cgroup(tmp_path / "v1", v1)) == 1


def test_threads_sized_to_the_quota_unless_the_user_chose():
    from keras_gpt.commands.console import size_threads

    environ = {}
    assert size_threads(environ, cores=1) == environ
    assert "OMP_WAIT_POLICY" not in environ  # libgomp's default wait
    if len(os.sched_getaffinity(0)) > 1:  # a quota below the affinity mask
        assert environ["OMP_NUM_THREADS"] == "1"
        assert environ["TF_NUM_INTRAOP_THREADS"] == "1"
    chosen = {"OMP_NUM_THREADS": "7"}
    assert size_threads(dict(chosen), cores=1).keys() <= {
        "TF_NUM_INTRAOP_THREADS"}
    assert size_threads({}, cores=len(os.sched_getaffinity(0))) == {}

