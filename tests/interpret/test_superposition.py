import math

import numpy as np
import pytest

from keras_gpt.interpret.superposition import (ToyResult, angle_summary,
                                               feature_dimensionality,
                                               near_orthogonal,
                                               plot_toy_model,
                                               train_toy_model, welch_bound)


@pytest.mark.backend_independent
def test_angle_summary_equals_every_pair_by_brute_force():
    v = np.random.default_rng(0).standard_normal((301, 7))
    s = angle_summary(v * 3.0, bins=2000, chunk=64)  # rows need not be unit
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    cos = (u @ u.T)[np.triu_indices(301, 1)]
    assert s.counts.sum() == cos.size == 301 * 300 // 2
    assert s.max_abs_cos == pytest.approx(np.abs(cos).max(), rel=1e-5)
    assert s.min_angle == pytest.approx(
        math.degrees(math.acos(cos.max())), abs=1e-3)
    assert s.max_angle == pytest.approx(
        math.degrees(math.acos(cos.min())), abs=1e-3)
    assert s.within_89_91 == pytest.approx(
        np.mean(np.abs(cos) <= math.cos(math.radians(89))))
    angles = np.degrees(np.arccos(cos))
    for q in (1.0, 50.0, 99.0):  # bins of 0.001 in cos: ~0.06 degrees
        assert s.spread[q] == pytest.approx(np.percentile(angles, q), abs=0.2)


@pytest.mark.backend_independent
def test_welch_bound():
    # The seed's 10,000 vectors in 100 dimensions: no pair set can keep
    # every angle within 84.3-95.7 degrees.
    assert welch_bound(10_000, 100) == pytest.approx(0.0995, abs=1e-4)
    assert welch_bound(4, 3) == pytest.approx(1 / 3)  # the tetrahedron
    assert welch_bound(3, 3) == 0.0


def test_optimised_vectors_beat_random_ones_and_never_the_welch_bound():
    # 250 vectors in 50 dimensions, not the default 10,000 in 100: every
    # step scores a batch of rows against all N vectors, so the default
    # costs ~0.1 s a step (tens of seconds); the smaller set shows the same
    # thing in a second or two (random 0.559, optimised 0.165 here).
    result = near_orthogonal(250, 50, steps=400, learning_rate=0.03)
    bound = welch_bound(250, 50)
    assert result.welch_bound == bound
    assert result.random.max_abs_cos > 0.45  # random: far from perpendicular
    assert 3 * result.optimised.max_abs_cos <= result.random.max_abs_cos
    assert result.optimised.max_abs_cos >= bound
    assert result.optimised.min_angle > result.random.min_angle
    np.testing.assert_allclose(
        np.linalg.norm(result.optimised_vectors, axis=1), 1.0, atol=1e-5)
    table = result.report()
    assert f"{result.optimised.max_abs_cos:.4f}" in table
    assert f"{bound:.4f}" in table and "Welch" in table
    assert result.seconds > 0
    # Where the bound is tight (N = d + 1: a regular simplex) the optimiser
    # reaches it: 4 vectors in 3 dimensions end at |cos| = 1/3.
    simplex = near_orthogonal(4, 3, steps=300, learning_rate=0.02)
    assert simplex.optimised.max_abs_cos == pytest.approx(1 / 3, abs=0.01)


def test_toy_model_dense_keeps_two_features_sparse_stores_a_pentagon():
    dense, sparse = train_toy_model(5, 2, sparsity=[0.0, 0.9], steps=1000,
                                    learning_rate=1e-2, batch_size=512)
    # Dense features: the two most important get a dimension each.
    assert dense.represented == [0, 1]
    np.testing.assert_allclose(dense.dimensionality[:2], 1.0, atol=0.1)
    assert dense.dims_per_feature == pytest.approx(1.0, abs=0.05)
    # Sparse features: at least four (the paper: all five, a pentagon),
    # sharing the two dimensions.
    assert len(sparse.represented) >= 4
    assert np.all(sparse.norms[sparse.represented] > 0.5)
    assert sparse.dims_per_feature < 0.55
    assert sparse.dimensionality.sum() == pytest.approx(2.0, abs=0.15)
    assert "features represented" in sparse.report()
    assert sparse.w.shape == (2, 5) and sparse.b.shape == (5,)


@pytest.mark.backend_independent
def test_feature_dimensionality_of_known_geometries():
    angles = 2 * np.pi * np.arange(5) / 5
    pentagon = np.stack([np.cos(angles), np.sin(angles)])
    np.testing.assert_allclose(feature_dimensionality(pentagon), 0.4)
    antipodal = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 2.0]])
    np.testing.assert_allclose(feature_dimensionality(antipodal),
                               [0.5, 0.5, 1.0])
    np.testing.assert_allclose(
        feature_dimensionality(np.array([[1.0, 0.0], [0.0, 0.0]])), [1.0, 0.0])


def _pentagon_result():
    angles = 2 * np.pi * np.arange(5) / 5
    w = np.stack([np.cos(angles), np.sin(angles)])
    return ToyResult(sparsity=0.9, w=w, b=np.zeros(5), norms=np.ones(5),
                     represented=list(range(5)), dims_per_feature=0.4,
                     dimensionality=np.full(5, 0.4),
                     importance=0.9 ** np.arange(5), loss=0.0)


@pytest.mark.backend_independent
def test_plot_is_a_png_written_atomically(tmp_path):
    path = plot_toy_model([_pentagon_result()], tmp_path / "toy.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["toy.png"]
    three = _pentagon_result()
    three.w = np.zeros((3, 5))
    with pytest.raises(ValueError, match="m = 2 .* m = 3"):
        plot_toy_model(three, tmp_path / "three.png")
    assert not (tmp_path / "three.png").exists()


@pytest.mark.backend_independent
def test_bad_arguments_name_value_and_limit():
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\); "
                       "got 1.0"):
        train_toy_model(sparsity=[0.5, 1.0])
    with pytest.raises(ValueError, match="importance must be a number or 5 "
                       "finite weights"):
        train_toy_model(importance=[1.0, 0.5])
    with pytest.raises(ValueError, match="n_hidden must be an integer >= 1; "
                       "got 0"):
        train_toy_model(n_hidden=0)
    with pytest.raises(ValueError, match="n_vectors must be an integer >= 2; "
                       "got 1"):
        near_orthogonal(1, 10)
    with pytest.raises(ValueError, match="learning_rate must be a finite "
                       "number > 0; got nan"):
        near_orthogonal(10, 3, learning_rate=float("nan"))
