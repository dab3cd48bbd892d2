"""Agreement with the `relaxed` package where the definitions coincide (optional).

`relaxed.hist(data, bins, bandwidth, reflect_infinities=...)` is the same kernel-density
histogram as `hist(x, edges, bandwidth, overflow="drop" | "fold")` without weights, and
`relaxed.cut(data, cut_val, slope=k, keep="above" | "below")` is `cut(x, cut_val,
slope=1/k, ">" | "<")` (relaxed's slope is in inverse units of x). `relaxed` 0.4 needs an
old JAX stack, so this test is normally skipped; `benchmarks/bench_relax.py --python
<old venv python>` makes the same comparison across environments.
"""

from __future__ import annotations

import numpy as np
import pytest

from diffana.relax import cut, hist

relaxed = pytest.importorskip(
    "relaxed", reason="relaxed not installed (optional reference; needs jax 0.4.23 and jaxopt)"
)


@pytest.mark.parametrize(("overflow", "reflect"), [("drop", False), ("fold", True)])
def test_hist_matches_relaxed(events, overflow, reflect):
    x, _ = events
    edges = np.linspace(-2.0, 2.0, 9)
    for bandwidth in (0.05, 0.3, 2.0):
        ref = np.asarray(relaxed.hist(x, edges, bandwidth, reflect_infinities=reflect))
        np.testing.assert_allclose(hist(x, edges, bandwidth, overflow=overflow), ref, rtol=1e-10)


@pytest.mark.parametrize(("direction", "keep"), [(">", "above"), ("<", "below")])
def test_cut_matches_relaxed(events, direction, keep):
    x, _ = events
    ref = np.asarray(relaxed.cut(x, 0.3, slope=4.0, keep=keep))
    np.testing.assert_allclose(cut(x, 0.3, 0.25, direction), ref, rtol=1e-12, atol=1e-15)
