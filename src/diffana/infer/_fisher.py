"""Fisher information, Cramér-Rao bound of the POI, and closed-form Asimov significance."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from diffana._config import check_float64
from diffana.infer._mle import (
    as_data,
    floating,
    model_arrays,
    require_poi,
    resolve_fixed,
    value_grad_hess,
)
from diffana.infer._teststat import safe_sqrt

__all__ = ["asimov_significance", "fisher_information", "poi_uncertainty"]


def _pars(model: Any, pars: ArrayLike, npars: int, where: str) -> Array:
    check_float64(pars, "pars", where)
    pars = jnp.asarray(pars, dtype=jnp.float64)
    if pars.shape != (npars,):
        raise ValueError(f"{where}: 'pars' must have shape ({npars},); got {pars.shape}")
    return pars


def fisher_information(
    model: Any,
    pars: Float[ArrayLike, " npars"],
    data: Float[ArrayLike, " n"] | None = None,
) -> Float[Array, "npars npars"]:
    """Fisher information matrix of the model's parameters at `pars`.

    Without `data`: the expected information `E[-d^2 ln L / dpars^2]`, computed as the
    NLL Hessian on the Asimov data `model.expected_data(pars)` held fixed (for Poisson
    and Gaussian terms the second-derivative terms proportional to `data - expected`
    vanish there, so this is exact). With `data`: the observed information, the NLL
    Hessian on `data`.

    **Arguments:**

    - `model`: a `diffana.hf.Model`.
    - `pars`: parameters `(npars,)` in the model's order.
    - `data`: observed data `(nbins + naux,)`, or `None` for the expected information.

    **Returns:** `(npars, npars)`, differentiable with respect to the model's yields.
    """
    where = "diffana.infer.fisher_information"
    npars, _ = model_arrays(model, where)
    pars = _pars(model, pars, npars, where)
    if data is None:
        data = model.expected_data(pars, include_auxdata=True)
    else:
        data = as_data(model, data, where)
    if getattr(model, "nll_derivatives", None) is not None:
        return value_grad_hess(pars, (model, data))[2]
    return jax.hessian(lambda p: model.nll(p, data))(pars)


def _profiled_variance(fisher: Array, index: int, free: Array) -> Array:
    """`[F_ff^-1]_{ii}` over the free block, via a Cholesky solve (NaN if not PD)."""
    both = free[:, None] & free[None, :]
    f = jnp.where(both, fisher, 0.0) + jnp.diag(jnp.where(free, 0.0, 1.0))
    # Scale to unit diagonal for conditioning (yields may span many decades).
    d = jnp.sqrt(jnp.where(free, jnp.abs(jnp.diagonal(f)), 1.0))
    d = jnp.where(d > 0, d, 1.0)
    fs = f / (d[:, None] * d[None, :])
    e = jnp.zeros(f.shape[0], dtype=f.dtype).at[index].set(1.0)
    chol = jnp.linalg.cholesky(fs)
    col = jax.scipy.linalg.cho_solve((chol, True), e / d)
    return col[index] / d[index]


def poi_uncertainty(
    model: Any,
    pars: Float[ArrayLike, " npars"] | None = None,
    data: Float[ArrayLike, " n"] | None = None,
) -> Float[Array, ""]:
    """Cramér-Rao bound on the POI's uncertainty with the nuisance parameters profiled.

    `sigma(mu) = sqrt([I^-1]_{mu mu})`, the inverse taken over the model's floating
    parameters (`model.fixed` excluded), with `I` the expected Fisher information at
    `pars` (:func:`fisher_information`; observed information with `data`). This is the
    INFERNO figure of merit.

    **Arguments:**

    - `model`: a `diffana.hf.Model` with a parameter of interest.
    - `pars`: parameters `(npars,)`; default `model.init` (the nominal point).
    - `data`: use the observed information on `data` instead of the expected one.

    **Returns:** `sigma(POI)`, `()`; NaN if the information matrix is singular.
    """
    where = "diffana.infer.poi_uncertainty"
    npars, poi = model_arrays(model, where)
    poi = require_poi(poi, where)
    if pars is None:
        pars = jnp.asarray(model.init, dtype=jnp.float64)
    fisher = fisher_information(model, pars, data)
    free = floating(model, resolve_fixed(model, None, npars, where))
    return safe_sqrt(_profiled_variance(fisher, poi, free))


def _g_series(x: Array, r: Array) -> Array:
    """`2 F(x) / x^2` by its Taylor series (|x| small); see :func:`asimov_significance`."""
    out = jnp.zeros_like(x)
    for k in range(9, 1, -1):
        coef = 2.0 * (-1.0) ** k * (1.0 - r ** (k - 1)) / (k * (k - 1))
        out = out * x + coef
    return out


def _log1p_over(z: Array) -> Array:
    """`log1p(z) / z`, continuous at 0."""
    small = jnp.abs(z) < 1e-6
    zs = jnp.where(small, 1.0, z)
    return jnp.where(small, 1.0 - z / 2 + z**2 / 3, jnp.log1p(zs) / zs)


def asimov_significance(
    s: Float[ArrayLike, "*bins"],
    b: Float[ArrayLike, "*bins"],
    sigma_b: Float[ArrayLike, "*bins"] | None = None,
) -> Float[Array, ""]:
    """Median discovery significance of Cowan, Cranmer, Gross, Vitells (arXiv:1007.1727).

    Without background uncertainty `Z = sqrt(2 ((s + b) ln(1 + s/b) - s))` (eq. 97);
    with an absolute uncertainty `sigma_b` on `b` (Cowan's "Discovery sensitivity for a
    counting experiment with background uncertainty"):
    `Z^2 = 2 ((s + b) ln[(s + b)(b + sigma^2) / (b^2 + (s + b) sigma^2)]
    - (b^2/sigma^2) ln[1 + sigma^2 s / (b (b + sigma^2))])`.
    For arrays (bins) the per-bin significances are added in quadrature. Evaluated in a
    form that is exact and smooth at `s -> 0` (`Z ~ s / sqrt(b + sigma^2)`), `sigma_b -> 0`
    and for large `s/b`, so gradients are finite everywhere with `b > 0`. A bin with
    `b = 0` adds nothing if it has no signal (zero gradient) and makes `Z` infinite if it
    has some.

    **Arguments:**

    - `s`: expected signal, scalar or per bin.
    - `b`: expected background (>= 0), same shape.
    - `sigma_b`: absolute background uncertainty, same shape, or `None`.

    **Returns:** `Z`, `()` (for a scalar `s`, signed like `s`).

    Example:

    >>> from diffana.infer import asimov_significance
    >>> round(float(asimov_significance(10.0, 100.0)), 3)
    0.984
    """
    check_float64(s, "s", "diffana.infer.asimov_significance")
    s = jnp.asarray(s, dtype=jnp.float64)
    b = jnp.asarray(b, dtype=jnp.float64)
    if s.shape != b.shape:
        raise ValueError(f"asimov_significance: s {s.shape} and b {b.shape} must match")
    # Bins without background: no contribution (and a zero gradient) when they hold no
    # signal either, an infinite significance when they do.
    empty = b <= 0
    b = jnp.where(empty, 1.0, b)
    s_in = s
    s = jnp.where(empty, 0.0, s)
    if sigma_b is None:
        u = jnp.zeros_like(b)
    else:
        sigma_b = jnp.asarray(sigma_b, dtype=jnp.float64)
        if sigma_b.shape != b.shape:
            raise ValueError(f"asimov_significance: sigma_b {sigma_b.shape} must match b {b.shape}")
        u = jnp.where(empty, 0.0, sigma_b) ** 2 / b  # relative variance sigma^2 / b
    x = s / b
    r = u / (1.0 + u)
    small = jnp.abs(x) < 1e-3
    xs = jnp.where(small, 1.0, x)
    # F(x) = (1 + x)(log1p(x) - log1p(r x)) - log1p(r x) / u, with log1p(rx)/u written as
    # x (1 - r) log1p(rx)/(rx) so that u -> 0 is regular.
    big_f = (1.0 + xs) * (jnp.log1p(xs) - jnp.log1p(r * xs)) - xs * (1.0 - r) * _log1p_over(r * xs)
    g = jnp.where(small, _g_series(x, r), 2.0 * big_f / xs**2)
    z = s / jnp.sqrt(b) * safe_sqrt(g)
    z = jnp.where(empty & (s_in != 0), jnp.inf * jnp.sign(s_in), z)
    if z.ndim == 0:
        return z
    return safe_sqrt(jnp.sum(z**2))
