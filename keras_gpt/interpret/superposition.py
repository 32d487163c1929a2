"""Superposition (the seed's §14), made measurable.

Two experiments:

- `near_orthogonal`: how close to perpendicular can N unit vectors in d
  dimensions be? Random vectors beside vectors optimised (with `fit()`) to
  push their largest |cosine| down, with the Welch bound that no
  arrangement can beat printed beside them.
- `train_toy_model`: Anthropic's toy model of superposition (Elhage et al.
  2022), x' = ReLU(WᵀW x + b) with n features squeezed into m < n hidden
  dimensions, trained with `fit()`; sparse features get stored in
  superposition (n = 5, m = 2 gives the pentagon).
"""

import math
import time
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from keras_gpt.files import replace_atomically


def welch_bound(n_vectors, dim):
    """The smallest largest-|cos| that `n_vectors` unit vectors in `dim`
    dimensions can have: max |cos| >= sqrt((N - d) / (d (N - 1)))."""
    if n_vectors <= dim:
        return 0.0
    return math.sqrt((n_vectors - dim) / (dim * (n_vectors - 1)))


def _check_count(name, value, least):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < least:
        raise ValueError(f"{name} must be an integer >= {least}; got {value!r}.")


def _check_positive(name, value):
    if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value)
            and value > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")


# Near-perpendicular directions ------------------------------------------------


@dataclass
class AngleSummary:
    """Pairwise angles of a set of unit vectors (every pair, counted once).

    Attributes:
        max_abs_cos: The largest |cosine| over all pairs.
        min_angle, max_angle: The extreme angles in degrees.
        spread: Angles (degrees) at the 0.1, 1, 50, 99 and 99.9 percentiles.
        within_89_91: Fraction of pairs between 89 and 91 degrees (the
            seed's "nearly perpendicular").
        counts, edges: A histogram of the cosines (`edges` has one more
            entry than `counts`).
    """

    max_abs_cos: float
    min_angle: float
    max_angle: float
    spread: dict
    within_89_91: float
    counts: np.ndarray
    edges: np.ndarray


def angle_summary(vectors, bins=4000, chunk=1024):
    """`AngleSummary` of the rows of `vectors` (normalised here), every pair
    once, computed in row chunks so 10,000 vectors need no 10,000² matrix."""
    v = np.asarray(vectors, dtype=np.float32)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    n = len(v)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    counts = np.zeros(bins, np.int64)
    lo, hi = 1.0, -1.0
    near = 0
    band = math.cos(math.radians(89.0))
    for start in range(0, n - 1, chunk):
        stop = min(start + chunk, n)
        # Pairs (i, j), j > i: inside the chunk, then the chunk against
        # every later row.
        inside = v[start:stop] @ v[start:stop].T
        values = np.concatenate([
            inside[np.triu_indices(stop - start, 1)],
            (v[start:stop] @ v[stop:].T).ravel()])
        counts += np.histogram(values, bins=bins, range=(-1.0, 1.0))[0]
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
        near += int(np.count_nonzero(np.abs(values) <= band))
    pairs = n * (n - 1) // 2
    cumulative = np.cumsum(counts[::-1]) / pairs  # from cos = 1 (small angles)
    spread = {}
    for q in (0.1, 1.0, 50.0, 99.0, 99.9):
        index = min(int(np.searchsorted(cumulative, q / 100.0)), bins - 1)
        cos = 0.5 * (edges[bins - index] + edges[bins - index - 1])
        spread[q] = math.degrees(math.acos(cos))
    return AngleSummary(
        max_abs_cos=max(abs(lo), abs(hi)),
        min_angle=math.degrees(math.acos(min(hi, 1.0))),
        max_angle=math.degrees(math.acos(max(lo, -1.0))),
        spread=spread, within_89_91=near / pairs, counts=counts, edges=edges)


