"""Profile-likelihood test statistics and Asimov data, with pyhf's definitions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, ArrayLike, Float

from diffana.infer._mle import (
    DEFAULT_MAXITER,
    DEFAULT_TOL,
    FitResult,
    _fit_impl,
    as_data,
    as_poi_value,
    asimov_argmin,
    check_argument_order,
    dynamic_options,
    fit_batch,
    floating,
    model_arrays,
    report_convergence,
    require_poi,
    resolve_bounds,
    resolve_fixed,
    resolve_init,
)

__all__ = [
    "asimov_data",
    "q0",
    "qmu",
    "qmu_tilde",
    "safe_sqrt",
    "tmu",
    "tmu_tilde",
]


def safe_sqrt(x: Array) -> Array:
    """`sqrt(max(x, 0))` with a zero (not infinite) gradient at and below zero.

    NaN stays NaN (a failed fit or a singular matrix upstream must not turn into a
    finite significance or uncertainty).
    """
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), jnp.where(x == x, 0.0, x))


class _Setup:
    """Validated inputs shared by the test statistics and the calculators."""

    def __init__(self, model, data, init, bounds, fixed, where, tol, maxiter, free_poi=True):
        self.model = model
        self.where = where
        if data is not None:
            check_argument_order(data, model, where)
        npars, poi_index = model_arrays(model, where)
        self.npars = npars
        self.poi_index = require_poi(poi_index, where)
        self.data = None if data is None else as_data(model, data, where)
        self.init = resolve_init(model, init, npars, where)
        self.bounds = resolve_bounds(model, bounds, npars, where)
        self.fixed = resolve_fixed(model, fixed, npars, where)
        if free_poi and self.fixed[self.poi_index]:
            raise ValueError(
                f"{where}: the parameter of interest (index {self.poi_index}) is fixed, "
                "which makes profile-likelihood inference impossible; unfix it"
            )
        self.tol = tol
        self.maxiter = maxiter

    @classmethod
    def core(cls, model, data, init, bounds, fixed, tol, maxiter, where="diffana.infer") -> _Setup:
        """Rebuild validated inputs inside a jitted core (no checks)."""
        self = cls.__new__(cls)
        self.model, self.where, self.data = model, where, data
        self.npars, self.poi_index = int(model.npars), int(model.poi_index)
        self.init, self.bounds = init, bounds
        self.fixed = jnp.asarray(fixed)
        self.tol, self.maxiter = tol, maxiter
        return self

    def args(self) -> tuple:
        """Dynamic arguments of a jitted core."""
        return self.model, self.data, self.init, self.bounds

    def kwargs(self) -> dict:
        """Static arguments of a jitted core."""
        return dynamic_options(self.fixed, self.tol, self.maxiter)

    def free_fit(self, data: Array, init: Array | None = None) -> FitResult:
        init = self.init if init is None else init
        return _fit_impl(
            self.model, data, init, self.bounds, self.fixed, self.tol, self.maxiter, False
        )

    def fixed_poi_fit(self, poi_value, data: Array) -> FitResult:
        fixed = jnp.asarray(self.fixed).at[self.poi_index].set(True)
        init = self.init.at[self.poi_index].set(jnp.asarray(poi_value, dtype=jnp.float64))
        return _fit_impl(self.model, data, init, self.bounds, fixed, self.tol, self.maxiter, False)

    def asimov_free_fit(self, pars: Array, data: Array) -> FitResult:
        """The free fit of Asimov data generated at `pars`, in closed form where it
        applies (:func:`diffana.infer._mle.asimov_argmin`); `data` must be
        `model.expected_data(pars, include_auxdata=True)`."""
        free = floating(self.model, self.fixed)
        best, nll, n_iter, converged = asimov_argmin(
            self.model, data, pars, self.bounds, free, self.tol, self.maxiter
        )
        return FitResult(
            pars=best,
            nll=nll,
            converged=converged,
            n_iter=n_iter,
            uncertainties=None,
        )

    def start_from(self, pars: Array) -> Array:
        """A starting point at fitted `pars`: the fixed parameters keep their values in
        `self.init`, and non-finite `pars` (a failed fit) fall back to it. No gradient
        flows through it (a fit's result does not depend on its start)."""
        pars = jax.lax.stop_gradient(pars)
        keep = jnp.asarray(self.fixed) | ~jnp.isfinite(pars)
        return jnp.where(keep, self.init, pars)

    def batch(self, data: Array, poi_values, inits=None) -> list[FitResult]:
        """Fits in one vmapped solver: entry `i` fixes the POI at `poi_values[i]` (or
        floats it when `None`) and starts from `inits[i]` (default `self.init`).
        `data` is shared `(n,)` or per fit `(k, n)`."""
        k = len(poi_values)
        inits = [None] * k if inits is None else inits
        rows, masks = [], []
        for value, start in zip(poi_values, inits, strict=True):
            row = self.init if start is None else start
            mask = jnp.asarray(self.fixed)
            if value is not None:
                row = row.at[self.poi_index].set(jnp.asarray(value, dtype=jnp.float64))
                mask = mask.at[self.poi_index].set(True)
            rows.append(row)
            masks.append(mask)
        res = fit_batch(
            self.model,
            data,
            jnp.stack(rows),
            self.bounds,
            jnp.stack(masks),
            self.tol,
            self.maxiter,
        )
        return [jtu.tree_map(lambda leaf, i=i: leaf[i], res) for i in range(k)]


def _tmu_like(setup: _Setup, mu, data: Array):
    """`2 (nll(mu, theta_hathat) - nll(mu_hat, theta_hat))`, clipped at zero."""
    cond, free = setup.batch(data, [mu, None])
    t = jnp.maximum(2.0 * (cond.nll - free.nll), 0.0)
    return t, cond, free


@eqx.filter_jit
def _tmu_fits_jit(mu, model, data, init, bounds, *, fixed, tol, maxiter):
    """The two fits behind every test statistic (one compilation for all of them)."""
    setup = _Setup.core(model, data, init, bounds, fixed, tol, maxiter)
    t, cond, free = _tmu_like(setup, mu, data)
    return t, cond.pars, free.pars, cond.converged & free.converged


@eqx.filter_jit
def _clip(kind, t, mu, mu_hat):
    if kind == "qmu":
        return jnp.where(mu_hat > mu, 0.0, t)
    if kind == "q0":
        return jnp.where(mu_hat < 0, 0.0, t)
    return t


def _statistic(kind, mu, setup: _Setup, return_fitted_pars):
    mu = as_poi_value(mu, setup.where, "mu")
    t, cond, free, converged = _tmu_fits_jit(mu, *setup.args(), **setup.kwargs())
    t, cond, free = report_convergence(converged, setup.model, setup.where, (t, cond, free))
    stat = _clip(kind, t, mu, free[setup.poi_index])
    if return_fitted_pars:
        return stat, (cond, free)
    return stat


_COMMON_DOC = """
    **Arguments:**

    - `mu`: the tested value of the parameter of interest (may be traced).
    - `data`: main-bin counts followed by auxdata, `(nbins + naux,)`.
    - `model`: a `diffana.hf.Model`.
    - `init`, `fixed`, `bounds`: as in :func:`diffana.infer.fit` (defaults from the model).
    - `return_fitted_pars`: also return `(pars_conditional, pars_unconditional)`, the
      fixed-POI and free fits, like pyhf.

    **Returns:** the test statistic `()`, or `(stat, (pars_cond, pars_free))`.
"""


def tmu(
    mu: Float[ArrayLike, ""],
    data: Float[ArrayLike, " n"],
    model: Any,
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    *,
    return_fitted_pars: bool = False,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
):
    """Two-sided test statistic `t_mu = -2 ln lambda(mu)` (arXiv:1007.1727 eq. 8).

    For the un-tilded statistic pass `bounds` whose POI lower bound is negative; with
    the POI bounded at zero this is :func:`tmu_tilde`, as in pyhf.
    """
    setup = _Setup(model, data, init, bounds, fixed, "diffana.infer.tmu", tol, maxiter)
    return _statistic("tmu", mu, setup, return_fitted_pars)


def tmu_tilde(
    mu: Float[ArrayLike, ""],
    data: Float[ArrayLike, " n"],
    model: Any,
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    *,
    return_fitted_pars: bool = False,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
):
    """Two-sided statistic for a POI bounded at zero, `t~_mu` (arXiv:1007.1727 eq. 11).

    The POI's lower bound (0 in pyhf's suggested bounds) makes the free fit's `mu_hat`
    non-negative, which is what distinguishes it from :func:`tmu`.
    """
    setup = _Setup(model, data, init, bounds, fixed, "diffana.infer.tmu_tilde", tol, maxiter)
    return _statistic("tmu", mu, setup, return_fitted_pars)


def qmu(
    mu: Float[ArrayLike, ""],
    data: Float[ArrayLike, " n"],
    model: Any,
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    *,
    return_fitted_pars: bool = False,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
):
    """One-sided upper-limit statistic `q_mu` (arXiv:1007.1727 eq. 14).

    `q_mu = t_mu` when `mu_hat <= mu`, else 0. pyhf's definition: the POI bounds are
    the ones given (pass a negative POI lower bound for the textbook `q_mu`).
    """
    setup = _Setup(model, data, init, bounds, fixed, "diffana.infer.qmu", tol, maxiter)
    return _statistic("qmu", mu, setup, return_fitted_pars)


def qmu_tilde(
    mu: Float[ArrayLike, ""],
    data: Float[ArrayLike, " n"],
    model: Any,
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    *,
    return_fitted_pars: bool = False,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
):
    """Upper-limit statistic for a POI bounded at zero, `q~_mu` (arXiv:1007.1727 eq. 16).

    Computed as pyhf does: :func:`qmu` with the POI's lower bound at 0 (the model's
    default bounds), so that `mu_hat < 0` is replaced by the fit at `mu = 0`.
    """
    setup = _Setup(model, data, init, bounds, fixed, "diffana.infer.qmu_tilde", tol, maxiter)
    return _statistic("qmu", mu, setup, return_fitted_pars)


def q0(
    data: Float[ArrayLike, " n"],
    model: Any,
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    *,
    return_fitted_pars: bool = False,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
):
    """Discovery statistic `q_0` (arXiv:1007.1727 eq. 12): `t_0` if `mu_hat >= 0`, else 0.

    **Arguments:** `data`, `model`, then as the other test statistics.

    **Returns:** `q_0`, `()` (or with the fitted parameters, see `return_fitted_pars`).
    """
    setup = _Setup(model, data, init, bounds, fixed, "diffana.infer.q0", tol, maxiter)
    return _statistic("q0", 0.0, setup, return_fitted_pars)


for _f in (tmu, tmu_tilde, qmu, qmu_tilde):
    _f.__doc__ = (_f.__doc__ or "") + _COMMON_DOC


def _asimov_pars(setup: _Setup, poi_value, data: Array | None):
    if data is None:
        pars = setup.init.at[setup.poi_index].set(jnp.asarray(poi_value, dtype=jnp.float64))
        return pars, jnp.asarray(True)
    res = setup.fixed_poi_fit(poi_value, data)
    return res.pars, res.converged


@eqx.filter_jit
def _asimov_jit(poi_value, model, data, init, bounds, *, include_auxdata, fixed, tol, maxiter):
    setup = _Setup.core(model, data, init, bounds, fixed, tol, maxiter)
    pars, converged = _asimov_pars(setup, poi_value, data)
    return model.expected_data(pars, include_auxdata=include_auxdata), pars, converged


def asimov_data(
    model: Any,
    poi_value: Float[ArrayLike, ""],
    data: Float[ArrayLike, " n"] | None = None,
    include_auxdata: bool = True,
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    *,
    return_fitted_pars: bool = False,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
):
    """Asimov dataset: the model's expected data at `mu = poi_value`.

    With `data` (pyhf's `generate_asimov_data`): the nuisance parameters are profiled
    on `data` at the fixed POI, and the expected data (with the auxdata at the fitted
    nuisance values) is returned. Without `data`: the nuisance parameters stay at
    `init` (default `model.init`, i.e. their nominal values) — what the training losses
    use, as no observation exists yet.

    **Arguments:**

    - `model`: a `diffana.hf.Model`.
    - `poi_value`: value of the parameter of interest (may be traced).
    - `data`: observed data to profile the nuisance parameters on, or `None`.
    - `include_auxdata`: append the auxiliary data (pyhf's layout), default `True`.
    - `init`, `fixed`, `bounds`: as in :func:`diffana.infer.fit`.
    - `return_fitted_pars`: also return the parameters the data were generated at.

    **Returns:** `(nbins + naux,)` (or `(nbins,)`), and the parameters if requested.
    """
    where = "diffana.infer.asimov_data"
    setup = _Setup(model, data, init, bounds, fixed, where, tol, maxiter, free_poi=False)
    poi_value = as_poi_value(poi_value, where)
    out, pars, converged = _asimov_jit(
        poi_value, *setup.args(), include_auxdata=include_auxdata, **setup.kwargs()
    )
    if setup.data is not None:
        out, pars = report_convergence(converged, model, where, (out, pars))
    if return_fitted_pars:
        return out, pars
    return out
