"""The standard cut optimisation: sensible threshold ranges for a grid or random scan
(`diffana.train.scan_thresholds`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from diffana.train import CutVariable, Sample

__all__ = ["candidate_ranges"]


def candidate_ranges(
    samples: Mapping[str, Sample],
    signal: Sequence[str],
    cuts: Sequence[CutVariable],
    transform: Callable[[int, np.ndarray], np.ndarray] = lambda f, v: v,
    keep: float = 0.02,
) -> np.ndarray:
    """Per cut, the interval of sensible thresholds: from "open" to keeping `keep` of the
    signal. For ``">"`` cuts ``[min, q(1 - keep)]`` of the signal, for ``"<"`` cuts
    ``[q(keep), max]``; `transform(feature, values)` maps them to the scan's units.

    **Returns:** ``(cuts, 2)`` array of ``[lo, hi]``.
    """
    x = np.concatenate([np.asarray(samples[n].x) for n in signal])
    out = np.empty((len(cuts), 2))
    for i, c in enumerate(cuts):
        v = x[:, c.feature]
        if c.direction.startswith(">"):
            lo, hi = v.min(), np.quantile(v, 1.0 - keep)
        else:
            lo, hi = np.quantile(v, keep), v.max()
        out[i] = transform(c.feature, np.asarray([lo, hi]))
    return out
