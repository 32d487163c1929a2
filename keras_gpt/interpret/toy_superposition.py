"""Anthropic's toy model of superposition (Elhage et al. 2022), with `fit()`.

x' = ReLU(WᵀW x + b): n features squeezed into m < n hidden dimensions and
read back. Feature i is present with probability 1 - S (uniform in [0, 1)
when present) and weighs I_i in the loss. Dense features (S = 0): the model
keeps the m most important and drops the rest. Sparse features: it stores
more features than dimensions, nearly perpendicular, interfering rarely
(n = 5, m = 2, S = 0.9: a pentagon). `train_toy_model` reports which
features are represented (||W_i||), dimensions per feature m / ||W||_F² and
each feature's dimensionality; `plot_toy_model` draws W's columns for m = 2.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops

from keras_gpt.files import replace_atomically
from keras_gpt.interpret.superposition import check_count, check_positive


@keras.saving.register_keras_serializable(package="keras_gpt")
class ToyModel(keras.Model):
    """Anthropic's toy model of superposition: x' = ReLU(WᵀW x + b).

    n features are squeezed through m hidden dimensions by W (m, n) and read
    back by Wᵀ. Several instances (one per feature sparsity) train side by
    side, each with its own W and b.

    Args:
        n_features: n.
        n_hidden: m.
        n_instances: Independent models trained at once.
        seed: Seed of the initial W (Glorot-normal).

    Call arguments:
        x: float (batch, n_instances, n_features).

    Returns:
        The reconstruction x', same shape.

    Example:

    ```python
    model = ToyModel(n_features=5, n_hidden=2, n_instances=2)
    model.compile(optimizer="adamw",
                  loss=ImportanceWeightedMSE(0.9 ** np.arange(5)))
    model.fit(SparseFeatures(5, sparsity=[0.0, 0.9], batch_size=1024,
                             steps=5000))
    ```
    """

    def __init__(self, n_features, n_hidden, n_instances=1, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.n_features, self.n_hidden = n_features, n_hidden
        self.n_instances, self.seed = n_instances, seed
        # Glorot-normal, drawn by NumPy: the same start on every backend.
        scale = math.sqrt(2.0 / (n_hidden + n_features))
        start = np.random.default_rng(seed).standard_normal(
            (n_instances, n_hidden, n_features)) * scale
        self.w = self.add_weight(
            shape=(n_instances, n_hidden, n_features), name="w",
            initializer=keras.initializers.Constant(start.astype("float32")))
        self.b = self.add_weight(shape=(n_instances, n_features), name="b",
                                 initializer="zeros")
        self.built = True

    def call(self, x):
        hidden = ops.einsum("bif,ihf->bih", x, self.w)
        return ops.relu(ops.einsum("bih,ihf->bif", hidden, self.w) + self.b)

    def get_config(self):
        return {**super().get_config(), "n_features": self.n_features,
                "n_hidden": self.n_hidden, "n_instances": self.n_instances,
                "seed": self.seed}


class SparseFeatures(keras.utils.PyDataset):
    """Batches (x, x) of synthetic features: each feature is present with
    probability 1 - S (S per instance), then uniform in [0, 1); fresh
    samples every step, reproducible from `seed`."""

    def __init__(self, n_features, sparsity, batch_size, steps, seed=0):
        super().__init__()
        self.n_features, self.batch_size, self.steps = \
            n_features, batch_size, steps
        self.density = 1.0 - np.asarray(sparsity, np.float32)[:, None]
        self.seed = seed

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, index))
        shape = (self.batch_size, len(self.density), self.n_features)
        present = rng.random(shape, dtype=np.float32) < self.density
        x = rng.random(shape, dtype=np.float32) * present
        return x, x


@keras.saving.register_keras_serializable(package="keras_gpt")
class ImportanceWeightedMSE(keras.losses.Loss):
    """sum over instances of mean over batch and features of I_f (x - x')²."""

    def __init__(self, importance, name="importance_weighted_mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.importance = [float(i) for i in np.ravel(importance)]

    def call(self, y_true, y_pred):
        error = ops.square(y_true - y_pred) * ops.convert_to_tensor(
            self.importance, dtype=y_pred.dtype)
        return ops.sum(ops.mean(error, axis=(0, 2)))

    def get_config(self):
        return {**super().get_config(), "importance": self.importance}


def feature_dimensionality(w):
    """Each feature's share of a dimension: D_i = ||W_i||² / Σ_j (Ŵ_i·W_j)².

    1 for a feature with a dimension of its own, 1/2 for an antipodal pair,
    2/5 in a pentagon, 0 for a feature that is not represented.

    Args:
        w: (m, n): column i is feature i's direction.
    """
    w = np.asarray(w, np.float64)
    norms = np.linalg.norm(w, axis=0)
    unit = w / np.maximum(norms, 1e-12)
    interference = np.sum((unit.T @ w) ** 2, axis=1)
    return np.where(norms > 1e-6, norms ** 2 / np.maximum(interference, 1e-12),
                    0.0)


@dataclass
class ToyResult:
    """One trained instance of the toy model.

    Attributes:
        sparsity: S.
        w, b: W (m, n) and b (n,).
        norms: ||W_i|| per feature.
        represented: Features with ||W_i|| > the threshold (indices).
        dims_per_feature: m / ||W||_F².
        dimensionality: `feature_dimensionality(w)`.
        importance: I_i per feature.
        loss: Final importance-weighted MSE of this instance on fresh data.
    """

    sparsity: float
    w: np.ndarray
    b: np.ndarray
    norms: np.ndarray
    represented: list
    dims_per_feature: float
    dimensionality: np.ndarray
    importance: np.ndarray
    loss: float

    def report(self):
        norms = " ".join(f"{v:.2f}" for v in self.norms)
        dims = " ".join(f"{v:.2f}" for v in self.dimensionality)
        return (f"S={self.sparsity:g}: {len(self.represented)} of "
                f"{len(self.norms)} features represented "
                f"{self.represented}; dims/feature "
                f"{self.dims_per_feature:.3f}; ||W_i|| {norms}; "
                f"D_i {dims}; loss {self.loss:.4g}")


def train_toy_model(n_features=5, n_hidden=2, sparsity=(0.0, 0.7, 0.9),
                    importance=0.9, steps=10_000, batch_size=1024,
                    learning_rate=1e-3, threshold=0.5, seed=0, verbose=0):
    """Trains the toy model of superposition with `fit()`, one instance per
    sparsity, and reports which features each one represents.

    Args:
        n_features: n, at least 2.
        n_hidden: m, at least 1.
        sparsity: S in [0, 1): one number or a sequence (one instance each).
        importance: A number r (feature i weighs r**i, the paper's 0.9) or a
            sequence of n weights > 0.
        steps, batch_size: Training batches and their size (fresh samples).
        learning_rate: AdamW's learning rate (the paper's 1e-3).
        threshold: ||W_i|| above which feature i counts as represented.
        seed: Seeds W and the data.
        verbose: `fit()`'s progress bar.

    Returns:
        A list of `ToyResult`, one per sparsity (`.report()` prints it).

    Example:

    ```python
    for result in train_toy_model(5, 2, sparsity=[0.0, 0.9]):
        print(result.report())   # S=0: 2 features; S=0.9: the pentagon
    plot_toy_model(results, "toy.png")
    ```
    """
    check_count("n_features", n_features, 2)
    check_count("n_hidden", n_hidden, 1)
    check_count("steps", steps, 1)
    check_count("batch_size", batch_size, 1)
    check_positive("learning_rate", learning_rate)
    sparsity = np.atleast_1d(np.asarray(sparsity, np.float64))
    if sparsity.ndim != 1:
        raise ValueError("sparsity must be a number or a 1-D sequence; got "
                         f"shape {sparsity.shape}.")
    bad = sparsity[~((sparsity >= 0) & (sparsity < 1))]
    if bad.size:
        raise ValueError(f"sparsity must be in [0, 1); got {bad[0]}.")
    if np.ndim(importance) == 0:
        check_positive("importance", importance)
        weights = float(importance) ** np.arange(n_features)
    else:
        weights = np.asarray(importance, np.float64)
        if weights.shape != (n_features,) or not np.all(np.isfinite(weights)) \
                or np.any(weights <= 0):
            raise ValueError(
                f"importance must be a number or {n_features} finite weights "
                f"> 0 (one per feature); got {importance!r}.")
    model = ToyModel(n_features, n_hidden, len(sparsity), seed=seed)
    loss = ImportanceWeightedMSE(weights)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate), loss=loss)
    model.fit(SparseFeatures(n_features, sparsity, batch_size, steps, seed),
              epochs=1, verbose=verbose)
    x, _ = SparseFeatures(n_features, sparsity, 4096, 1, seed + 1)[0]
    error = weights * (x - ops.convert_to_numpy(model(x))) ** 2
    losses = error.mean(axis=(0, 2))
    w_all = ops.convert_to_numpy(model.w)
    b_all = ops.convert_to_numpy(model.b)
    results = []
    for i, s in enumerate(sparsity):
        w = w_all[i]
        norms = np.linalg.norm(w, axis=0)
        results.append(ToyResult(
            sparsity=float(s), w=w, b=b_all[i], norms=norms,
            represented=[int(f) for f in np.flatnonzero(norms > threshold)],
            dims_per_feature=float(n_hidden / np.sum(w ** 2)),
            dimensionality=feature_dimensionality(w), importance=weights,
            loss=float(losses[i])))
    return results