@keras.saving.register_keras_serializable(package="keras_gpt")
class NearOrthogonalPacking(keras.Model):
    """N unit vectors in d dimensions, trained to be nearly perpendicular.

    Called on `{"rows": (1, batch) int ids, "sharpness": (1,) float}`, it
    returns a soft maximum of |cos| between those rows and every vector:
    logsumexp(t |cos|) / t with t = sharpness * sqrt(d), which tends to the
    largest |cos| as t grows. Train it with a loss that returns `y_pred`
    (see `near_orthogonal`); the vectors are `unit_vectors()`.

    Args:
        n_vectors: N.
        dim: d.
        seed: Seed of the random starting vectors.
    """

    def __init__(self, n_vectors, dim, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.n_vectors, self.dim, self.seed = n_vectors, dim, seed
        # NumPy draws the start, so the random set is the same on every
        # backend.
        start = np.random.default_rng(seed).standard_normal((n_vectors, dim))
        self.vectors = self.add_weight(
            shape=(n_vectors, dim), name="vectors",
            initializer=keras.initializers.Constant(start.astype("float32")))

    def unit_vectors(self):
        """The vectors scaled to length 1, as a NumPy array (N, d)."""
        v = ops.convert_to_numpy(self.vectors)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def call(self, inputs):
        unit = self.vectors / ops.norm(self.vectors, axis=1, keepdims=True)
        rows = inputs["rows"][0]
        cos = ops.matmul(ops.take(unit, rows, axis=0), ops.transpose(unit))
        off_diagonal = 1.0 - ops.one_hot(rows, self.n_vectors, dtype=cos.dtype)
        t = inputs["sharpness"][0] * math.sqrt(self.dim)
        # Each row's soft-max |cos| to every other vector, averaged.
        soft_max = ops.logsumexp(t * ops.abs(cos) * off_diagonal, axis=1) / t
        return ops.reshape(ops.mean(soft_max), (1,))

    def get_config(self):
        return {**super().get_config(), "n_vectors": self.n_vectors,
                "dim": self.dim, "seed": self.seed}


def _prediction(y_true, y_pred):
    return y_pred


@dataclass
class NearOrthogonal:
    """What `near_orthogonal` measured (see its docstring)."""

    n_vectors: int
    dim: int
    welch_bound: float
    random: AngleSummary
    optimised: AngleSummary
    seconds: float
    random_vectors: np.ndarray
    optimised_vectors: np.ndarray

    def report(self):
        """A printable table: both sets' angles beside the Welch bound."""
        lines = [f"{self.n_vectors} unit vectors in {self.dim} dimensions "
                 f"({self.n_vectors * (self.n_vectors - 1) // 2:,} pairs)",
                 f"{'':10} {'max |cos|':>9} {'min angle':>9} "
                 f"{'max angle':>9} {'1%-99% angles':>15} {'89-91 deg':>9}"]
        for name, s in (("random", self.random), ("optimised", self.optimised)):
            lines.append(
                f"{name:10} {s.max_abs_cos:9.4f} {s.min_angle:8.2f}° "
                f"{s.max_angle:8.2f}° {s.spread[1.0]:6.2f}°-{s.spread[99.0]:6.2f}° "
                f"{100 * s.within_89_91:8.1f}%")
        bound_angle = math.degrees(math.acos(self.welch_bound))
        lines.append(
            f"{'Welch':10} {self.welch_bound:9.4f} {bound_angle:8.2f}° "
            f"{180 - bound_angle:8.2f}°   (no arrangement has a smaller "
            "max |cos|)")
        lines.append(f"optimised in {self.seconds:.1f} s "
                     f"({keras.backend.backend()})")
        return "\n".join(lines)


def near_orthogonal(n_vectors=10_000, dim=100, steps=500, batch_size=1000,
                    learning_rate=0.01, sharpness=(5.0, 50.0), seed=0,
                    verbose=0):
    """Random versus optimised nearly-perpendicular unit vectors.

    The seed says 10,000 random vectors in 100 dimensions are all "close to
    perpendicular (89-91°)" and that optimisation packs them better. This
    measures both: `n_vectors` random unit vectors, then the same vectors
    trained with `fit()` (Adam, cosine-decayed learning rate) to minimise a
    soft maximum of |cos| between a batch of rows and all vectors, the
    softness annealed from `sharpness[0]` to `sharpness[1]` (times
    sqrt(dim)). The Welch bound says how far down any arrangement can go.

    Args:
        n_vectors: N, at least 2.
        dim: d, at least 1.
        steps: Optimisation steps (batches).
        batch_size: Rows whose cosines to every vector make one step's loss
            (all N if N is smaller).
        learning_rate: Adam's peak learning rate.
        sharpness: (start, end) of the annealed soft-max sharpness.
        seed: Seeds the random vectors and the batches.
        verbose: `fit()`'s progress bar.

    Returns:
        A `NearOrthogonal`: `random` and `optimised` `AngleSummary`s,
        `welch_bound`, `seconds` (the optimisation's wall time) and the
        vectors; `.report()` is a printable table.

    Example:

    ```python
    result = near_orthogonal(10_000, 100)
    print(result.report())
    ```
    """
    _check_count("n_vectors", n_vectors, 2)
    _check_count("dim", dim, 1)
    _check_count("steps", steps, 1)
    _check_count("batch_size", batch_size, 1)
    _check_positive("learning_rate", learning_rate)
    for s in sharpness:
        _check_positive("sharpness", s)
    batch_size = min(batch_size, n_vectors)
    model = NearOrthogonalPacking(n_vectors, dim, seed=seed)
    random_vectors = model.unit_vectors()
    rng = np.random.default_rng(seed)
    rows = np.stack([rng.choice(n_vectors, batch_size, replace=False)
                     for _ in range(steps)]).astype("int32")
    t = np.geomspace(sharpness[0], sharpness[1], steps).astype("float32")
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
            learning_rate, steps, alpha=0.01)),
        loss=_prediction)
    start = time.perf_counter()
    model.fit({"rows": rows, "sharpness": t}, np.zeros((steps, 1), "float32"),
              batch_size=1, epochs=1, shuffle=False, verbose=verbose)
    seconds = time.perf_counter() - start
    optimised = model.unit_vectors()
    return NearOrthogonal(
        n_vectors=n_vectors, dim=dim,
        welch_bound=welch_bound(n_vectors, dim),
        random=angle_summary(random_vectors),
        optimised=angle_summary(optimised), seconds=seconds,
        random_vectors=random_vectors, optimised_vectors=optimised)


# The toy model of superposition ------------------------------------------------


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
    _check_count("n_features", n_features, 2)
    _check_count("n_hidden", n_hidden, 1)
    _check_count("steps", steps, 1)
    _check_count("batch_size", batch_size, 1)
    _check_positive("learning_rate", learning_rate)
    sparsity = np.atleast_1d(np.asarray(sparsity, np.float64))
    bad = sparsity[~((sparsity >= 0) & (sparsity < 1))]
    if sparsity.ndim != 1 or bad.size:
        raise ValueError(f"sparsity must be in [0, 1); got {bad[0] if bad.size else sparsity}.")
    if np.ndim(importance) == 0:
        _check_positive("importance", importance)
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
    from pathlib import Path

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
