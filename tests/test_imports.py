"""The house: imports run one way, and no module imports itself back.

Every `import` of every keras_gpt module counts, function-level ones
included (a function-level import that dodges a loop is still a loop).
"""

import ast
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.backend_independent

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_gpt"

# What each top-level package or module may import: anything of a lower
# rank (and itself). The root `keras_gpt/__init__.py` sits above everything.
RANKS = {
    "version": 0, "files": 0, "config": 0, "backend": 0, "checkpoints": 0,
    "layers": 1, "losses": 1, "params": 1, "sharding": 1, "tokenizers": 1,
    "lora": 1, "quantization": 1,
    "activations": 2, "compiling": 2,
    "model": 3, "data": 3,
    "generation": 4, "parallel": 4,
    "training": 5,
    "serving": 6, "convert": 6, "interpret": 6,
    "bench": 7, "finetune": 7,
    "commands": 8,
    "": 9,
}


def _modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _unit(module):
    """The top-level package or module a dotted name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(module, path, modules):
    """(line, imported module) for every keras_gpt import in `path`."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "keras_gpt":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package
                                                             else 0)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "keras_gpt":
                continue
            for alias in node.names:
                child = f"{base}.{alias.name}"
                yield node.lineno, child if child in modules else base


def _edges():
    modules = _modules()
    edges = []
    for module, path in modules.items():
        for line, target in _imports(module, path, modules):
            if target != module:
                edges.append((module, target, path, line))
    return modules, edges


def test_every_package_has_a_rank():
    missing = sorted({_unit(m) for m in _modules()} - set(RANKS))
    assert not missing, (f"keras_gpt packages without a place in RANKS: "
                         f"{missing}; add them to tests/test_imports.py")


def test_imports_run_one_way():
    _, edges = _edges()
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} "
        f"({_unit(source) or 'keras_gpt'} rank {RANKS[_unit(source)]} -> "
        f"{_unit(target) or 'keras_gpt'} rank {RANKS[_unit(target)]})"
        for source, target, path, line in edges
        if _unit(source) != _unit(target)
        and RANKS[_unit(target)] >= RANKS[_unit(source)]]
    assert not upward, "Imports against the house's direction:\n" + \
        "\n".join(upward)


def test_no_import_loops():
    modules, edges = _edges()
    graph = {m: set() for m in modules}
    where = {}
    for source, target, path, line in edges:
        graph[source].add(target)
        where.setdefault((source, target), f"{path.relative_to(PACKAGE.parent)}"
                                           f":{line}")
    loops = [component for component in _strongly_connected(graph)
             if len(component) > 1]
    described = []
    for component in loops:
        inside = sorted(f"{where[s, t]} imports {t}"
                        for s in component for t in graph[s] if t in component)
        described.append("loop: " + "; ".join(inside))
    assert not loops, "\n".join(described)


def _strongly_connected(graph):
    """Tarjan's components of {node: set(successors)}, iteratively."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            step = next(successors, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found


def test_the_checks_catch_what_they_are_for(tmp_path):
    """A loop, a function-level upward import and a relative import are all
    found (the checks above would pass vacuously otherwise)."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert {frozenset(c) for c in _strongly_connected(graph)
            if len(c) > 1} == {frozenset("abc")}
    module = "keras_gpt.layers.fake"
    source = tmp_path / "fake.py"
    source.write_text("def f():\n    from keras_gpt.training import x\n"
                      "from . import attention\n")
    modules = {"keras_gpt.layers.attention": None}
    found = sorted(_imports(module, source, modules))
    assert found == [(2, "keras_gpt.training"),
                     (3, "keras_gpt.layers.attention")]
    assert RANKS[_unit("keras_gpt.training")] > RANKS[_unit(module)]


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_import_keras_gpt_alone_loads_any_keras_gpt_file(tmp_path, backend):
    """KerasHub's convention: after `import keras_gpt` (and nothing else of
    ours), `keras.models.load_model` reads a compiled GPT's file, in a fresh
    process of each backend."""
    import keras

    from keras_gpt import GPT, GPTConfig, compile_for_pretraining

    model = GPT(GPTConfig(vocab_size=32, context_length=8, d_model=16,
                          n_layers=1, n_heads=2))
    compile_for_pretraining(model, total_steps=2)
    path = tmp_path / "gpt.keras"
    model.save(path)
    expected = keras.ops.convert_to_numpy(model(keras.ops.array([[1, 2, 3]])))
    script = (
        "import sys, numpy as np, keras, keras_gpt\n"
        "m = keras.models.load_model(sys.argv[1])\n"
        "assert type(m).__name__ == 'GPT', type(m)\n"
        "assert m.loss.__class__.__name__ == 'NextTokenLoss', m.loss\n"
        "np.save(sys.argv[2], keras.ops.convert_to_numpy("
        "m(keras.ops.array([[1, 2, 3]]))))\n")
    out = tmp_path / "logits.npy"
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script, str(path), str(out)],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)


def test_import_keras_gpt_registers_every_serializable_class():
    """Every class the package registers with Keras is registered by
    `import keras_gpt` alone, in a fresh process (Keras does not import the
    module a .keras file names)."""
    declared = set()
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    "register_keras_serializable" in ast.unparse(d)
                    for d in node.decorator_list):
                declared.add(f"keras_gpt>{node.name}")
    assert "keras_gpt>GPT" in declared
    script = ("import keras, keras_gpt; print(' '.join(sorted("
              "keras.saving.get_custom_objects())))")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    missing = declared - set(done.stdout.split())
    assert not missing, f"not registered by `import keras_gpt`: {missing}"
