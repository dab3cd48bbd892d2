"""Agreement with the `relaxed` package where the definitions coincide (optional).

`relaxed.hist(data, bins, bandwidth, reflect_infinities=...)` is the same kernel-density
histogram as `hist(x, edges, bandwidth, overflow="drop" | "fold")` without weights, and
`relaxed.cut(data, cut_val, slope=k, keep="above" | "below")` is `cut(x, cut_val,
slope=1/k, ">" | "<")` (relaxed's slope is in inverse units of x).

`relaxed` 0.4 needs an old JAX stack (jax 0.4.23, jaxopt), which cannot share an
environment with diffana. The reference numbers therefore come from `relaxed` imported
here if it can be, or else from the interpreter named by ``DIFFANA_RELAXED_PYTHON`` (a
venv made from ``benchmarks/requirements-relaxed.txt``), run in a subprocess; without
either the tests are skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess

import numpy as np
import pytest

from diffana.relax import cut, hist

_WORKER = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import relaxed
req = json.load(sys.stdin)
x = np.asarray(req["x"])
out = {}
for i, (op, kw) in enumerate(req["calls"]):
    if op == "hist":
        r = relaxed.hist(x, np.asarray(kw["edges"]), kw["bandwidth"],
                         reflect_infinities=kw["reflect"])
    else:
        r = relaxed.cut(x, kw["cut_val"], slope=kw["slope"], keep=kw["keep"])
    out[str(i)] = np.asarray(r, dtype=float).tolist()
json.dump(out, sys.stdout)
"""


def _relaxed_reference(x: np.ndarray, calls: list) -> list[np.ndarray]:
    """relaxed's results of `calls` ``[(op, kwargs), ...]`` on `x` (here or in a subprocess)."""
    if importlib.util.find_spec("relaxed") is not None:
        import relaxed

        out = []
        for op, kw in calls:
            if op == "hist":
                r = relaxed.hist(x, kw["edges"], kw["bandwidth"], reflect_infinities=kw["reflect"])
            else:
                r = relaxed.cut(x, kw["cut_val"], slope=kw["slope"], keep=kw["keep"])
            out.append(np.asarray(r))
        return out
    python = os.environ.get("DIFFANA_RELAXED_PYTHON")
    if not python:
        pytest.skip(
            "relaxed not installed (optional reference; needs jax 0.4.23 and jaxopt): "
            "set DIFFANA_RELAXED_PYTHON to a venv made from benchmarks/requirements-relaxed.txt"
        )
    if not os.path.exists(python):
        pytest.fail(f"DIFFANA_RELAXED_PYTHON={python!r} does not exist")
    req = {"x": x.tolist(), "calls": [[op, kw] for op, kw in calls]}
    proc = subprocess.run(
        [python, "-c", _WORKER], input=json.dumps(req), capture_output=True, text=True
    )
    assert proc.returncode == 0, f"relaxed reference failed:\n{proc.stderr[-3000:]}"
    res = json.loads(proc.stdout)
    return [np.asarray(res[str(i)]) for i in range(len(calls))]


@pytest.mark.parametrize(("overflow", "reflect"), [("drop", False), ("fold", True)])
def test_hist_matches_relaxed(events, overflow, reflect):
    x, _ = events
    edges = np.linspace(-2.0, 2.0, 9)
    bandwidths = (0.05, 0.3, 2.0)
    calls = [
        ("hist", {"edges": edges.tolist(), "bandwidth": b, "reflect": reflect}) for b in bandwidths
    ]
    for bandwidth, ref in zip(bandwidths, _relaxed_reference(x, calls), strict=True):
        np.testing.assert_allclose(hist(x, edges, bandwidth, overflow=overflow), ref, rtol=1e-10)


@pytest.mark.parametrize(("direction", "keep"), [(">", "above"), ("<", "below")])
def test_cut_matches_relaxed(events, direction, keep):
    x, _ = events
    (ref,) = _relaxed_reference(x, [("cut", {"cut_val": 0.3, "slope": 4.0, "keep": keep})])
    np.testing.assert_allclose(cut(x, 0.3, 0.25, direction), ref, rtol=1e-12, atol=1e-15)
