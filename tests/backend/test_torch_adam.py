"""`keras_gpt.backend.torch_adam`: Keras' Adam/AdamW steps on torch's fused
CPU kernel, against Keras' own steps."""

import keras
import numpy as np
import pytest

SHAPES = {"kernel": (8, 12), "bias": (12,), "embeddings": (5, 8)}


def _torch_only():
    if keras.backend.backend() != "torch":
        pytest.skip("the fused optimizer step is PyTorch-only; JAX and "
                    "TensorFlow compile the whole step with XLA")


def _variables(dtype="float32"):
    rng = np.random.default_rng(0)
    return [keras.Variable(rng.normal(size=shape).astype("float32"),
                           name=name, dtype=dtype)
            for name, shape in SHAPES.items()]


def _optimizers():
    from keras_gpt.training import make_optimizer

    def recipe():  # schedule, global clipping, decay with exclusions
        return make_optimizer(total_steps=20, learning_rate=1e-2)

    def plain_adamw():
        optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.05,
                                           global_clipnorm=0.5)
        optimizer.exclude_from_weight_decay(var_names=["bias"])
        return optimizer

    return {"recipe": recipe, "adamw": plain_adamw,
            "adam": lambda: keras.optimizers.Adam(1e-2, beta_2=0.99)}


def _run(make, fused, grads, dtype="float32"):
    import torch

    from keras_gpt.backend import torch_adam

    variables = _variables(dtype)
    optimizer = make()
    assert not fused or torch_adam.install(optimizer)
    optimizer.build(variables)
    for step_grads in grads:
        with torch.no_grad():
            optimizer.apply([torch.tensor(g) for g in step_grads], variables)
    return variables, optimizer


def _grads(scale, steps=5):
    rng = np.random.default_rng(1)
    return [[(scale * rng.normal(size=s)).astype("float32")
             for s in SHAPES.values()] for _ in range(steps)]


@pytest.mark.parametrize("name", ["recipe", "adamw", "adam"])
@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_fused_step_matches_keras_own_step(name, scale, monkeypatch):
    """Weights and both moments after 5 steps agree with Keras' own step's
    (bounds below), with the gradient clipped (scale 100) or not, and the
    fused kernel really ran."""
    _torch_only()
    import torch

    calls = []
    kernel = torch._fused_adamw_
    monkeypatch.setattr(torch, "_fused_adamw_",
                        lambda *a, **k: calls.append(1) or kernel(*a, **k))
    grads = _grads(scale)
    make = _optimizers()[name]
    want, want_opt = _run(make, False, grads)
    assert not calls
    got, got_opt = _run(make, True, grads)
    assert calls
    # The weights' changes agree to 1e-4 of the largest change: Keras
    # computes the bias correction 1 - beta_2^t in float32 (relative error
    # ~1e-5 at t = 1 for beta_2 = 0.999), torch in float64.
    for start, w, g in zip(_variables(), want, got):
        start = start.numpy()
        w = keras.ops.convert_to_numpy(w) - start
        g = keras.ops.convert_to_numpy(g) - start
        assert np.abs(w).max() > 1e-3
        np.testing.assert_allclose(g, w, atol=1e-4 * np.abs(w).max())
    for w, g in zip(want_opt.variables, got_opt.variables):
        w, g = keras.ops.convert_to_numpy(w), keras.ops.convert_to_numpy(g)
        np.testing.assert_allclose(g, w, rtol=1e-5,
                                   atol=1e-6 * np.abs(w).max())


def test_a_non_finite_gradient_norm_gives_nan_weights_as_keras_does():
    _torch_only()
    grads = _grads(1.0, steps=1)
    grads[0][0][0, 0] = np.inf
    for fused in (False, True):
        variables, _ = _run(_optimizers()["recipe"], fused, grads)
        assert all(np.isnan(keras.ops.convert_to_numpy(v)).all()
                   for v in variables)


