"""Superposition (the seed's §14): how many nearly perpendicular directions
fit in d dimensions?

`near_orthogonal` measures the seed's claim: N random unit vectors in d
dimensions beside the same vectors optimised (with `fit()`) to push their
largest |cosine| down, with the Welch bound that no arrangement can beat
printed beside them. Anthropic's toy model, where a network actually stores
more features than it has dimensions, is in `toy_superposition`.
"""

import math
import time
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops


def welch_bound(n_vectors, dim):
    """The smallest largest-|cos| that `n_vectors` unit vectors in `dim`
    dimensions can have: max |cos| >= sqrt((N - d) / (d (N - 1)))."""
    if n_vectors <= dim:
        return 0.0
    return math.sqrt((n_vectors - dim) / (dim * (n_vectors - 1)))


def check_count(name, value, least):
    """ValueError unless `value` is an integer >= `least`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < least:
        raise ValueError(f"{name} must be an integer >= {least}; got {value!r}.")


def check_positive(name, value):
    """ValueError unless `value` is a finite number > 0."""
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
    returns, averaged over those rows, each row's soft maximum of |cos| to
    every other vector: logsumexp(t |cos|) / t with t = sharpness *
    sqrt(d), which tends to the largest |cos| as t grows. Train it with a
    loss that returns `y_pred` (see `near_orthogonal`); the vectors are
    `unit_vectors()`.

    Args:
        n_vectors: N.
        dim: d.
        seed: Seed of the random starting vectors (NumPy's, so they are the
            same on every backend).

    Example:

    ```python
    model = NearOrthogonalPacking(300, 30)
    model.compile(optimizer="adam", loss=lambda _, soft_max: soft_max)
    rows = np.tile(np.arange(300, dtype="int32"), (100, 1))
    model.fit({"rows": rows, "sharpness": np.full(100, 20.0, "float32")},
              np.zeros((100, 1)), batch_size=1)
    vectors = model.unit_vectors()
    ```
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
        self.built = True

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
                f"{s.max_angle:8.2f}° "
                f"{s.spread[1.0]:6.2f}°-{s.spread[99.0]:6.2f}° "
                f"{100 * s.within_89_91:8.1f}%")
        bound_angle = math.degrees(math.acos(self.welch_bound))
        lines.append(
            f"{'Welch':10} {self.welch_bound:9.4f} {bound_angle:8.2f}° "
            f"{180 - bound_angle:8.2f}°   (no arrangement has a smaller "
            "max |cos|)")
        lines.append(f"optimised in {self.seconds:.1f} s "
                     f"({keras.backend.backend()})")
        return "\n".join(lines)


def near_orthogonal(n_vectors=10_000, dim=100, steps=300, batch_size=1000,
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
    check_count("n_vectors", n_vectors, 2)
    check_count("dim", dim, 1)
    check_count("steps", steps, 1)
    check_count("batch_size", batch_size, 1)
    check_positive("learning_rate", learning_rate)
    if np.shape(sharpness) != (2,):
        raise ValueError("sharpness must be a pair (start, end); got "
                         f"{sharpness!r}.")
    for s in sharpness:
        check_positive("sharpness", s)
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

