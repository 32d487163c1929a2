"""Timing what runs here: the benchmark and the backend's own choices (the
PyTorch CPU product) measure the same way."""

import time


def time_call(fn):
    """Seconds `fn()` took, and what it returned."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved_best(runs, rounds):
    """Best seconds per name over `rounds` rounds of `runs` (name -> fn).

    Round by round, one call each (a, b, c, a, b, c, ...): a noisy machine
    then slows every implementation alike, and the best round counts.
    """
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            best[name] = min(best[name], time_call(fn)[0])
    return best