def test_gradients_passed_in_are_left_unchanged():
    """Only the weights' own `.grad` tensors (what `fit` passes) are scaled
    in place; a caller's own list is not."""
    _torch_only()
    import torch

    grads = _grads(100.0, steps=1)[0]
    given = [torch.tensor(g) for g in grads]
    variables = _variables()
    optimizer = _optimizers()["recipe"]()
    from keras_gpt.backend import torch_adam

    assert torch_adam.install(optimizer)
    optimizer.build(variables)
    with torch.no_grad():
        optimizer.apply(given, variables)
    for g, want in zip(given, grads):
        np.testing.assert_array_equal(g.numpy(), want)


def test_other_optimizers_and_weights_keep_keras_own_step(monkeypatch):
    _torch_only()
    import torch

    from keras_gpt.backend import torch_adam

    class OwnStep(keras.optimizers.AdamW):
        def update_step(self, gradient, variable, learning_rate):
            super().update_step(gradient, variable, learning_rate)

    for optimizer in (keras.optimizers.SGD(0.1),
                      keras.optimizers.Adam(amsgrad=True), OwnStep()):
        assert not torch_adam.install(optimizer)
    adam = keras.optimizers.Adam()
    assert torch_adam.install(adam) and not torch_adam.install(adam)
    assert type(adam).__name__ == "Adam"
    assert keras.optimizers.serialize(adam)["class_name"] == "Adam"

    # bfloat16 weights: installed, but each step is Keras' own.
    calls = []
    monkeypatch.setattr(torch, "_fused_adamw_",
                        lambda *a, **k: calls.append(1))
    grads = [[g.astype("float32") for g in step] for step in _grads(1.0, 2)]
    want, _ = _run(_optimizers()["adamw"], False, grads, dtype="bfloat16")
    got, _ = _run(_optimizers()["adamw"], True, grads, dtype="bfloat16")
    assert not calls
    for w, g in zip(want, got):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(g),
                                      keras.ops.convert_to_numpy(w))


@pytest.mark.parametrize("optimizer", ["recipe", "accumulation", "ema"])
def test_gpt_compile_trains_with_the_fused_step_as_with_keras_own(
        optimizer, monkeypatch, tmp_path):
    """`GPT.compile` installs it (plain compile and the recipe); `fit`
    gives Keras' own losses and weights, with gradient accumulation (where
    Keras' step count is a tensor) and EMA with per-variable clipping too;
    a saved model reloads with its optimizer's class and the fused step
    again."""
    _torch_only()
    from keras_gpt import GPT, GPTConfig
    from keras_gpt.backend import torch_adam
    from keras_gpt.training import make_optimizer

    makers = {
        "recipe": lambda: make_optimizer(total_steps=10, learning_rate=1e-2),
        "accumulation": lambda: keras.optimizers.AdamW(
            1e-2, gradient_accumulation_steps=2),
        "ema": lambda: keras.optimizers.AdamW(1e-2, use_ema=True,
                                              clipnorm=0.1)}
    config = GPTConfig(vocab_size=32, context_length=8, d_model=16,
                       n_layers=1, n_heads=2)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 32, (8, 9)).astype("int32")
    results = {}
    install = torch_adam.install
    for fused in (False, True):
        monkeypatch.setattr(torch_adam, "install",
                            install if fused else (lambda o: False))
        keras.utils.set_random_seed(0)
        model = GPT(config)
        model.compile(optimizer=makers[optimizer](),
                      loss=keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        assert ("_fused_adam" in vars(model.optimizer)) == fused
        history = model.fit(ids[:, :-1], ids[:, 1:], batch_size=2, epochs=2,
                            shuffle=False, verbose=0)
        results[fused] = (history.history["loss"],
                          [v.numpy() for v in model.trainable_variables])
    np.testing.assert_allclose(results[True][0], results[False][0],
                               rtol=1e-5)
    for got, want in zip(results[True][1], results[False][1]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if optimizer != "recipe":
        return
    path = tmp_path / "gpt.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer).__name__ == "AdamW"
    assert "_fused_adam" in vars(loaded.optimizer)
    loaded.fit(ids[:, :-1], ids[:, 1:], batch_size=4, verbose=0)
