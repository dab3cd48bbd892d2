"""Small builders of pyhf JSON workspaces from template histograms (traceable)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = [
    "histosys",
    "make_workspace",
    "normfactor",
    "normsys",
    "staterror",
    "to_json_compatible",
]


def normfactor(name: str) -> dict[str, Any]:
    """An unconstrained normalisation factor (the POI of a signal sample)."""
    return {"name": name, "type": "normfactor", "data": None}


def normsys(name: str, hi: float, lo: float) -> dict[str, Any]:
    """A constrained normalisation uncertainty: factor `hi` at +1 sigma, `lo` at -1 sigma."""
    return {"name": name, "type": "normsys", "data": {"hi": hi, "lo": lo}}


def histosys(name: str, up, down) -> dict[str, Any]:
    """A constrained shape uncertainty from the +1 / -1 sigma histograms."""
    return {"name": name, "type": "histosys", "data": {"hi_data": up, "lo_data": down}}


def staterror(name: str, uncertainties) -> dict[str, Any]:
    """Monte Carlo statistical uncertainty (Barlow-Beeston lite): absolute per-bin
    uncertainties ``sqrt(sum w^2)``."""
    return {"name": name, "type": "staterror", "data": uncertainties}


def make_workspace(
    channel: str,
    samples: Sequence[tuple[str, Any, Sequence[dict[str, Any]]]],
    observed,
    poi: str = "mu",
    poi_bounds: tuple[float, float] = (0.0, 10.0),
    measurement: str = "meas",
) -> dict[str, Any]:
    """A one-channel pyhf workspace.

    **Arguments:**

    - `channel`: the channel's name.
    - `samples`: ``(name, nominal_histogram, modifiers)`` per sample.
    - `observed`: the observed counts of the channel (Asimov data for toys).
    - `poi`, `poi_bounds`: the parameter of interest and its bounds.
    - `measurement`: the measurement's name.

    **Returns:** the workspace dict (arrays left as given, possibly JAX tracers).
    """
    return {
        "channels": [
            {
                "name": channel,
                "samples": [
                    {"name": name, "data": data, "modifiers": list(mods)}
                    for name, data, mods in samples
                ],
            }
        ],
        "observations": [{"name": channel, "data": observed}],
        "measurements": [
            {
                "name": measurement,
                "config": {
                    "poi": poi,
                    "parameters": [
                        {"name": poi, "bounds": [list(poi_bounds)], "inits": [1.0]},
                    ],
                },
            }
        ],
        "version": "1.0.0",
    }


def to_json_compatible(obj: Any) -> Any:
    """Arrays (numpy or JAX) inside a nested dict/list turned into lists of floats."""
    if isinstance(obj, Mapping):
        return {k: to_json_compatible(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json_compatible(v) for v in obj]
    if isinstance(obj, np.ndarray | jnp.ndarray):
        return np.asarray(obj, dtype=np.float64).tolist()
    if isinstance(obj, np.floating | np.integer):
        return obj.item()
    return obj