def plot_toy_model(results, path):
    """Draws W's columns (one arrow per feature) for m = 2, one panel per
    instance, coloured by importance; written atomically to `path` (PNG).

    Returns:
        `path` as a `Path`.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(results, ToyResult):
        results = [results]
    for result in results:
        if result.w.shape[0] != 2:
            raise ValueError(
                f"plot_toy_model draws m = 2 hidden dimensions; this model has "
                f"m = {result.w.shape[0]}.")
    figure = Figure(figsize=(3.2 * len(results), 3.6))
    FigureCanvasAgg(figure)
    colours = matplotlib.colormaps["viridis"]
    for k, result in enumerate(results):
        ax = figure.add_subplot(1, len(results), k + 1)
        low, high = result.importance.min(), result.importance.max()
        shade = (result.importance - low) / (high - low) if high > low \
            else np.ones_like(result.importance)
        reach = max(1.2, 1.1 * float(result.norms.max()))
        for f, (x, y) in enumerate(result.w.T):
            colour = colours(0.9 * (1.0 - shade[f]))
            ax.annotate("", xy=(x, y), xytext=(0, 0), arrowprops=dict(
                arrowstyle="-|>", color=colour, lw=2))
            ax.text(1.08 * x, 1.08 * y, str(f), ha="center", va="center",
                    fontsize=8)
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        ax.axhline(0, color="0.85", lw=0.5)
        ax.axvline(0, color="0.85", lw=0.5)
        ax.set_title(f"S = {result.sparsity:g}: {len(result.represented)} of "
                     f"{len(result.norms)} features\n"
                     f"{result.dims_per_feature:.2f} dims/feature",
                     fontsize=9)
    figure.suptitle("Columns of W (m = 2); darker = more important",
                    fontsize=9)
    figure.tight_layout()
    path = Path(path)
    replace_atomically(path, lambda tmp: figure.savefig(tmp, format="png",
                                                        dpi=120))
    return path
