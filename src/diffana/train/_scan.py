"""Derivative-free search over thresholds: a grid scan, or a random scan within a budget."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from jaxtyping import Float

__all__ = ["ScanResult", "scan_thresholds"]


class ScanResult(NamedTuple):
    """The outcome of `scan_thresholds`.

    **Fields:**

    - `thresholds`: the best thresholds found, `(cuts,)`, in the units the scan used.
    - `fom`: their figure of merit on the scanned sample.
    - `n_evaluations`: how many threshold sets were evaluated.
    - `kind`: ``"grid"`` or ``"random"``.
    - `scan_time`: wall-clock seconds of the scan.
    - `history`: the running best figure of merit after each evaluated chunk.
    """

    thresholds: Float[np.ndarray, " cuts"]
    fom: float
    n_evaluations: int
    kind: str
    scan_time: float
    history: Float[np.ndarray, " chunks"]


def scan_thresholds(
    fom: Callable[[np.ndarray], np.ndarray],
    ranges: Float[np.ndarray, "cuts 2"],
    *,
    grid_points: int,
    budget: int,
    seed: int,
    chunk: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Maximise `fom` over thresholds by a grid scan, or a random scan if the grid is
    larger than `budget`.

    The grid has `grid_points` equally spaced values per threshold within `ranges`
    (``grid_points ** cuts`` points); the random scan draws `budget` points uniformly in
    the same box. Candidates are evaluated `chunk` at a time.

    **Arguments:**

    - `fom`: ``(candidates, cuts) -> (candidates,)`` figure of merit (larger is better;
      NaN counts as invalid).
    - `ranges`: ``(cuts, 2)`` intervals, e.g. from `diffana.baselines.candidate_ranges`.
    - `grid_points`, `budget`: grid density and the maximal number of evaluations.
    - `seed`: numpy seed of the random scan.
    - `chunk`: candidates per call of `fom`.
    - `progress`: ``progress(done, total)`` after each chunk.

    **Returns:** a `ScanResult`.

    Example:

    >>> import numpy as np
    >>> f = lambda t: -np.sum((t - 0.3) ** 2, axis=1)
    >>> r = scan_thresholds(f, np.array([[0.0, 1.0]]), grid_points=11, budget=100, seed=0)
    >>> r.kind, round(float(r.thresholds[0]), 2), r.n_evaluations
    ('grid', 0.3, 11)
    """
    ranges = np.asarray(ranges, dtype=np.float64)
    k = ranges.shape[0]
    if grid_points < 2 or budget < 1:
        raise ValueError(f"need grid_points >= 2 and budget >= 1, got {grid_points}, {budget}")
    t0 = time.perf_counter()
    if grid_points**k <= budget:
        kind = "grid"
        axes = [np.linspace(lo, hi, grid_points) for lo, hi in ranges]
        candidates = np.asarray(list(itertools.product(*axes)), dtype=np.float64)
    else:
        kind = "random"
        rng = np.random.default_rng(seed)
        u = rng.uniform(size=(budget, k))
        candidates = ranges[:, 0] + u * (ranges[:, 1] - ranges[:, 0])
    best, best_t = -np.inf, candidates[0]
    history = []
    n = len(candidates)
    for start in range(0, n, chunk):
        c = candidates[start : start + chunk]
        values = np.asarray(fom(c), dtype=np.float64)
        values = np.where(np.isfinite(values), values, -np.inf)
        i = int(np.argmax(values))
        if values[i] > best:
            best, best_t = float(values[i]), c[i]
        history.append(best)
        if progress is not None:
            progress(min(start + chunk, n), n)
    return ScanResult(
        thresholds=np.asarray(best_t),
        fom=best,
        n_evaluations=n,
        kind=kind,
        scan_time=time.perf_counter() - t0,
        history=np.asarray(history),
    )
