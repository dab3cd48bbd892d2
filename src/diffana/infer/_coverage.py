"""Profile-likelihood intervals on the POI, their coverage from pseudo-experiments, and
the FAIR Universe HiggsML Uncertainty Challenge score of a set of intervals."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri
from jaxtyping import Array, ArrayLike, Bool, Float

from diffana._config import entry_jit
from diffana.errors import ConvergenceWarning
from diffana.infer._mle import (
    DEFAULT_MAXITER,
    DEFAULT_TOL,
    _objective,
    describe_model,
    floating,
    report_convergence,
    value_grad_hess,
)
from diffana.infer._solver import newton_solve_free
from diffana.infer._teststat import _Setup, safe_sqrt
from diffana.infer._toys import (
    _sample_indices,
    check_chunk,
    check_key,
    check_ntoys,
    check_sampleable,
    chunk_calls,
    chunk_length,
    concatenate_chunks,
    progress_bar,
    run_calls,
    toy_threads,
    vmapped_toys,
)

__all__ = [
    "CoverageResult",
    "FairUniverseScore",
    "PoiInterval",
    "coverage",
    "fair_universe_score",
    "poi_interval",
]

DEFAULT_LEVEL = 0.6827
ROOT_MAXITER = 60
COVERAGE_CHUNK = 1024


class PoiInterval(NamedTuple):
    """A two-sided profile-likelihood interval on the POI (a PyTree).

    **Fields:** `lower`, `upper` (the interval's ends; a POI bound where the profile
    likelihood ratio stays below the threshold up to it), `mu_hat` (the best fit), all
    `()`, and `converged` `()` bool (every fit and both root searches converged).
    """

    lower: Float[Array, ""]
    upper: Float[Array, ""]
    mu_hat: Float[Array, ""]
    converged: Bool[Array, ""]


def _check_level(level: float, where: str) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"{where}: level must be in (0, 1); got {level}")
    return level


def _z_of_level(level: float) -> Array:
    """`sqrt` of the `level` quantile of chi2 with one degree of freedom."""
    return ndtri(jnp.asarray(0.5 * (1.0 + level), dtype=jnp.float64))


class _End(NamedTuple):
    x: Array  # current point
    a: Array  # inside end of the bracket (h < 0)
    b: Array  # outside end (h >= 0, or the POI bound)
    pars: Array  # warm start of the next conditional fit
    n: Array
    done: Array
    ok: Array


def _interval_end(setup: _Setup, data, free, sigma, side, z, maxiter) -> tuple[Array, Array]:
    """One end of the interval: the root of `h(mu) = sqrt(t_mu) - z` on the `side`
    (-1 lower, +1 upper) of `mu_hat`, by Newton's method on `h` (nearly linear in `mu`;
    `dt/dmu = 2 dnll/dmu` at the conditional fit by the envelope theorem) safeguarded
    by bisection of the bracket `[mu_hat, bound]`. Returns `(end, converged)`."""
    poi = setup.poi_index
    model = setup.model
    mu_hat = free.pars[poi]
    bound = jnp.where(side < 0, setup.bounds[poi, 0], setup.bounds[poi, 1])
    guess_ok = jnp.isfinite(sigma) & (sigma > 0)
    x0 = jnp.where(guess_ok, mu_hat + side * z * sigma, 0.5 * (mu_hat + bound))
    x0 = jnp.where(side * (x0 - bound) >= 0, bound, x0)
    at_bound = side * (bound - mu_hat) <= 0
    init = _End(
        x=jnp.where(at_bound, bound, x0),
        a=mu_hat,
        b=bound,
        pars=free.pars,
        n=jnp.asarray(0),
        done=at_bound,
        ok=at_bound,
    )
    scale = 1.0 + jnp.abs(setup.bounds[poi, 1] - setup.bounds[poi, 0])
    xtol = 1e-10 * scale

    def cond(s: _End):
        return ~s.done & (s.n < maxiter)

    def body(s: _End):
        (fit,) = setup.batch(data, [s.x], inits=[s.pars])
        r = safe_sqrt(2.0 * (fit.nll - free.nll))
        h = r - z
        slope = jax.grad(_objective)(fit.pars, (model, data))[poi] / r
        stop_at_bound = (s.x == bound) & (h <= 0)
        inside = h < 0
        a = jnp.where(inside, s.x, s.a)
        b = jnp.where(inside, s.b, s.x)
        newton = s.x - h / slope
        valid = jnp.isfinite(newton) & (side * (newton - a) > 0) & (side * (b - newton) > 0)
        x_new = jnp.where(valid, newton, 0.5 * (a + b))
        small = (jnp.abs(h) < 1e-9) | (jnp.abs(x_new - s.x) <= xtol) | (jnp.abs(b - a) <= xtol)
        finished = stop_at_bound | small
        x_out = jnp.where(stop_at_bound, bound, jnp.where(jnp.abs(h) < 1e-9, s.x, x_new))
        return _End(
            x=jnp.where(finished, x_out, x_new),
            a=a,
            b=b,
            pars=jnp.where(fit.converged, fit.pars, s.pars),
            n=s.n + 1,
            done=finished | ~fit.converged,
            ok=finished & fit.converged,
        )

    s = jax.lax.while_loop(cond, body, init)
    return jnp.where(s.ok, s.x, jnp.nan), s.ok


def interval_core(
    setup: _Setup, data: Array, z: Array, maxiter: int = ROOT_MAXITER, sequential: bool = False
) -> PoiInterval:
    """:func:`poi_interval` on validated inputs (pure; jits and vmaps over `data`). The
    two ends are searched vmapped, or one after the other with `sequential`."""
    poi = setup.poi_index
    (free,) = setup.batch(data, [None])
    hessian = value_grad_hess(free.pars, (setup.model, data))[2]
    unit = jnp.zeros_like(free.pars).at[poi].set(1.0)
    variance = newton_solve_free(hessian, unit, floating(setup.model, setup.fixed))[poi]
    sigma = safe_sqrt(variance)
    sides = jnp.asarray([-1.0, 1.0])

    def end(side):
        return _interval_end(setup, data, free, sigma, side, z, maxiter)

    ends, ok = jax.lax.map(end, sides) if sequential else jax.vmap(end)(sides)
    return PoiInterval(
        lower=ends[0], upper=ends[1], mu_hat=free.pars[poi], converged=jnp.all(ok) & free.converged
    )


@entry_jit
def _interval_jit(z, model, data, init, bounds, *, fixed, tol, maxiter, root_maxiter):
    setup = _Setup.core(model, data, init, bounds, fixed, tol, maxiter)
    return interval_core(setup, data, z, root_maxiter)


def poi_interval(
    data: Float[ArrayLike, " n"],
    model: Any,
    level: float = DEFAULT_LEVEL,
    *,
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
    root_maxiter: int = ROOT_MAXITER,
) -> PoiInterval:
    """Two-sided profile-likelihood interval on the POI at confidence `level`.

    The ends are the values of `mu` either side of the best fit `mu_hat` where
    `t_mu = 2 (nll(mu, theta_hathat) - nll(mu_hat, theta_hat))` reaches the `level`
    quantile of a chi-square with one degree of freedom (Wilks; 1 at 68.27%, 3.84 at
    95%). Each end starts at `mu_hat -/+ z sigma` (`sigma` from the Hessian) and is
    found by Newton's method on `sqrt(t_mu) - z`, safeguarded by bisection of the
    bracket between `mu_hat` and the POI's bound; the conditional fits start from the
    previous one. Bounded POIs: `mu_hat` stays within the bounds (with the lower bound
    at 0 this is `t~_mu`), and an end at which `t_mu` stays below the threshold up to
    the bound is the bound itself. Pure and jittable inside (it vmaps over datasets,
    which is how :func:`coverage` runs it on pseudo-experiments).

    **Arguments:**

    - `data`: main-bin counts followed by auxdata, `(nbins + naux,)`.
    - `model`: a `diffana.hf.Model` (any model with the fit interface).
    - `level`: confidence level, default 0.6827 (one sigma).
    - `init`, `fixed`, `bounds`: as in :func:`diffana.infer.fit`.
    - `tol`, `maxiter`: passed to the fits; `root_maxiter`: iterations per end.

    **Returns:** a :class:`PoiInterval` (NaN ends and a
    :class:`diffana.ConvergenceWarning` where a fit or a root search failed).

    Example:

    >>> from diffana import hf, infer
    >>> model = hf.uncorrelated_background([50.0], [100.0], [10.0])
    >>> data = model.expected_data(model.init)  # Asimov data at mu = 1
    >>> res = infer.poi_interval(data, model)  # doctest: +SKIP
    >>> round(float(res.mu_hat), 6), bool(res.lower < 1.0 < res.upper)  # doctest: +SKIP
    (1.0, True)
    """
    where = "diffana.infer.poi_interval"
    level = _check_level(level, where)
    setup = _Setup(model, data, init, bounds, fixed, where, tol, maxiter)
    res = _interval_jit(
        _z_of_level(level), *setup.args(), root_maxiter=int(root_maxiter), **setup.kwargs()
    )
    return report_convergence(res.converged, model, where, res)


# --------------------------------------------------------------------------------------
# the FAIR Universe score


class FairUniverseScore(NamedTuple):
    """Score of a set of intervals in the FAIR Universe HiggsML Uncertainty Challenge.

    **Fields:** `score` (higher is better), `coverage` (fraction of intervals holding
    the true value), `mean_width` (mean of `|upper - lower|`), all `()`.
    """

    score: Float[Array, ""]
    coverage: Float[Array, ""]
    mean_width: Float[Array, ""]


def fair_universe_score(
    true_values: Float[ArrayLike, " n"],
    lower: Float[ArrayLike, " n"],
    upper: Float[ArrayLike, " n"],
    *,
    target: float = 0.6827,
    eps: float = 1e-3,
) -> FairUniverseScore:
    """The interval score of the FAIR Universe HiggsML Uncertainty Challenge.

    As published in the challenge's scoring program (`FAIR-Universe/HEP-Challenge`,
    `scoring_program/score.py`, `Quantiles_Score`): with `n` intervals, coverage `c`
    (the fraction with `lower <= true <= upper`) and mean width `w`,

    `score = -ln((w + eps) f(c))`, `sigma68 = sqrt(target (1 - target) / n)`,

    `f(c) = 1` for `|c - target| <= 2 sigma68`, `1 + ((target - 2 sigma68 - c) /
    sigma68)^4` below, `1 + ((c - target - 2 sigma68) / sigma68)^3` above.

    Narrow intervals score high as long as their coverage is within two binomial
    standard deviations of 68.27%; under-coverage is penalised harder than
    over-coverage.

    **Arguments:**

    - `true_values`: the true POI of each pseudo-experiment `(n,)` (or a scalar).
    - `lower`, `upper`: the intervals' ends, `(n,)`.
    - `target`: the nominal coverage (the challenge's 0.6827).
    - `eps`: the challenge's width offset, 1e-3.

    **Returns:** a :class:`FairUniverseScore`.

    Example:

    >>> from diffana import infer
    >>> s = infer.fair_universe_score(1.0, [0.5, 0.6, 1.2], [1.5, 1.4, 1.9])
    >>> round(float(s.coverage), 4), round(float(s.mean_width), 4)
    (0.6667, 0.8333)
    """
    lower = jnp.asarray(lower, dtype=jnp.float64)
    upper = jnp.asarray(upper, dtype=jnp.float64)
    truth = jnp.broadcast_to(jnp.asarray(true_values, dtype=jnp.float64), lower.shape)
    if lower.ndim != 1 or upper.shape != lower.shape:
        raise ValueError(
            "diffana.infer.fair_universe_score: lower and upper must be 1-d of the same "
            f"length; got shapes {lower.shape} and {upper.shape}"
        )
    n = lower.shape[0]
    c = jnp.mean(((truth >= lower) & (truth <= upper)).astype(jnp.float64))
    w = jnp.mean(jnp.abs(upper - lower))
    sigma68 = math.sqrt(target * (1.0 - target) / n)
    low_edge, high_edge = target - 2.0 * sigma68, target + 2.0 * sigma68
    f = jnp.where(
        c < low_edge,
        1.0 + jnp.abs((c - low_edge) / sigma68) ** 4,
        jnp.where(c > high_edge, 1.0 + jnp.abs((c - high_edge) / sigma68) ** 3, 1.0),
    )
    return FairUniverseScore(score=-jnp.log((w + eps) * f), coverage=c, mean_width=w)


# --------------------------------------------------------------------------------------
# coverage


class CoverageResult(NamedTuple):
    """Coverage of the profile-likelihood interval from pseudo-experiments.

    **Fields** (`k` true values, `ntoys` toys each):

    - `poi_values` `(k,)`: the true values.
    - `coverage` `(k,)`: fraction of the converged toys whose interval holds the true
      value; `coverage_error` `(k,)`: its binomial error `sqrt(c (1 - c) / n)`.
    - `mean_width` `(k,)`: mean `upper - lower`.
    - `score` `(k,)`: the FAIR Universe score of each true value's toys
      (:func:`fair_universe_score`); `overall_score` `()`: that of all toys pooled,
      as the challenge's overall score.
    - `lower`, `upper` `(k, ntoys)`: every interval; `converged` `(k, ntoys)` bool.
    """

    poi_values: Float[Array, " k"]
    coverage: Float[Array, " k"]
    coverage_error: Float[Array, " k"]
    mean_width: Float[Array, " k"]
    score: Float[Array, " k"]
    overall_score: Float[Array, ""]
    lower: Float[Array, "k ntoys"]
    upper: Float[Array, "k ntoys"]
    converged: Bool[Array, "k ntoys"]


@entry_jit
def _generating_pars(values, model, data, init, bounds, *, fixed, tol, maxiter):
    """Parameters the toys of each true value are drawn at: the conditional fits of
    `data` (or, without data, `init` with the POI set)."""
    setup = _Setup.core(model, data, init, bounds, fixed, tol, maxiter)
    if data is None:
        pars = jnp.broadcast_to(init, (values.shape[0], init.shape[0]))
        return pars.at[:, setup.poi_index].set(values), jnp.ones(values.shape, bool)
    fits = setup.batch(data, list(values))
    pars = jnp.stack([setup.start_from(f.pars) for f in fits])
    return pars, jnp.stack([f.converged for f in fits])


@eqx.filter_jit
def _coverage_chunk(
    offset, ntoys, key, gen, z, model, init, bounds, *, size, vmapped, fixed, tol, maxiter
):  # fmt: skip
    """Intervals of toys `offset + arange(size)`, `(size,)` each; toys from `ntoys` on
    are padding. `vmapped` (static): the toys' intervals are vmapped, else computed one
    after the other (both ends too), padded toys skipped."""
    setup = _Setup.core(model, None, init, bounds, fixed, tol, maxiter)
    idx = offset + jnp.arange(size, dtype=jnp.uint32)
    toys = _sample_indices(key, model, gen, idx)
    if vmapped:
        res = jax.vmap(lambda d: interval_core(setup, d, z))(toys)
        return res.lower, res.upper, res.converged

    def one_or_skip(args):
        d, use = args
        nan = jnp.full((), jnp.nan)

        def one():
            res = interval_core(setup, d, z, sequential=True)
            return res.lower, res.upper, res.converged

        return jax.lax.cond(use, one, lambda: (nan, nan, jnp.zeros((), bool)))

    return jax.lax.map(one_or_skip, (toys, idx < ntoys))


def coverage(
    model: Any,
    poi_values: Float[ArrayLike, " k"],
    ntoys: int,
    *,
    key: Array,
    level: float = DEFAULT_LEVEL,
    data: Float[ArrayLike, " n"] | None = None,
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    chunk_size: int = COVERAGE_CHUNK,
    progress: bool = False,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
) -> CoverageResult:
    """Coverage of the profile-likelihood interval (:func:`poi_interval`), from
    pseudo-experiments thrown at each true value of the POI.

    For each true value `mu`, `ntoys` pseudo-datasets (main bins and auxdata,
    :func:`diffana.infer.sample_data`) are drawn with the POI at `mu` and the nuisance
    parameters at `init` (their nominal values), or, when `data` is given, at their
    conditional maximum-likelihood estimates on `data` at `mu` (as the toy hypothesis
    test). Each toy's interval is computed in chunks of at most `chunk_size` toys (one
    compilation), vmapped, or, for models above 32 parameters on a CPU, one toy after
    the other in chunks of 32 toys, one thread per core at once (as the toys of
    :func:`diffana.infer.hypotest`). Works on any hard-evaluated analysis: a
    `diffana.hf.Model` (e.g. built from a bench analysis' histograms) and, optionally,
    its observed data.

    **Arguments:**

    - `model`: a `diffana.hf.Model`.
    - `poi_values`: the true values, `(k,)` (each within the POI's bounds).
    - `ntoys`: pseudo-experiments per true value.
    - `key`: a JAX random key, `jax.random.key(seed)`; true value `j` uses
      `jax.random.fold_in(key, j)`, and its toy `i` `fold_in` of that with `i`.
    - `level`: the intervals' confidence level, default 0.6827. The FAIR Universe score
      is computed against this level.
    - `data`: observed data to profile the nuisance parameters on, or `None`.
    - `init`, `fixed`, `bounds`: as in :func:`diffana.infer.fit`.
    - `chunk_size`: most toys per compiled call; `progress`: a progress bar on stderr.
    - `tol`, `maxiter`: passed to the fits.

    **Returns:** a :class:`CoverageResult`. Toys whose fits or root searches failed are
    left out of the coverage, with a :class:`diffana.ConvergenceWarning`.
    """
    where = "diffana.infer.coverage"
    level = _check_level(level, where)
    ntoys = check_ntoys(ntoys, where)
    key = check_key(key, where)
    chunk_size = check_chunk(chunk_size, where)
    check_sampleable(model, where)
    setup = _Setup(model, data, init, bounds, fixed, where, tol, maxiter)
    vmapped = vmapped_toys(len(setup.fixed))
    chunk, threads = chunk_length(ntoys, chunk_size, vmapped), toy_threads(vmapped, where)
    values = np.atleast_1d(np.asarray(poi_values, dtype=np.float64))
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"{where}: poi_values must be a non-empty 1-d array of finite numbers")
    low, high = (float(x) for x in np.asarray(setup.bounds)[setup.poi_index])
    outside = values[(values < low) | (values > high)]
    if outside.size:
        raise ValueError(
            f"{where}: the true value {float(outside[0])} lies outside the bounds "
            f"[{low}, {high}] of the parameter of interest"
        )
    options = setup.kwargs()
    gen, gen_ok = _generating_pars(jnp.asarray(values), *setup.args(), **options)
    gen = report_convergence(np.asarray(gen_ok), model, where, gen)
    z = _z_of_level(level)
    model_, _, init_, bounds_ = setup.args()
    n_total = jnp.asarray(ntoys, dtype=jnp.uint32)
    calls = []  # the chunks of every true value, in one queue for the threads
    for j in range(values.size):
        key_j = jax.random.fold_in(key, j)

        def one_chunk(offset, key_j=key_j, gen_j=gen[j]):
            return _coverage_chunk(
                offset, n_total, key_j, gen_j, z, model_, init_, bounds_, size=chunk,
                vmapped=vmapped, **options,
            )  # fmt: skip

        calls += chunk_calls(one_chunk, ntoys, chunk)
    per_value = len(calls) // values.size
    with progress_bar(progress, values.size * ntoys, "coverage toys") as advance:
        pieces = run_calls(
            calls, threads, lambda i: advance(min(chunk, ntoys - (i % per_value) * chunk))
        )
    lower, upper, ok = (
        np.stack(parts)
        for parts in zip(
            *(
                concatenate_chunks(pieces[j * per_value : (j + 1) * per_value], ntoys)
                for j in range(values.size)
            ),
            strict=True,
        )
    )
    if not ok.all():
        warnings.warn(
            f"{where}: {int((~ok).sum())} of {ok.size} pseudo-experiments of "
            f"{describe_model(model)} have no interval (a fit or a root search did not "
            "converge); they are left out of the coverage",
            ConvergenceWarning,
            stacklevel=2,
        )
    cov, err, width, score = [], [], [], []
    for j, mu in enumerate(values):
        sel = ok[j]
        s = fair_universe_score(mu, lower[j][sel], upper[j][sel], target=level)
        n = int(sel.sum())
        if n == 0:
            cov.append(math.nan)
            err.append(math.nan)
            width.append(math.nan)
            score.append(math.nan)
            continue
        cov.append(float(s.coverage))
        err.append(math.sqrt(max(float(s.coverage) * (1 - float(s.coverage)), 0.0) / n))
        width.append(float(s.mean_width))
        score.append(float(s.score))
    truth = np.broadcast_to(values[:, None], lower.shape)
    overall = fair_universe_score(truth[ok], lower[ok], upper[ok], target=level)
    return CoverageResult(
        poi_values=jnp.asarray(values),
        coverage=jnp.asarray(cov),
        coverage_error=jnp.asarray(err),
        mean_width=jnp.asarray(width),
        score=jnp.asarray(score),
        overall_score=overall.score,
        lower=jnp.asarray(lower),
        upper=jnp.asarray(upper),
        converged=jnp.asarray(ok),
    )
