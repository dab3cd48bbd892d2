"""Gradient checks for your own pipelines, and analysis-sized test workspaces.

A gradient is only trusted once it matches finite differences. These helpers compare
``jax.grad`` (or any VJP-based gradient) of a scalar function against central finite
differences in float64, for fits (implicit gradients) and relaxed ops alike.

:func:`synthetic_workspace` writes a pyhf workspace shaped like an ATLAS analysis
(several backgrounds per channel, shared normsys and histosys, staterror, free
background normfactors, Poisson-drawn data) from about 10 to a few thousand parameters,
for tests and benchmarks at realistic sizes.

Example:

>>> import jax.numpy as jnp
>>> from diffana.testing import assert_grad_matches_fd
>>> assert_grad_matches_fd(lambda x: jnp.sum(jnp.sin(x) ** 2), jnp.array([0.1, 0.7]))
array([0.19866933, 0.98544973])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

__all__ = ["assert_grad_matches_fd", "finite_difference_grad", "synthetic_workspace"]


def finite_difference_grad(
    fun: Callable[[Array], ArrayLike],
    x: Float[ArrayLike, "..."],
    *,
    eps: float | Float[ArrayLike, "..."] = 1e-6,
    relative: bool = True,
) -> Float[np.ndarray, "..."]:
    """Central finite-difference gradient of a scalar function, in float64.

    **Arguments:**

    - `fun`: maps an array shaped like `x` to a scalar.
    - `x`: the point, any shape.
    - `eps`: the step. With `relative=True` (default) the step for component `i` is
      `eps * max(|x_i|, 1)`, which suits yields spanning many orders of magnitude.
    - `relative`: whether `eps` is relative to the component's size.

    **Returns:** a float64 numpy array shaped like `x`.
    """
    x = np.asarray(x, dtype=np.float64)
    flat = x.ravel()
    steps = np.broadcast_to(np.asarray(eps, dtype=np.float64), x.shape).ravel()
    if relative:
        steps = steps * np.maximum(np.abs(flat), 1.0)
    grad = np.empty_like(flat)
    f = jax.jit(lambda v: jnp.asarray(fun(v.reshape(x.shape)), dtype=jnp.float64))
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += steps[i]
        down[i] -= steps[i]
        grad[i] = (float(f(jnp.asarray(up))) - float(f(jnp.asarray(down)))) / (2 * steps[i])
    return grad.reshape(x.shape)


def assert_grad_matches_fd(
    fun: Callable[[Array], ArrayLike],
    x: Float[ArrayLike, "..."],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-8,
    eps: float | Float[ArrayLike, "..."] = 1e-6,
    relative: bool = True,
) -> Float[np.ndarray, "..."]:
    """Assert that `jax.grad(fun)(x)` is finite and matches central finite differences.

    **Arguments:**

    - `fun`: maps an array shaped like `x` to a scalar.
    - `x`: the point, any shape (cast to float64).
    - `rtol`, `atol`: tolerances of the comparison (as in `numpy.testing.assert_allclose`).
    - `eps`, `relative`: the finite-difference step, see :func:`finite_difference_grad`.

    **Returns:** the autodiff gradient as a numpy array, for further checks.

    **Raises:** `AssertionError` naming the components that disagree, or any NaN/inf.
    """
    x64 = jnp.asarray(x, dtype=jnp.float64)
    auto = np.asarray(jax.grad(lambda v: jnp.asarray(fun(v), dtype=jnp.float64))(x64))
    if not np.all(np.isfinite(auto)):
        raise AssertionError(f"autodiff gradient has non-finite entries: {auto}")
    fd = finite_difference_grad(fun, x64, eps=eps, relative=relative)
    np.testing.assert_allclose(
        auto, fd, rtol=rtol, atol=atol, err_msg="autodiff gradient != finite differences"
    )
    return auto


# --------------------------------------------------------------------------------------
# synthetic, analysis-sized pyhf workspaces

#: Background processes of every channel; the first four may carry free normfactors,
#: the last one ("other") is taken from simulation with the luminosity uncertainty.
_BACKGROUNDS = ("bkg_a", "bkg_b", "bkg_c", "bkg_d", "other")
_SCALED = 4  # the backgrounds that free normfactors may scale
_BASE_YIELD = (400.0, 150.0, 60.0, 25.0, 8.0)  # events per channel before variations


def synthetic_workspace(
    n_channels: int,
    n_bins: int,
    n_normsys: int,
    n_histosys: int,
    n_normfactors: int,
    *,
    staterror: bool = True,
    seed: int = 0,
    signal: bool = True,
    lumi: bool = True,
    data_mu: float = 0.0,
) -> dict:
    """A pyhf workspace shaped like an ATLAS analysis, of any size, deterministic per seed.

    Every channel has the five background samples `bkg_a`, `bkg_b`, `bkg_c`, `bkg_d` and
    `other` (a few hundred to a few events per channel, with channel-dependent composition:
    channel `c` enhances `bkg_{"abcd"[c % 4]}`, as a control region would, and bin shapes
    differ per process), plus a `signal` sample scaled by the normfactor `mu`, the
    measurement's parameter of interest. The signal yield per bin is
    `k * sqrt(B) * u` with `B` the bin's total background, `k = 4 / sqrt(total bins)`
    and `u ~ U(0.2, 1.5)`, so that CLs at `mu = 1` lies in the usual range of a search.

    Modifiers, all shared by name across channels as in a real analysis:

    - `normfactor` `mu` on the signal; `n_normfactors` free normfactors `nf_00`,
      `nf_01`, ... in bounds `[0, 10]` (pyhf's default; every third one has the explicit
      config `bounds [[0, 5]]`, `inits [1]`). Normfactor `j` scales the background
      `"abcd"[j % 4]` in the channels `c` with `c % R == r`, where `r = j // 4` and `R`
      the number of normfactors on that background, so each (channel, background) pair
      is scaled by at most one of them.
    - `normsys` `ns_000`, ...: each on one or two backgrounds in a random half of the
      channels (at least one), factors `hi = 1 + U(0.005, 0.06)`,
      `lo = 1 - U(0.005, 0.06)` (asymmetric); `ns_000` also acts on the signal in every
      channel (its theory uncertainty). pyhf's default interpolation (code4).
    - `histosys` `hs_000`, ...: each on one or two backgrounds in a random half of the
      channels; the up/down templates are the nominal times `1 +- a (1 + s x)` with
      `a ~ U(0.01, 0.05)`, a per-template slope `s ~ U(-1, 1)` and `x` the bin position
      in `[-1/2, 1/2]` (a few % off nominal, with a shape).
    - `staterror` `staterror_<channel>` on the backgrounds of each channel
      (`staterror=True`), relative uncertainty `U(0.01, 0.05)` per sample and bin.
    - `lumi` (`lumi=True`) on the signal and `other`, with auxdata 1 and sigma 0.017.

    Observed data: `numpy.random.default_rng(seed).poisson` of the expected yields at
    `mu = data_mu` and all other parameters nominal (the same generator draws the
    yields and modifiers first, so a seed fixes the whole workspace).

    **Number of parameters** (pyhf's `model.config.npars`, the same as
    `diffana.hf.Model.from_pyhf(ws).npars`)::

        npars = signal + lumi + n_normfactors + n_normsys + n_histosys
                + staterror * n_channels * n_bins

    e.g. `synthetic_workspace(24, 3, 90, 60, 12)` has 1 + 1 + 12 + 90 + 60 + 72 = 236
    parameters and 72 bins; `(1, 2, 3, 2, 1)` has 10; `(100, 4, 320, 250, 28)` has
    1000. The auxiliary data number `npars - 1 - n_normfactors` (all but the free
    normfactors and `mu`).

    **Arguments:**

    - `n_channels`: channels `ch000`, `ch001`, ... (>= 1).
    - `n_bins`: bins per channel (>= 1); the main data have `n_channels * n_bins` bins.
    - `n_normsys`, `n_histosys`: numbers of shared normsys / histosys modifiers (>= 0).
    - `n_normfactors`: free background normfactors, `0 <= n_normfactors <= 4 * n_channels`.
    - `staterror`: add a staterror per channel.
    - `seed`: seed of `numpy.random.default_rng`; equal seeds give equal workspaces.
    - `signal`: add the `signal` sample with `mu`. Without it the POI is `nf_00`, so
      `n_normfactors >= 1` is then required.
    - `lumi`: add the `lumi` parameter.
    - `data_mu`: the signal strength of the observed data (0: background only).

    **Returns:** a workspace dict (`channels`, `observations`, `measurements` with one
    measurement `meas`, `version`), yields in events, JSON-serialisable (plain floats).

    **Raises:** `ValueError` for sizes out of range.

    Example:

    >>> from diffana.testing import synthetic_workspace
    >>> ws = synthetic_workspace(24, 3, 90, 60, 12)
    >>> len(ws["channels"]), len(ws["channels"][0]["samples"])
    (24, 6)
    >>> import diffana.hf
    >>> diffana.hf.Model.from_pyhf(ws).npars
    236
    """
    if n_channels < 1 or n_bins < 1:
        raise ValueError(f"need n_channels, n_bins >= 1; got {n_channels}, {n_bins}")
    if n_normsys < 0 or n_histosys < 0:
        raise ValueError(f"need n_normsys, n_histosys >= 0; got {n_normsys}, {n_histosys}")
    if not 0 <= n_normfactors <= _SCALED * n_channels:
        raise ValueError(
            f"need 0 <= n_normfactors <= {_SCALED} * n_channels = {_SCALED * n_channels}; "
            f"got {n_normfactors}"
        )
    if not signal and n_normfactors < 1:
        raise ValueError("without a signal the POI is the first normfactor: n_normfactors >= 1")

    rng = np.random.default_rng(seed)
    nb = len(_BACKGROUNDS)
    channels = [f"ch{c:03d}" for c in range(n_channels)]
    x = (np.arange(n_bins) + 0.5) / n_bins - 0.5  # bin position in [-1/2, 1/2]

    # nominal background yields: (channel, background, bin)
    scale = np.exp(rng.normal(0.0, 0.5, (n_channels, nb)))
    enhance = np.ones((n_channels, nb))
    enhance[np.arange(n_channels), np.arange(n_channels) % _SCALED] = 4.0
    slopes = rng.uniform(-2.0, 1.0, nb)  # per-process shape: exp(slope * x)
    shape = np.exp(slopes[:, None] * x[None, :])
    shape = shape / shape.sum(axis=1, keepdims=True)
    bkg = np.asarray(_BASE_YIELD)[None, :, None] * (scale * enhance)[:, :, None] * shape[None]
    total_b = bkg.sum(axis=1)  # (channel, bin)
    k = 4.0 / np.sqrt(n_channels * n_bins)
    sig = k * np.sqrt(total_b) * rng.uniform(0.2, 1.5, (n_channels, n_bins))

    # modifiers: {(channel, sample index): [modifier, ...]}, sample index nb = signal
    mods: dict[tuple[int, int], list[dict[str, Any]]] = {
        (c, s): [] for c in range(n_channels) for s in range(nb + 1)
    }
    for s in range(nb + 1):
        for c in range(n_channels):
            if s == nb:
                mods[c, s].append({"name": "mu", "type": "normfactor", "data": None})
            if lumi and s in (nb, nb - 1):
                mods[c, s].append({"name": "lumi", "type": "lumi", "data": None})

    nf_names = [f"nf_{j:02d}" for j in range(n_normfactors)]
    per_bkg = [len(range(p, n_normfactors, _SCALED)) for p in range(_SCALED)]
    for j, name in enumerate(nf_names):
        p, r = j % _SCALED, j // _SCALED
        for c in range(n_channels):
            if c % per_bkg[p] == r:
                mods[c, p].append({"name": name, "type": "normfactor", "data": None})

    def some_channels() -> np.ndarray:
        chosen = np.flatnonzero(rng.random(n_channels) < 0.5)
        return chosen if chosen.size else rng.integers(n_channels, size=1)

    def some_backgrounds() -> np.ndarray:
        return rng.choice(nb, size=int(rng.integers(1, 3)), replace=False)

    for i in range(n_normsys):
        name = f"ns_{i:03d}"
        up, down = rng.uniform(0.005, 0.06, 2)
        for c in some_channels():
            for p in some_backgrounds():
                mods[c, p].append(
                    {"name": name, "type": "normsys", "data": {"hi": 1 + up, "lo": 1 - down}}
                )
        if i == 0 and signal:
            for c in range(n_channels):
                mods[c, nb].append(
                    {"name": name, "type": "normsys", "data": {"hi": 1.1, "lo": 0.92}}
                )

    for i in range(n_histosys):
        name = f"hs_{i:03d}"
        size, slope = rng.uniform(0.01, 0.05), rng.uniform(-1.0, 1.0)
        variation = size * (1.0 + slope * x)
        for c in some_channels():
            for p in some_backgrounds():
                nom = bkg[c, p]
                mods[c, p].append(
                    {
                        "name": name,
                        "type": "histosys",
                        "data": {
                            "hi_data": _floats(nom * (1.0 + variation)),
                            "lo_data": _floats(nom * (1.0 - variation)),
                        },
                    }
                )

    if staterror:
        for c in range(n_channels):
            rel = rng.uniform(0.01, 0.05, (nb, n_bins))
            for p in range(nb):
                mods[c, p].append(
                    {
                        "name": f"staterror_{channels[c]}",
                        "type": "staterror",
                        "data": _floats(bkg[c, p] * rel[p]),
                    }
                )

    spec_channels = []
    for c, ch in enumerate(channels):
        samples = [
            {"name": name, "data": _floats(bkg[c, p]), "modifiers": mods[c, p]}
            for p, name in enumerate(_BACKGROUNDS)
        ]
        if signal:
            samples.append({"name": "signal", "data": _floats(sig[c]), "modifiers": mods[c, nb]})
        spec_channels.append({"name": ch, "samples": samples})

    expected = total_b + (data_mu * sig if signal else 0.0)
    observed = rng.poisson(expected).astype(np.float64)
    parameters: list[dict[str, Any]] = []
    if lumi:
        parameters.append(
            {
                "name": "lumi",
                "auxdata": [1.0],
                "sigmas": [0.017],
                "bounds": [[0.915, 1.085]],
                "inits": [1.0],
            }
        )
    parameters += [
        {"name": name, "bounds": [[0.0, 5.0]], "inits": [1.0]}
        for j, name in enumerate(nf_names)
        if j % 3 == 2
    ]
    return {
        "channels": spec_channels,
        "observations": [
            {"name": ch, "data": _floats(observed[c])} for c, ch in enumerate(channels)
        ],
        "measurements": [
            {
                "name": "meas",
                "config": {"poi": "mu" if signal else nf_names[0], "parameters": parameters},
            }
        ],
        "version": "1.0.0",
    }


def _floats(a: Any) -> list[float]:
    """A 1-D array as a list of plain Python floats (JSON-serialisable)."""
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]
