"""Upper limits on the POI by root finding on CLs, differentiable by the implicit-function
theorem."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from diffana._config import entry_jit, require_float64
from diffana.errors import ConvergenceWarning
from diffana.infer._asymptotics import N_SIGMA, _pvalues, _test_statistic_value
from diffana.infer._mle import (
    DEFAULT_MAXITER,
    DEFAULT_TOL,
    _is_traced,
    report_convergence,
    vectorised_fits,
)
from diffana.infer._teststat import (
    ASIMOV,
    AT_FREE,
    AT_GEN,
    AT_INIT,
    FLOATING,
    OBSERVED,
    _Setup,
    fits_in_sequence,
    safe_sqrt,
)

__all__ = ["UpperLimitResult", "upper_limit"]

# The upper end of the bracket is doubled at most this many times.
MAX_EXPAND = 30


class UpperLimitResult(NamedTuple):
    """Upper limit on the parameter of interest (a PyTree).

    **Fields:** `observed` `()`, and `expected` `(5,)`: the limits from the expected CLs
    at `(+2, +1, 0, -1, -2)` sigma, i.e. pyhf's order (smallest limit first).
    """

    observed: Float[Array, ""]
    expected: Float[Array, " 5"]


class _Search(NamedTuple):
    phase: Array  # 0: evaluate the lower end, 1: expand the upper end, 2: Illinois
    x: Array  # next point to evaluate
    a: Array
    fa: Array
    b: Array
    fb: Array
    side: Array
    n_expand: Array
    n_iter: Array
    done: Array
    ok: Array
    fits_ok: Array


@eqx.filter_custom_jvp
def _limit(theta, *, fn, rtol, atol, maxiter, max_expand):
    """Root of the decreasing `fn(mu, theta)[0]` from the POI bounds in `theta`.

    One loop with a single evaluation site (one compilation of the fits): it evaluates
    the lower end, doubles the upper end until the function is negative there, then
    runs the Illinois method (modified regula falsi) on the bracket.
    """
    lo, hi = theta["poi_lo"], theta["poi_hi"]
    zero = jnp.zeros_like(lo)
    init = _Search(
        phase=jnp.asarray(0),
        x=lo,
        a=lo,
        fa=zero,
        b=hi,
        fb=zero,
        side=jnp.asarray(0),
        n_expand=jnp.asarray(0),
        n_iter=jnp.asarray(0),
        done=jnp.asarray(False),
        ok=jnp.asarray(False),
        fits_ok=jnp.asarray(True),
    )

    def cond(s: _Search):
        return ~s.done & (s.n_iter < maxiter + max_expand + 1)

    def body(s: _Search):
        fx, conv = fn(s.x, theta)
        fits_ok = s.fits_ok & conv
        # phase 0: lower end
        p0_done = fx <= 0  # CLs already below the level at the lower bound
        p0 = s._replace(
            phase=jnp.asarray(1),
            a=s.x,
            fa=fx,
            x=jnp.where(p0_done, s.x, s.b),  # done: the limit is the lower bound itself
            done=p0_done,
            ok=p0_done,
        )
        # phase 1: upper end
        bracketed = fx <= 0
        p1_fail = ~bracketed & (s.n_expand >= max_expand)
        c1 = (s.a * fx - s.x * s.fa) / (fx - s.fa)
        p1 = s._replace(
            phase=jnp.where(bracketed, 2, 1),
            b=s.x,
            fb=fx,
            x=jnp.where(bracketed, c1, 2.0 * s.x),
            n_expand=s.n_expand + 1,
            done=p1_fail,
        )
        # phase 2: Illinois step at x
        same_as_a = jnp.sign(fx) == jnp.sign(s.fa)
        a = jnp.where(same_as_a, s.x, s.a)
        fa = jnp.where(same_as_a, fx, jnp.where(s.side == -1, 0.5 * s.fa, s.fa))
        b = jnp.where(same_as_a, s.b, s.x)
        fb = jnp.where(same_as_a, jnp.where(s.side == 1, 0.5 * s.fb, s.fb), fx)
        converged = (fx == 0) | (jnp.abs(b - a) <= atol + rtol * jnp.abs(s.x))
        c = (a * fb - b * fa) / (fb - fa)
        inside = jnp.isfinite(c) & (c > jnp.minimum(a, b)) & (c < jnp.maximum(a, b))
        p2 = s._replace(
            a=a,
            fa=fa,
            b=b,
            fb=fb,
            side=jnp.where(same_as_a, 1, -1),
            x=jnp.where(converged, s.x, jnp.where(inside, c, 0.5 * (a + b))),
            done=converged,
            ok=converged,
        )
        new = jax.tree_util.tree_map(
            lambda u, v, w: jnp.where(s.phase == 0, u, jnp.where(s.phase == 1, v, w)), p0, p1, p2
        )
        return new._replace(n_iter=s.n_iter + 1, fits_ok=fits_ok)

    s = jax.lax.while_loop(cond, body, init)
    root = jnp.where(s.ok, s.x, jnp.nan)
    return root, s.ok & s.fits_ok


@_limit.def_jvp
def _limit_jvp(primals, tangents, *, fn, rtol, atol, maxiter, max_expand):
    (theta,) = primals
    (t_theta,) = tangents
    root, converged = _limit(
        theta, fn=fn, rtol=rtol, atol=atol, maxiter=maxiter, max_expand=max_expand
    )
    diff, static = eqx.partition(theta, eqx.is_inexact_array)
    if t_theta is None:
        return (root, converged), (None, None)
    t_full = jax.tree_util.tree_map(
        lambda p, t: None if p is None else (jnp.zeros_like(p) if t is None else t),
        diff,
        t_theta,
        is_leaf=lambda v: v is None,
    )
    g = lambda mu, d: fn(mu, eqx.combine(d, static))[0]  # noqa: E731
    # A limit at the POI's lower bound (CLs below the level there already) moves with the
    # bound; elsewhere the implicit-function theorem on fn(root, theta) = 0.
    at_lower = root == theta["poi_lo"]
    dfdmu = jnp.where(at_lower, 1.0, jax.grad(g)(root, diff))
    _, dfdtheta = jax.jvp(lambda d: g(root, d), (diff,), (t_full,))
    t_lo = t_full["poi_lo"] if t_full.get("poi_lo") is not None else jnp.zeros_like(root)
    return (root, converged), (jnp.where(at_lower, t_lo, -dfdtheta / dfdmu), None)


def upper_limit(
    data: Float[ArrayLike, " n"],
    model: Any,
    level: float = 0.05,
    *,
    test_stat: str = "qtilde",
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    maxiter: int = 100,
    tol: float = DEFAULT_TOL,
    fit_maxiter: int = DEFAULT_MAXITER,
) -> UpperLimitResult:
    """Observed and expected CLs upper limits on the POI at confidence level `1 - level`.

    Solves `CLs(mu) = level` for the observed CLs and each of the five expected-band
    curves of :func:`hypotest` by bracketed root finding (Illinois method on
    `log CLs - log level`) between the POI's bounds, doubling the upper end until the
    CLs falls below `level` (pyhf's `toms748_scan` does the same with a looser default
    tolerance). The fits that do not depend on `mu` (free fits, Asimov generation) run
    once. Jittable and differentiable: the limits' gradients come from the
    implicit-function theorem on `CLs(mu, yields) = level`.

    **Arguments:**

    - `data`: main-bin counts followed by auxdata, `(nbins + naux,)`.
    - `model`: a `diffana.hf.Model`.
    - `level`: CLs threshold, default 0.05 (95% CL).
    - `test_stat`: `"qtilde"` (default) or `"q"`.
    - `init`, `fixed`, `bounds`: as in :func:`diffana.infer.fit`; the POI bounds start
      the bracket.
    - `rtol`, `atol`, `maxiter`: tolerances and iteration limit of the root finding.
    - `tol`, `fit_maxiter`: passed to the fits.

    **Returns:** an :class:`UpperLimitResult`; a limit that could not be bracketed
    within 30 doublings of the upper bound is NaN, with a
    :class:`diffana.ConvergenceWarning` that (outside `jit`) names the range scanned
    and, where the expected rates do not depend on the POI (a zero signal), says so.
    With JAX's 64-bit mode off it raises :class:`diffana.PrecisionError`.
    """
    where = "diffana.infer.upper_limit"
    require_float64(where)
    if test_stat not in ("qtilde", "q"):
        raise ValueError(f"{where}: test_stat must be 'qtilde' or 'q'; got {test_stat!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"{where}: level must be in (0, 1); got {level}")
    setup = _Setup(model, data, init, bounds, fixed, where, tol, fit_maxiter)
    result, converged = _upper_limit_jit(
        *setup.args(),
        level=float(level),
        test_stat=test_stat,
        rtol=rtol,
        atol=atol,
        root_maxiter=maxiter,
        **setup.kwargs(),
    )
    if not _is_traced(result) and _warn_unbracketed(result, setup, float(level), where):
        return result
    return report_convergence(converged, model, where, result)


# The fits behind a limit outside a batch of small models (`fits_in_sequence`): the free fit, the
# background-only fit (mu = 0) from two starts, and the free fit on the Asimov data.
_LIMIT_SCHEDULE = (
    (OBSERVED, AT_INIT, FLOATING),
    (OBSERVED, AT_INIT, 0),
    (OBSERVED, AT_FREE, 0),
    (ASIMOV, AT_GEN, FLOATING),
)


def _warn_unbracketed(result: UpperLimitResult, setup: _Setup, level: float, where: str) -> bool:
    """Say why a limit is NaN where CLs did not fall below `level` anywhere in the range
    scanned (eager calls only, on the failure path). Returns whether it warned: not
    where every limit is finite, nor where the expected rates are not positive (the fits
    fail; :func:`report_convergence` names the bin)."""
    values = np.asarray([result.observed, *np.asarray(result.expected)])
    if np.all(np.isfinite(values)):
        return False
    poi = setup.poi_index
    low, high = (float(x) for x in np.asarray(setup.bounds)[poi])
    top = high * 2.0**MAX_EXPAND
    missing = (["observed"] if not np.isfinite(float(result.observed)) else []) + [
        f"expected ({int(n):+d} sigma)"
        for n, v in zip(np.asarray(N_SIGMA), np.asarray(result.expected), strict=True)
        if not np.isfinite(v)
    ]
    rates = [
        np.asarray(setup.model.expected_data(setup.init.at[poi].set(mu), include_auxdata=False))
        for mu in (low, high)
    ]
    if not all(np.all(r > 0) for r in rates):
        return False
    if np.allclose(rates[0], rates[1], rtol=1e-12, atol=0.0):
        cause = (
            "the expected rates do not depend on the parameter of interest: the signal "
            "is zero, so no signal strength can be excluded"
        )
    else:
        cause = (
            "the signal is too small (or the data too signal-like) for any signal "
            "strength in that range to be excluded"
        )
    warnings.warn(
        f"{where}: the limit cannot be bracketed (NaN: {', '.join(missing)}): CLs "
        f"stays above the level {level} over the whole range scanned, from the POI's "
        f"lower bound {low:g} to its upper bound {high:g} doubled {MAX_EXPAND} times "
        f"({top:.3g}); {cause}. Check the signal yields and the POI bounds.",
        ConvergenceWarning,
        stacklevel=3,
    )
    return True


@entry_jit
def _upper_limit_jit(
    model,
    data,
    init,
    bounds,
    *,
    level,
    test_stat,
    rtol,
    atol,
    root_maxiter,
    fixed,
    tol,
    maxiter,
):
    setup = _Setup.core(model, data, init, bounds, fixed, tol, maxiter)
    fit_maxiter = maxiter
    poi = setup.poi_index
    if not vectorised_fits(setup.npars):
        # the background-only fit from two starts (see `fits_in_sequence`)
        seq = fits_in_sequence(setup, _LIMIT_SCHEDULE, jnp.zeros(1), (1, 2))
        data_a = seq.data_asimov
        nll_free, nll_free_a = seq.nll[0], seq.nll[3]
        mu_hat, mu_hat_a = seq.pars[0, poi], seq.pars[3, poi]
        fits_ok = jnp.all(seq.converged)
    else:
        free, gen = setup.batch(setup.data, [None, 0.0])
        data_a = model.expected_data(gen.pars, include_auxdata=True)
        free_a = setup.asimov_free_fit(gen.pars, data_a)
        nll_free, nll_free_a = free.nll, free_a.nll
        mu_hat, mu_hat_a = free.pars[poi], free_a.pars[poi]
        fits_ok = free.converged & gen.converged & free_a.converged
    theta = {
        "model": model,
        "data": setup.data,
        "data_a": data_a,
        "nll_free": nll_free,
        "nll_free_a": nll_free_a,
        "mu_hat": mu_hat,
        "mu_hat_a": mu_hat_a,
        "init": setup.init,
        "bounds": setup.bounds,
        "poi_lo": setup.bounds[poi, 0],
        "poi_hi": setup.bounds[poi, 1],
        "fixed": setup.fixed,
        "tol": tol,
        "maxiter": fit_maxiter,
    }
    log_level = math.log(level)

    def curves(mu, th):
        s = _Setup.core(
            th["model"], None, th["init"], th["bounds"], th["fixed"], th["tol"], th["maxiter"]
        )
        cond, cond_a = s.batch(jnp.stack([th["data"], th["data_a"]]), [mu, mu])
        q = jnp.maximum(2.0 * (cond.nll - th["nll_free"]), 0.0)
        q = jnp.where(th["mu_hat"] > mu, 0.0, q)
        q_a = jnp.maximum(2.0 * (cond_a.nll - th["nll_free_a"]), 0.0)
        q_a = jnp.where(th["mu_hat_a"] > mu, 0.0, q_a)
        sqrt_qa = safe_sqrt(q_a)
        t_obs = _test_statistic_value(q, q_a, test_stat)
        log_obs = jnp.log(_pvalues(t_obs, sqrt_qa)[2])
        log_exp = jnp.log(_pvalues(N_SIGMA, sqrt_qa)[2])
        return jnp.concatenate([log_obs[None], log_exp]), cond.converged & cond_a.converged

    def fn(mu, th):
        values, conv = curves(mu, th)
        return values[th["curve"]] - log_level, conv

    def one_limit(k):
        th = {**theta, "curve": k}
        return _limit(th, fn=fn, rtol=rtol, atol=atol, maxiter=root_maxiter, max_expand=MAX_EXPAND)

    limits, converged = jax.vmap(one_limit)(jnp.arange(6))
    all_ok = jnp.all(converged) & fits_ok
    return UpperLimitResult(observed=limits[0], expected=limits[1:]), all_ok
