"""Relaxations: smooth cuts, histograms and object selections, each with a hard twin.

Every soft operation has a documented hard limit (slope, bandwidth or temperature -> 0)
with the same signature, used to evaluate a trained analysis honestly:

| soft | hard twin | parameter -> 0 |
| --- | --- | --- |
| `cut` | `hard_cut` | `slope` |
| `window` | `hard_window` | `slope` |
| `hist` | `hard_hist` | `bandwidth` |
| `softmax_hist` | `hard_softmax_hist` | `temperature` |
| `object_cut`, `object_window` | `hard_object_cut`, `hard_object_window` | `slope` |
| `count_at_least` | `hard_count_at_least` | (exact on hard pass flags) |
| `leading_weights` | `hard_leading_weights` | (exact on hard pass flags) |

The soft functions also take `hard=True`, so a pipeline switches to its hard limit
without being rewritten. `soft_and`, `soft_or` and `soft_not` are exact on weights in
{0, 1} and serve as their own hard twins. `ordered_edges` makes trainable bin edges;
`anneal_geometric`, `anneal_linear` and `anneal_exponential` are schedules (optax
protocol) that drive slopes, bandwidths and temperatures towards the hard limit.
"""

from __future__ import annotations

from diffana.relax._binning import ordered_edges, ordered_edges_inverse
from diffana.relax._cuts import (
    cut,
    hard_cut,
    hard_window,
    soft_and,
    soft_not,
    soft_or,
    window,
)
from diffana.relax._hist import hard_hist, hard_softmax_hist, hist, softmax_hist
from diffana.relax._objects import (
    count_at_least,
    hard_count_at_least,
    hard_leading_weights,
    hard_object_cut,
    hard_object_window,
    leading_weights,
    object_cut,
    object_window,
)
from diffana.relax._schedules import anneal_exponential, anneal_geometric, anneal_linear

__all__ = [
    "anneal_exponential",
    "anneal_geometric",
    "anneal_linear",
    "count_at_least",
    "cut",
    "hard_count_at_least",
    "hard_cut",
    "hard_hist",
    "hard_leading_weights",
    "hard_object_cut",
    "hard_object_window",
    "hard_softmax_hist",
    "hard_window",
    "hist",
    "leading_weights",
    "object_cut",
    "object_window",
    "ordered_edges",
    "ordered_edges_inverse",
    "soft_and",
    "soft_not",
    "soft_or",
    "softmax_hist",
    "window",
]
