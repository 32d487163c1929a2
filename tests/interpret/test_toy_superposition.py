import numpy as np
import pytest

from keras_gpt.interpret.toy_superposition import (ToyResult,
                                                   feature_dimensionality,
                                                   plot_toy_model,
                                                   train_toy_model)


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
