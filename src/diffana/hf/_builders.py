"""Helpers that build pyhf modifiers and small models from (soft) histograms.

All helpers accept lists, numpy arrays and JAX arrays (also tracers), so specifications can
be assembled inside a differentiated function and passed to `Model.from_pyhf`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from diffana.errors import SpecError
from diffana.hf._model import Model

__all__ = [
    "correlated_background",
    "histosys_from_variations",
    "normsys_from_variations",
    "simple_model",
    "uncorrelated_background",
]


def _histogram(x: Any, what: str) -> Any:
    """A 1-D histogram as a JAX array (if it is one) or a list of floats."""
    if isinstance(x, jax.Array) or (
        isinstance(x, list | tuple) and any(isinstance(v, jax.Array) for v in x)
    ):
        arr = jnp.asarray(x, dtype=float)
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise SpecError(f"{what}: expected a histogram (numbers), got {x!r:.80}") from err
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise SpecError(f"{what}: expected a 1-D histogram with at least one bin, got {arr.shape}")
    return arr if isinstance(arr, jax.Array) else arr.tolist()


def _same_bins(name: str, **hists: Any) -> None:
    lengths = {k: len(v) for k, v in hists.items()}
    if len(set(lengths.values())) > 1:
        raise SpecError(f"modifier {name!r}: histograms have different bin counts {lengths}")


def histosys_from_variations(
    name: str, up: Float[ArrayLike, " bins"], down: Float[ArrayLike, " bins"]
) -> dict[str, Any]:
    """A histosys modifier from the up/down varied templates of a sample.

    **Arguments:**

    - `name`: the modifier (nuisance parameter) name.
    - `up`, `down`: the sample's yields at +1 and -1 sigma, shape `(bins,)`.

    **Returns:** the pyhf modifier dict (the templates stay JAX arrays if they are).

    Example:

    >>> from diffana.hf import histosys_from_variations
    >>> histosys_from_variations("jes", [11.0, 21.0], [9.0, 19.0])["data"]
    {'hi_data': [11.0, 21.0], 'lo_data': [9.0, 19.0]}
    """
    hi = _histogram(up, f"histosys {name!r}: up")
    lo = _histogram(down, f"histosys {name!r}: down")
    _same_bins(name, up=hi, down=lo)
    return {"name": name, "type": "histosys", "data": {"hi_data": hi, "lo_data": lo}}


def normsys_from_variations(
    name: str,
    nominal: Float[ArrayLike, " bins"],
    up: Float[ArrayLike, " bins"],
    down: Float[ArrayLike, " bins"],
) -> dict[str, Any]:
    """A normsys modifier from the total yields of the nominal and varied templates.

    ``hi = sum(up) / sum(nominal)``, ``lo = sum(down) / sum(nominal)``; both are 1 when the
    nominal sum is 0 (no yield, no effect), with finite gradients.

    **Returns:** the pyhf modifier dict (factors are JAX scalars if an input is traced).

    Example:

    >>> from diffana.hf import normsys_from_variations
    >>> normsys_from_variations("xsec", [10.0, 30.0], [11.0, 33.0], [9.0, 27.0])["data"]
    {'hi': 1.1, 'lo': 0.9}
    """
    nom = _histogram(nominal, f"normsys {name!r}: nominal")
    hi = _histogram(up, f"normsys {name!r}: up")
    lo = _histogram(down, f"normsys {name!r}: down")
    _same_bins(name, nominal=nom, up=hi, down=lo)
    if any(isinstance(v, jax.Array) for v in (nom, hi, lo)):
        total = jnp.sum(jnp.asarray(nom))
        has = total != 0
        safe = jnp.where(has, total, 1.0)
        hi_f = jnp.where(has, jnp.sum(jnp.asarray(hi)) / safe, 1.0)
        lo_f = jnp.where(has, jnp.sum(jnp.asarray(lo)) / safe, 1.0)
        return {"name": name, "type": "normsys", "data": {"hi": hi_f, "lo": lo_f}}
    total = float(np.sum(nom))
    if total == 0:
        return {"name": name, "type": "normsys", "data": {"hi": 1.0, "lo": 1.0}}
    data = {"hi": float(np.sum(hi)) / total, "lo": float(np.sum(lo)) / total}
    return {"name": name, "type": "normsys", "data": data}


def _two_sample_spec(signal: Any, bkg: Any, bkg_modifiers: list[dict[str, Any]]) -> dict:
    sig = _histogram(signal, "signal")
    bkg = _histogram(bkg, "background")
    _same_bins("mu", signal=sig, background=bkg)
    return {
        "channels": [
            {
                "name": "singlechannel",
                "samples": [
                    {
                        "name": "signal",
                        "data": sig,
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {"name": "background", "data": bkg, "modifiers": bkg_modifiers},
                ],
            }
        ]
    }


def uncorrelated_background(
    signal: Float[ArrayLike, " bins"],
    bkg: Float[ArrayLike, " bins"],
    bkg_uncertainty: Float[ArrayLike, " bins"],
) -> Model:
    """pyhf's ``simplemodels.uncorrelated_background``: signal strength ``mu`` and a
    per-bin Poisson-constrained (shapesys) background uncertainty ``uncorr_bkguncrt``."""
    unc = _histogram(bkg_uncertainty, "bkg_uncertainty")
    modifier = {"name": "uncorr_bkguncrt", "type": "shapesys", "data": unc}
    return Model.from_pyhf(_two_sample_spec(signal, bkg, [modifier]))


def correlated_background(
    signal: Float[ArrayLike, " bins"],
    bkg: Float[ArrayLike, " bins"],
    bkg_up: Float[ArrayLike, " bins"],
    bkg_down: Float[ArrayLike, " bins"],
) -> Model:
    """pyhf's ``simplemodels.correlated_background``: signal strength ``mu`` and a
    histosys ``correlated_bkg_uncertainty`` between the background templates."""
    modifier = histosys_from_variations("correlated_bkg_uncertainty", bkg_up, bkg_down)
    return Model.from_pyhf(_two_sample_spec(signal, bkg, [modifier]))


def simple_model(
    signal: Float[ArrayLike, " bins"],
    background: Float[ArrayLike, " bins"],
    background_uncertainty: Float[ArrayLike, " bins"] | None = None,
) -> Model:
    """One channel, signal scaled by ``mu``, background with an optional per-bin
    uncertainty (``uncorrelated_background``; no nuisance parameter when it is None).

    Example:

    >>> from diffana.hf import simple_model
    >>> simple_model([5.0, 10.0], [50.0, 60.0], [5.0, 6.0]).par_names
    ('mu', 'uncorr_bkguncrt[0]', 'uncorr_bkguncrt[1]')
    """
    if background_uncertainty is not None:
        return uncorrelated_background(signal, background, background_uncertainty)
    return Model.from_pyhf(_two_sample_spec(signal, background, []))
