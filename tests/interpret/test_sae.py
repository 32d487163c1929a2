import json

import keras
import numpy as np
import pytest

from keras_gpt import GPT, GPTConfig
from keras_gpt.interpret.sae import (ReconstructionLoss, SparseAutoencoder,
                                     load_sae, save_sae)
from keras_gpt.interpret.sae_training import (activations_at, evaluate_sae,
                                              hook_width,
                                              top_activating_contexts,
                                              train_sae)
from keras_gpt.training import compile_for_pretraining
from tests.conftest import to_numpy

# One worker runs this module (--dist loadgroup): `trained` is built once.
pytestmark = pytest.mark.xdist_group("sae")
VOCAB, CONTEXT, D_MODEL = 32, 16, 32


def _windows(stream, n, seed):
    starts = np.random.default_rng(seed).integers(
        0, len(stream) - CONTEXT - 1, n)
    return np.stack([stream[s:s + CONTEXT + 1] for s in starts])


@pytest.fixture(scope="module")
def trained():
    """A 2-layer GPT trained 60 steps on a repetitive synthetic corpus
    (eight fixed "sentences" of 5-8 tokens in random order), and held-out
    windows to train and measure SAEs on."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    sentences = [rng.integers(1, VOCAB, rng.integers(5, 9)) for _ in range(8)]
    stream = np.concatenate([sentences[i] for i in rng.integers(0, 8, 4000)])
    train = _windows(stream, 60 * 64, 1)
    model = GPT(GPTConfig(vocab_size=VOCAB, context_length=CONTEXT,
                          d_model=D_MODEL, n_layers=2, n_heads=2))
    compile_for_pretraining(model, total_steps=60, learning_rate=1e-2)
    history = model.fit(train[:, :-1], train[:, 1:], batch_size=64, epochs=1,
                        verbose=0)
    # The mean over the epoch; log(32) = 3.47 untrained.
    assert history.history["loss"][-1] < 1.6
    return model, _windows(stream, 1024, 2)[:, :-1], \
        _windows(stream, 128, 3)[:, :-1]


def test_topk_sae_on_the_residual_stream_meets_saelens_bars(trained):
    model, windows, held_out = trained
    hook = "blocks.1.resid_pre"
    sae = train_sae(model, windows, hook, d_sae=128, k=D_MODEL // 4,
                    learning_rate=5e-3, batch_size=128)
    assert sae.hook == hook and sae.d_in == D_MODEL
    metrics = evaluate_sae(sae, model, held_out)
    print({k: v for k, v in metrics.items() if k != "feature_density"})
    assert metrics["l0"] <= D_MODEL / 4
    assert metrics["explained_variance"] >= 0.9
    assert metrics["ce_loss_score"] >= 0.9
    assert metrics["ce_loss_with_ablation"] > metrics["ce_loss_with_sae"] \
        >= metrics["ce_loss_clean"] - 0.05
    assert 0.0 <= metrics["dead_fraction"] < 0.5
    assert metrics["n_tokens"] == held_out.size
    # The metrics recomputed from the cache by hand.
    x = to_numpy(activations_at(model, held_out, hook))
    z = to_numpy(sae.encode(x))
    x_hat = to_numpy(sae.decode(z))
    assert metrics["l0"] == pytest.approx(np.mean(np.sum(z > 0, axis=1)))
    assert metrics["mse"] == pytest.approx(np.mean((x - x_hat) ** 2),
                                           rel=1e-4)
    assert metrics["explained_variance"] == pytest.approx(
        1 - np.sum((x - x_hat) ** 2) / np.sum((x - x.mean(0)) ** 2), rel=1e-4)
    np.testing.assert_allclose(metrics["feature_density"],
                               np.mean(z > 0, axis=0))
    # Decoder rows stay unit length through training.
    np.testing.assert_allclose(np.linalg.norm(to_numpy(sae.W_dec), axis=1),
                               1.0, atol=1e-5)
    # The strongest contexts of the busiest feature are where it fires.
    feature = int(np.argmax(metrics["feature_density"]))
    contexts = top_activating_contexts(sae, model, held_out, feature, k=5,
                                       before=3, after=1)
    values = z[:, feature].reshape(held_out.shape)
    assert [c.activation for c in contexts] == pytest.approx(
        sorted(values.ravel(), reverse=True)[:5], rel=1e-5)
    first = contexts[0]
    assert values[first.window, first.position] == pytest.approx(
        first.activation, rel=1e-5)
    start = max(0, first.position - 3)
    assert first.ids == held_out[first.window,
                                 start:first.position + 2].tolist()


def test_save_load_gives_the_same_codes_in_saelens_layout(trained, tmp_path):
    model, windows, _ = trained
    sae = SparseAutoencoder(D_MODEL, 64, k=4, hook="blocks.0.resid_post",
                            seed=3)
    sae.b_enc.assign(np.random.default_rng(0).normal(size=64) * 0.1)
    folder = tmp_path / "sae"
    (folder).mkdir()
    (folder / "notes.txt").write_text("kept")
    save_sae(sae, folder, model_name="tiny", context_size=CONTEXT)
    assert sorted(p.name for p in folder.iterdir()) == [
        "cfg.json", "notes.txt", "sae_weights.safetensors"]
    cfg = json.loads((folder / "cfg.json").read_text())
    # The keys SAELens' loader reads (its pre-6.0 path: no
    # sae_lens_version, so hook_name and activation_fn_kwargs are read).
    assert cfg["architecture"] == "topk" and cfg["k"] == 4
    assert cfg["activation_fn_kwargs"] == {"k": 4}
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"]) == (D_MODEL, 64,
                                                         "float32")
    assert cfg["hook_name"] == "blocks.0.hook_resid_post"
    assert cfg["apply_b_dec_to_input"] is True
    assert cfg["normalize_activations"] == "none"
    from safetensors.numpy import load_file

    tensors = load_file(folder / "sae_weights.safetensors")
    assert {k: v.shape for k, v in tensors.items()} == {
        "W_enc": (D_MODEL, 64), "b_enc": (64,), "W_dec": (64, D_MODEL),
        "b_dec": (D_MODEL,)}
    loaded = load_sae(folder)
    assert (loaded.k, loaded.l1, loaded.hook) == (4, None,
                                                  "blocks.0.resid_post")
    x = activations_at(model, windows[:8], "blocks.0.resid_post")
    np.testing.assert_array_equal(to_numpy(loaded.encode(x)),
                                  to_numpy(sae.encode(x)))
    # The Keras way works too: model.save / keras.models.load_model.
    sae.save(tmp_path / "sae.keras")
    again = keras.models.load_model(tmp_path / "sae.keras")
    np.testing.assert_array_equal(to_numpy(again.encode(x)),
                                  to_numpy(sae.encode(x)))
    assert again.get_config()["hook"] == "blocks.0.resid_post"
    relu = SparseAutoencoder(D_MODEL, 64, l1=0.5, hook="blocks.1.mlp.post")
    save_sae(relu, tmp_path / "relu")
    cfg = json.loads((tmp_path / "relu" / "cfg.json").read_text())
    assert (cfg["architecture"], cfg["activation_fn"]) == ("standard", "relu")
    assert cfg["hook_name"] == "blocks.1.mlp.hook_post"
    again = load_sae(tmp_path / "relu")
    assert (again.k, again.l1, again.hook) == (None, 0.5, "blocks.1.mlp.post")


@pytest.mark.backend_independent
def test_damaged_or_foreign_sae_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        load_sae(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="No cfg.json in"):
        load_sae(tmp_path)
    folder = save_sae(SparseAutoencoder(8, 16, k=2), tmp_path / "s")
    weights = folder / "sae_weights.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="sae_weights.safetensors is damaged"):
        load_sae(folder)
    weights.write_bytes(good)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_in": 9}))
    with pytest.raises(ValueError, match=r"W_enc has shape \(8, 16\); "
                       r"cfg.json's d_in=9, d_sae=16 need \(9, 16\)"):
        load_sae(folder)
    (folder / "cfg.json").write_text(json.dumps({**cfg,
                                                 "architecture": "jumprelu"}))
    with pytest.raises(ValueError, match="architecture 'jumprelu' is not "
                       "supported; load_sae reads 'topk' and 'standard'"):
        load_sae(folder)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="cfg.json is damaged"):
        load_sae(folder)


@pytest.mark.backend_independent
def test_an_interrupted_save_leaves_the_previous_files_whole(tmp_path,
                                                             monkeypatch):
    folder = save_sae(SparseAutoencoder(8, 16, k=2, seed=0), tmp_path / "s")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # after the weights' temporary file

    monkeypatch.setattr(json, "dumps", killed)
    with pytest.raises(KeyboardInterrupt):
        save_sae(SparseAutoencoder(8, 16, k=3, seed=1), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    monkeypatch.undo()
    assert load_sae(folder).k == 2


@pytest.mark.backend_independent
def test_bad_sizes_k_and_l1_name_value_and_limit():
    with pytest.raises(ValueError, match=r"k must be an integer in "
                       r"\[1, d_sae=16\]; got 0"):
        SparseAutoencoder(8, 16, k=0)
    with pytest.raises(ValueError, match=r"\[1, d_sae=16\]; got 17"):
        SparseAutoencoder(8, 16, k=17)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"l1 must be a finite number "
                           f">= 0; got {bad}"):
            SparseAutoencoder(8, 16, l1=bad)
    with pytest.raises(ValueError, match="exactly one of k .* or l1"):
        SparseAutoencoder(8, 16, k=2, l1=0.1)
    with pytest.raises(ValueError, match="exactly one of k"):
        SparseAutoencoder(8, 16)
    with pytest.raises(ValueError, match="d_sae must be an integer >= 1; "
                       "got 0"):
        SparseAutoencoder(8, 0, k=1)


def test_hooks_of_another_width_and_bad_names_are_errors(trained):
    model, windows, _ = trained
    assert hook_width(model, "blocks.0.mlp.post") == 4 * D_MODEL
    assert hook_width(model, "blocks.0.attn.z") == D_MODEL
    sae = SparseAutoencoder(D_MODEL, 64, k=4, hook="blocks.0.resid_post")
    with pytest.raises(ValueError, match=r"d_in=32, but 'blocks.0.mlp.post' "
                       r"has width 128"):
        evaluate_sae(sae, model, windows[:4], hook="blocks.0.mlp.post")
    with pytest.raises(ValueError, match="has width 128"):
        train_sae(model, windows[:4], "blocks.0.mlp.post", 64, sae=sae)
    with pytest.raises(ValueError, match=r"feature must be an integer in "
                       r"\[0, 63\] \(d_sae=64\); got 64"):
        top_activating_contexts(sae, model, windows[:4], 64)
    with pytest.raises(ValueError, match="Unknown activation name "
                       "'blocks.0.resid'. Valid names"):
        train_sae(model, windows[:4], "blocks.0.resid", 64, k=4)
    with pytest.raises(ValueError, match="Layer 5 .* out of range"):
        train_sae(model, windows[:4], "blocks.5.resid_post", 64, k=4)
    with pytest.raises(ValueError, match="'blocks.0.attn.pattern' is not a "
                       "per-token vector"):
        train_sae(model, windows[:4], "blocks.0.attn.pattern", 64, k=4)
    with pytest.raises(ValueError, match=r"k must be an integer in "
                       r"\[1, d_sae=64\]; got 65"):
        train_sae(model, windows[:4], "blocks.0.resid_post", 64, k=65)
    with pytest.raises(ValueError, match="no token windows"):
        train_sae(model, windows[:0], "blocks.0.resid_post", 64, k=4)


def test_training_losses_follow_saelens_definitions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8)).astype("float32")
    # ReLU + L1: l1 * mean over rows of sum_i z_i ||W_dec,i|| (rows unit).
    relu = SparseAutoencoder(8, 32, l1=0.3, seed=1)
    relu.b_dec.assign(rng.normal(size=8).astype("float32"))
    relu(x, training=True)
    z = to_numpy(relu.encode(x))
    assert float(to_numpy(relu.losses[0])) == pytest.approx(
        0.3 * z.sum(axis=1).mean(), rel=1e-5)
    # TopK: exactly k latents per row; with every latent dead (past
    # dead_steps) the auxiliary loss has the top aux_k (ReLU) pre-activations
    # model the residual x - x_hat through W_dec, scale min(32/4, 1) = 1.
    topk = SparseAutoencoder(8, 32, k=3, aux_k=4, dead_steps=2, seed=1)
    w_enc, b_dec = to_numpy(topk.W_enc), rng.normal(size=8).astype("float32")
    topk.b_dec.assign(b_dec)
    topk(x, training=True)
    assert float(to_numpy(topk.losses[0])) == 0.0  # nothing dead yet
    assert np.sum(to_numpy(topk.encode(x)) > 0, axis=1).max() <= 3
    topk.steps_since_fired.assign(np.full(32, 5.0, "float32"))
    x_hat = to_numpy(topk(x, training=True))
    pre = (x - b_dec) @ w_enc
    z_aux = np.zeros_like(pre)
    top = np.argsort(-pre, axis=1)[:, :4]
    np.put_along_axis(z_aux, top, np.maximum(
        np.take_along_axis(pre, top, axis=1), 0), axis=1)
    error = z_aux @ to_numpy(topk.W_dec) - (x - x_hat)
    assert float(to_numpy(topk.losses[0])) == pytest.approx(
        np.mean(np.sum(error ** 2, axis=1)), rel=1e-4)
    # Latents that fired in that step are no longer counted as dead.
    fired = np.any(to_numpy(topk.encode(x)) > 0, axis=0)
    steps = to_numpy(topk.steps_since_fired)
    assert np.all(steps[fired] == 0) and np.all(steps[~fired] == 6)
    assert topk.dead_fraction() == pytest.approx(np.mean(~fired))
    # The reconstruction loss: squared error summed over the width.
    loss = ReconstructionLoss(reduction=None)(x, x_hat)
    np.testing.assert_allclose(to_numpy(loss), np.sum((x - x_hat) ** 2, -1),
                               rtol=1e-5)
