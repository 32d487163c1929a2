"""`GPT.compile`: Keras' compile, with the fast loss and XLA choice where
the user left them to it; values, gradients and saved configs unchanged."""

import keras
import numpy as np
import pytest
from tests.conftest import gradients, to_numpy

from keras_gpt import GPT, GPTConfig, NextTokenLoss, losses

VOCAB = 11
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight",
              None)


def _model():
    return GPT(GPTConfig(vocab_size=VOCAB, context_length=8, d_model=16,
                         n_layers=1, n_heads=2))


def _scce(**kwargs):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                      **kwargs)


@pytest.fixture
def fast_calls(monkeypatch):
    """Counts calls of the per-token computation NextTokenLoss runs."""
    calls = []
    original = losses.token_cross_entropy

    def counted(logits, targets):
        calls.append(tuple(logits.shape))
        return original(logits, targets)

    monkeypatch.setattr(losses, "token_cross_entropy", counted)
    return calls


def _data(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(2, 5, VOCAB)).astype("float32")
    targets = rng.integers(0, VOCAB, size=(2, 5)).astype("int32")
    weights = rng.uniform(size=(2, 5)).astype("float32")
    return logits, targets, weights


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_plain_loss_runs_fast_with_keras_values_and_gradients(reduction,
                                                              fast_calls):
    """Compiled through GPT.compile and through Keras' own compile, the
    model's loss agrees in value and gradient, with and without sample
    weights; only GPT.compile's runs NextTokenLoss's computation."""
    logits, targets, weights = _data()
    ours, theirs = _model(), _model()
    ours.compile(optimizer="adamw", loss=_scce(reduction=reduction))
    keras.Model.compile(theirs, optimizer="adamw",
                        loss=_scce(reduction=reduction))
    for sample_weight in (None, weights):
        def loss(model):
            return lambda y_pred: model.compute_loss(
                y=targets, y_pred=y_pred, sample_weight=sample_weight)

        np.testing.assert_allclose(to_numpy(loss(ours)(logits)),
                                   to_numpy(loss(theirs)(logits)), rtol=1e-5)
        got, = gradients(_scalar(loss(ours)), (logits,))
        expected, = gradients(_scalar(loss(theirs)), (logits,))
        np.testing.assert_allclose(got, expected, atol=1e-6)
    assert fast_calls, "GPT.compile did not run NextTokenLoss's computation"
    assert ours.loss is not None and ours.get_compile_config()["loss"][
        "config"]["reduction"] == reduction


def _scalar(fn):
    """`fn` made scalar to differentiate: reduction None keeps one loss per
    token, which then gets its own upstream factor."""
    def scalar(y_pred):
        out = fn(y_pred)
        if len(out.shape):
            out = keras.ops.multiply(out, keras.ops.reshape(
                keras.ops.arange(1, 11, dtype="float32"), (2, 5)))
        return keras.ops.sum(out)
    return scalar


def test_one_fit_step_matches_keras_own_compile():
    """The whole plain path (loss, XLA choice) trains as Keras' would."""
    x = np.random.default_rng(1).integers(0, VOCAB, (4, 8)).astype("int32")
    ours, theirs = _model(), _model()
    theirs.set_weights(ours.get_weights())
    ours.compile(optimizer=keras.optimizers.SGD(0.5), loss=_scce())
    keras.Model.compile(theirs, optimizer=keras.optimizers.SGD(0.5),
                        loss=_scce())
    for model in (ours, theirs):
        model.fit(x[:, :-1], x[:, 1:], batch_size=4, verbose=0, shuffle=False)
    for got, expected in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(got, expected, atol=2e-5)


def test_plain_compile_lowers_to_compile_for_pretrainings_program():
    """Same optimizer, plain Keras compile: the very training step that
    `compile_for_pretraining` gives (so the same speed, by construction)."""
    if keras.backend.backend() != "jax":
        pytest.skip("compares JAX's lowered train_step text; the choices "
                    "it rests on (loss, jit_compile) are tested on every "
                    "backend above and below")
    import re

    import jax

    from keras_gpt.training import compile_for_pretraining, make_optimizer

    x = np.zeros((2, 8), "int32")

    def lowered(model):
        model.optimizer.build(model.trainable_variables)
        state = tuple([v.value for v in variables] for variables in (
            model.trainable_variables, model.non_trainable_variables,
            model.optimizer.variables, model.metrics_variables))
        text = jax.jit(model.train_step).lower(state, (x, x)).as_text()
        return re.sub(r"loc\([^)]*\)|#loc\d*( = .*)?", "", text)

    recipe, plain = _model(), _model()
    compile_for_pretraining(recipe, total_steps=100)
    plain.compile(optimizer=make_optimizer(100), loss=_scce())
    assert lowered(plain) == lowered(recipe)


