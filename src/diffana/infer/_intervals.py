"""Upper limits on the POI by root finding on CLs, differentiable by the implicit-function
theorem."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from diffana.infer._asymptotics import N_SIGMA, _pvalues, _test_statistic_value
from diffana.infer._mle import DEFAULT_MAXITER, DEFAULT_TOL, report_convergence
from diffana.infer._teststat import _Setup, safe_sqrt

__all__ = ["UpperLimitResult", "upper_limit"]


class UpperLimitResult(NamedTuple):
    """Upper limit on the parameter of interest (a PyTree).

    **Fields:** `observed` `()`, and `expected` `(5,)`: the limits from the expected CLs
    at `(+2, +1, 0, -1, -2)` sigma, i.e. pyhf's order (smallest limit first).
    """

    observed: Float[Array, ""]
    expected: Float[Array, " 5"]


class _Bracket(NamedTuple):
    a: Array
    fa: Array
    b: Array
    fb: Array
    side: Array
    n_iter: Array
    done: Array


def _illinois(f: Callable[[Array], Array], a, fa, b, fb, *, rtol, atol, maxiter):
    """Illinois (modified regula falsi) root of a function with `fa > 0 > fb`."""

    def cond(s: _Bracket):
        return ~s.done & (s.n_iter < maxiter)

    def body(s: _Bracket):
        c = (s.a * s.fb - s.b * s.fa) / (s.fb - s.fa)
        # Guard against a degenerate secant: fall back to bisection.
        c = jnp.where(
            jnp.isfinite(c) & (c > jnp.minimum(s.a, s.b)) & (c < jnp.maximum(s.a, s.b)),
            c,
            0.5 * (s.a + s.b),
        )
        fc = f(c)
        same_as_a = jnp.sign(fc) == jnp.sign(s.fa)
        # Replace the endpoint with the same sign; halve the other's value when the same
        # side is retained twice in a row (Illinois).
        a = jnp.where(same_as_a, c, s.a)
        fa = jnp.where(same_as_a, fc, jnp.where(s.side == -1, 0.5 * s.fa, s.fa))
        b = jnp.where(same_as_a, s.b, c)
        fb = jnp.where(same_as_a, jnp.where(s.side == 1, 0.5 * s.fb, s.fb), fc)
        side = jnp.where(same_as_a, 1, -1)
        width = jnp.abs(b - a)
        done = (fc == 0) | (width <= atol + rtol * jnp.abs(c))
        return _Bracket(a, fa, b, fb, side, s.n_iter + 1, done)

    init = _Bracket(a, fa, b, fb, jnp.asarray(0), jnp.asarray(0), jnp.asarray(False))
    s = jax.lax.while_loop(cond, body, init)
    root = jnp.where(jnp.abs(s.fa) < jnp.abs(s.fb), s.a, s.b)
    return root, s.done


@eqx.filter_custom_jvp
def _limit(theta, *, fn, rtol, atol, maxiter, max_expand):
    """Root of the decreasing `fn(mu, theta)` between the POI bounds in `theta`."""
    lo, hi = theta["poi_lo"], theta["poi_hi"]
    f = lambda mu: fn(mu, theta)[0]  # noqa: E731
    f_lo = f(lo)

    def expand_cond(carry):
        _, f_hi, k = carry
        return (f_hi > 0) & (k < max_expand)

    def expand_body(carry):
        hi_, _, k = carry
        new = 2.0 * hi_
        return new, f(new), k + 1

    hi, f_hi, _ = jax.lax.while_loop(expand_cond, expand_body, (hi, f(hi), 0))
    bracketed = (f_lo > 0) & (f_hi <= 0)
    root, done = _illinois(f, lo, f_lo, hi, f_hi, rtol=rtol, atol=atol, maxiter=maxiter)
    root = jnp.where(f_lo <= 0, lo, root)
    ok = (bracketed & done) | (f_lo <= 0)
    root = jnp.where(ok, root, jnp.nan)
    converged = ok & fn(root, theta)[1]
    return root, converged


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
    dfdmu = jax.grad(g)(root, diff)
    _, dfdtheta = jax.jvp(lambda d: g(root, d), (diff,), (t_full,))
    return (root, converged), (-dfdtheta / dfdmu, None)


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
    :class:`diffana.ConvergenceWarning`.
    """
    where = "diffana.infer.upper_limit"
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
    report_convergence(converged, model, where)
    return result


@eqx.filter_jit
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
    where,
    tol,
    maxiter,
):
    setup = _Setup.core(model, data, init, bounds, fixed, where, tol, maxiter)
    fit_maxiter = maxiter
    poi = setup.poi_index
    free, gen = setup.batch(setup.data, [None, 0.0])
    data_a = model.expected_data(gen.pars, include_auxdata=True)
    free_a = setup.free_fit(data_a, init=gen.pars)
    theta = {
        "model": model,
        "data": setup.data,
        "data_a": data_a,
        "nll_free": free.nll,
        "nll_free_a": free_a.nll,
        "mu_hat": free.pars[poi],
        "mu_hat_a": free_a.pars[poi],
        "init": setup.init,
        "bounds": setup.bounds,
        "poi_lo": setup.bounds[poi, 0],
        "poi_hi": setup.bounds[poi, 1],
    }
    fixed_mask = setup.fixed
    log_level = jnp.log(level)

    def curves(mu, th):
        s = _Setup.core(
            th["model"], None, th["init"], th["bounds"], fixed_mask, where, tol, fit_maxiter
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
        return _limit(th, fn=fn, rtol=rtol, atol=atol, maxiter=root_maxiter, max_expand=30)

    limits, converged = jax.vmap(one_limit)(jnp.arange(6))
    all_ok = jnp.all(converged) & free.converged & gen.converged & free_a.converged
    return UpperLimitResult(observed=limits[0], expected=limits[1:]), all_ok