def test_jit_compile_auto_is_the_pretraining_choice_and_false_is_kept():
    from keras_gpt.backend import training_jit_compile

    model = _model()
    model.compile(optimizer="adamw", loss=_scce())
    expected = {"tensorflow": True, "jax": True, "torch": False}[
        keras.backend.backend()]
    assert training_jit_compile("auto") in (expected, "auto")
    assert model.jit_compile is expected
    assert model.get_compile_config()["jit_compile"] == "auto"
    model.compile(optimizer="adamw", loss=_scce(), jit_compile=False)
    assert model.jit_compile is False
    assert model.get_compile_config()["jit_compile"] is False
    model.compile(optimizer="adamw", loss=_scce(), run_eagerly=True)
    assert model.jit_compile is False and model.run_eagerly is True


def test_saved_model_names_the_users_loss_and_compiles_fast_again(
        tmp_path, fast_calls):
    model = _model()
    model.compile(optimizer="adamw", loss=_scce(reduction="sum"))
    x = np.random.default_rng(2).integers(0, VOCAB, (2, 8)).astype("int32")
    model.fit(x, x, verbose=0)
    model.save(tmp_path / "m.keras")
    fast_calls.clear()
    loaded = keras.models.load_model(tmp_path / "m.keras")
    config = loaded.get_compile_config()
    assert config["loss"]["class_name"] == "SparseCategoricalCrossentropy"
    assert config["loss"]["config"]["reduction"] == "sum"
    assert config["jit_compile"] == "auto"
    assert isinstance(loaded.loss, keras.losses.SparseCategoricalCrossentropy)
    assert loaded.compiled and loaded.jit_compile is model.jit_compile
    # The optimizer state came back with the weights.
    assert int(to_numpy(loaded.optimizer.iterations)) == 1
    logits, targets, _ = _data()
    np.testing.assert_allclose(
        to_numpy(loaded.compute_loss(y=targets, y_pred=logits)),
        to_numpy(_scce(reduction="sum")(targets, logits)), rtol=1e-5)
    assert fast_calls


def test_tensorflow_traces_the_first_step_once(monkeypatch):
    """On TensorFlow compile builds the optimizer, so fit's first trace
    creates no variables and is not repeated; elsewhere compile leaves the
    optimizer to fit, as Keras does."""
    model = _model()
    optimizer = keras.optimizers.AdamW(1e-3)
    model.compile(optimizer=optimizer, loss=_scce(), jit_compile=False)
    if keras.backend.backend() != "tensorflow":
        assert not optimizer.built
        return
    assert optimizer.built
    traces = []
    step = model.train_step
    monkeypatch.setattr(model, "train_step",
                        lambda data: traces.append(1) or step(data))
    x = np.random.default_rng(3).integers(0, VOCAB, (2, 8)).astype("int32")
    model.fit(x, x, verbose=0)
    assert len(traces) == 1  # through Keras' own compile: 2
    assert int(to_numpy(optimizer.iterations)) == 1


class _Doubled(keras.losses.SparseCategoricalCrossentropy):
    def call(self, y_true, y_pred):
        return 2.0 * super().call(y_true, y_pred)


@pytest.mark.parametrize("loss", [
    _Doubled(from_logits=True),
    keras.losses.SparseCategoricalCrossentropy(from_logits=False),
    _scce(ignore_class=0),
    "sparse_categorical_crossentropy",
    keras.losses.sparse_categorical_crossentropy,
], ids=["subclass", "probabilities", "ignore_class", "string", "function"])
def test_other_losses_are_left_alone(loss, fast_calls):
    logits, targets, weights = _data()
    probabilities = to_numpy(keras.ops.softmax(logits))
    model, reference = _model(), _model()
    model.compile(optimizer="adamw", loss=loss)
    keras.Model.compile(reference, optimizer="adamw", loss=loss)
    assert model.loss is loss
    np.testing.assert_allclose(
        to_numpy(model.compute_loss(y=targets, y_pred=probabilities,
                                    sample_weight=weights)),
        to_numpy(reference.compute_loss(y=targets, y_pred=probabilities,
                                        sample_weight=weights)), rtol=1e-6)
    assert not fast_calls


@pytest.mark.backend_independent
def test_same_computation_accepts_only_the_exact_loss():
    assert isinstance(losses.same_computation(_scce()), NextTokenLoss)
    kept = losses.same_computation(_scce(reduction="sum", name="ce"))
    assert (kept.reduction, kept.name) == ("sum", "ce")
    serialized = keras.losses.serialize(_scce())
    assert isinstance(losses.same_computation(serialized), NextTokenLoss)
    for other in (None, "sparse_categorical_crossentropy", [_scce()],
                  _scce(axis=1), _scce(dtype="float16"), _Doubled(),
                  keras.losses.MeanSquaredError(), {"class_name": "Nope"}):
        assert losses.same_computation(other) is None, other
