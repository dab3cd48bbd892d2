"""Asymptotic calculator (Wald approximation): CLs, expected bands, discovery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
from jax.scipy.special import log_ndtr, ndtr
from jaxtyping import Array, ArrayLike, Float

from diffana._config import entry_jit, require_float64
from diffana.infer._mle import (
    DEFAULT_MAXITER,
    DEFAULT_TOL,
    as_poi_value,
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
    better,
    check_poi_in_bounds,
    fits_in_sequence,
    hypotest_returns,
    safe_sqrt,
)

__all__ = ["DiscoveryResult", "discovery", "hypotest"]

_TEST_STATS = ("qtilde", "q", "q0")
_BASE_DISTS = ("normal", "clipped_normal")
_CALCTYPES = ("asymptotics", "toybased")
# Expected-band points in pyhf's order: (+2, +1, 0, -1, -2) sigma of the
# background-only test-statistic distribution (CLs from smallest to largest).
N_SIGMA = jnp.asarray([2.0, 1.0, 0.0, -1.0, -2.0])


class _Asymptotics(NamedTuple):
    t: Array  # unclipped 2 (nll_cond - nll_free) on the data
    mu_hat: Array
    t_asimov: Array  # the same on the Asimov data
    mu_hat_asimov: Array
    converged: Array


# pyhf's asymptotic calculator (`poi_values = (mu, asimov_mu)`), each conditional fit
# on the observed data from two starts; rows 2 and 4 generate the Asimov data.
_HYPOTEST_SCHEDULE = (
    (OBSERVED, AT_INIT, FLOATING),  # 0: free fit
    (OBSERVED, AT_INIT, 0),  # 1: conditional fit at mu
    (OBSERVED, AT_INIT, 1),  # 2: the Asimov-generating fit at asimov_mu
    (OBSERVED, AT_FREE, 0),  # 3: 1 again, from the free fit's result
    (OBSERVED, AT_FREE, 1),  # 4: 2 again, from the free fit's result
    (ASIMOV, AT_GEN, 0),  # 5: conditional fit on the Asimov data
    (ASIMOV, AT_GEN, FLOATING),  # 6: free fit on the Asimov data
)
_HYPOTEST_GENERATORS = (2, 4)


def _fits_in_sequence(setup: _Setup, mu, asimov_mu) -> _Asymptotics:
    """:func:`_fits` one fit after the other (:func:`fits_in_sequence`)."""
    poi = setup.poi_index
    seq = fits_in_sequence(
        setup, _HYPOTEST_SCHEDULE, jnp.stack([mu, asimov_mu]), _HYPOTEST_GENERATORS
    )
    nll_cond, _ = better(seq.nll, seq.pars, 1, 3)
    return _Asymptotics(
        t=jnp.maximum(2.0 * (nll_cond - seq.nll[0]), 0.0),
        mu_hat=seq.pars[0, poi],
        t_asimov=jnp.maximum(2.0 * (seq.nll[5] - seq.nll[6]), 0.0),
        mu_hat_asimov=seq.pars[6, poi],
        converged=jnp.all(seq.converged),
    )


def _fits(setup: _Setup, mu, asimov_mu) -> _Asymptotics:
    """The five fits of pyhf's asymptotic calculator.

    Conditional (at `mu`) and free fits on the data, the fit at `asimov_mu` generating
    the Asimov data, and conditional and free fits on the Asimov data, the last one in
    closed form where it applies (:meth:`_Setup.asimov_free_fit`). `mu` and `asimov_mu`
    are arrays, so one compilation serves every test statistic.
    """
    if not vectorised_fits(setup.npars):
        return _fits_in_sequence(setup, mu, asimov_mu)
    data = setup.data
    poi = setup.poi_index
    # Fits on the observed data (conditional, free, Asimov generation) in one solver loop.
    cond, free, gen = setup.batch(data, [mu, None, asimov_mu])
    data_asimov = setup.model.expected_data(gen.pars, include_auxdata=True)
    # The conditional fit on the Asimov data starts at the point that generated them.
    (cond_a,) = setup.batch(data_asimov, [mu], inits=[setup.start_from(gen.pars)])
    free_a = setup.asimov_free_fit(gen.pars, data_asimov)
    converged = cond.converged & free.converged & gen.converged
    converged = converged & cond_a.converged & free_a.converged
    return _Asymptotics(
        t=jnp.maximum(2.0 * (cond.nll - free.nll), 0.0),
        mu_hat=free.pars[poi],
        t_asimov=jnp.maximum(2.0 * (cond_a.nll - free_a.nll), 0.0),
        mu_hat_asimov=free_a.pars[poi],
        converged=converged,
    )


@entry_jit
def _fits_jit(mu, asimov_mu, model, data, init, bounds, *, fixed, tol, maxiter):
    setup = _Setup.core(model, data, init, bounds, fixed, tol, maxiter)
    return _fits(setup, mu, asimov_mu)


def _clip_statistics(fits: _Asymptotics, mu, test_stat: str) -> tuple[Array, Array]:
    """Observed and Asimov `q` from the fits (q0: zero for `mu_hat < 0`; qmu: zero for
    `mu_hat > mu`)."""
    if test_stat == "q0":
        q = jnp.where(fits.mu_hat < 0, 0.0, fits.t)
        q_a = jnp.where(fits.mu_hat_asimov < 0, 0.0, fits.t_asimov)
    else:
        q = jnp.where(fits.mu_hat > mu, 0.0, fits.t)
        q_a = jnp.where(fits.mu_hat_asimov > mu, 0.0, fits.t_asimov)
    return q, q_a


def _test_statistic_value(q: Array, q_a: Array, test_stat: str) -> Array:
    """pyhf's test statistic in `-mu_hat/sigma` space."""
    sqrt_q, sqrt_qa = safe_sqrt(q), safe_sqrt(q_a)
    if test_stat in ("q", "q0"):
        return sqrt_q - sqrt_qa
    # qtilde: beyond sqrt(q_A) the distribution is normal in (q - q_A) / (2 sqrt(q_A)).
    inner = (sqrt_q <= sqrt_qa) | (sqrt_qa <= 0)
    denominator = jnp.where(inner, 1.0, 2.0 * sqrt_qa)
    return jnp.where(inner, sqrt_q - sqrt_qa, (q - q_a) / denominator)


def _pvalues(t: Array, sqrt_qa: Array) -> tuple[Array, Array, Array]:
    """CLs+b, CLb and CLs of the test statistic value(s) `t` (log-space ratio)."""
    log_clsb = log_ndtr(-(t + sqrt_qa))
    log_clb = log_ndtr(-t)
    return jnp.exp(log_clsb), jnp.exp(log_clb), jnp.exp(log_clsb - log_clb)


@entry_jit
def _pvalues_jit(fits: _Asymptotics, mu, *, test_stat, calc_base_dist):
    q, q_a = _clip_statistics(fits, mu, test_stat)
    sqrt_qa = safe_sqrt(q_a)
    t_obs = _test_statistic_value(q, q_a, test_stat)
    clsb, clb, cls = _pvalues(t_obs, sqrt_qa)
    t_exp = N_SIGMA
    if calc_base_dist == "clipped_normal":
        t_exp = jnp.maximum(t_exp, -sqrt_qa)
    clsb_exp, _, cls_exp = _pvalues(t_exp, sqrt_qa)
    return clsb, clb, cls, clsb_exp, cls_exp


def _mu_values(poi_value, test_stat):
    if test_stat == "q0":
        return jnp.asarray(0.0, dtype=jnp.float64), jnp.asarray(1.0, dtype=jnp.float64)
    return jnp.asarray(poi_value, dtype=jnp.float64), jnp.asarray(0.0, dtype=jnp.float64)


def hypotest(
    poi_value: Float[ArrayLike, ""],
    data: Float[ArrayLike, " n"],
    model: Any,
    test_stat: str = "qtilde",
    return_tail_probs: bool = False,
    return_expected: bool = False,
    return_expected_set: bool = False,
    *,
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    calc_base_dist: str = "normal",
    calctype: str = "asymptotics",
    ntoys: int | None = None,
    key: Any = None,
    chunk_size: int | None = None,
    progress: bool = False,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
    toy_tol: float | None = None,
):
    """Hypothesis test of `mu = poi_value`, as `pyhf.infer.hypotest`: asymptotic
    (default) or from pseudo-experiments (`calctype="toybased"`).

    Runs pyhf's asymptotic calculator: the observed test statistic, Asimov data
    generated at `mu = 0` (`mu = 1` for `"q0"`) with the nuisance parameters profiled
    on `data`, the Asimov test statistic, and the p-values of arXiv:1007.1727 with
    CLs = CLs+b / CLb computed as a difference of log-tail probabilities.
    Differentiable (implicit gradients of the fits), jit- and vmap-able.

    **Arguments:**

    - `poi_value`: tested value of the parameter of interest (may be traced).
    - `data`: main-bin counts followed by auxdata, `(nbins + naux,)`.
    - `model`: a `diffana.hf.Model`.
    - `test_stat`: `"qtilde"` (default), `"q"` or `"q0"` (then the result is p0 and
      `poi_value` is ignored, as in pyhf).
    - `return_tail_probs`: also return `[CLs+b, CLb]` (`[CLb]` for `"q0"`), `(2,)`.
    - `return_expected`: also return the median expected CLs (CLs+b for `"q0"`): the
      Asimov data are generated at `mu = 0` with the nuisance parameters fitted to
      `data` (pyhf's definition). `diffana.losses.cls_loss` is the other common
      definition: nuisance parameters at their nominal values (no data needed), which
      is what an optimisation before unblinding uses; the two differ where the data
      pull the nuisance parameters.
    - `return_expected_set`: also return the expected band at `(+2, +1, 0, -1, -2)`
      sigma of the background-only distribution, `(5,)` (pyhf's order).
    - `init`, `fixed`, `bounds`: as in :func:`diffana.infer.fit`.
    - `calc_base_dist`: `"normal"` (default) or `"clipped_normal"`, as in pyhf
      (asymptotics only).
    - `calctype`: `"asymptotics"` (default) or `"toybased"`: pyhf's `ToyCalculator`
      (:func:`diffana.infer.toy_distributions` under both hypotheses; CLs+b and CLb
      are the fractions of toys whose test statistic is `>=` the observed one; the
      expected band holds the percentiles at `Phi(-2, ..., 2)` of the p-values of the
      background-only toys, pyhf's order). Not differentiable, not jittable.
    - `ntoys`: toys per hypothesis (toys only; default 2000, pyhf's).
    - `key`: a JAX random key, `jax.random.key(seed)` (toys only; required).
    - `chunk_size`: most toys per hypothesis fitted in one compiled call (toys only;
      default 2048). On a CPU, toys of models above 32 parameters are fitted in
      chunks of 32 toys, one thread per core at once (`DIFFANA_TOY_THREADS` threads if
      set).
    - `progress`: show a progress bar on stderr (toys only).
    - `tol`, `maxiter`: passed to the fits; with toys, `tol` to the fits of the observed
      data only (the toys' fits use `toy_tol`).
    - `toy_tol`: accuracy of each toy fit's minimum NLL (toys only; default and
      largest value 1e-6, :func:`diffana.infer.toy_distributions`).

    **Returns:** CLs `()` alone, or a tuple `(CLs, tail_probs, expected, expected_set)`
    holding the requested items in that order (pyhf's layout, with arrays instead of
    lists). Non-converged fits raise :class:`diffana.ConvergenceWarning`; with JAX's
    64-bit mode off it raises :class:`diffana.PrecisionError` (CLs needs float64).
    """
    where = "diffana.infer.hypotest"
    require_float64(where)
    if calctype not in _CALCTYPES:
        raise ValueError(f"{where}: calctype must be one of {_CALCTYPES}; got {calctype!r}")
    if calctype == "toybased":
        from diffana.infer._toys import DEFAULT_CHUNK, DEFAULT_NTOYS, TOY_TOL, toy_hypotest

        if calc_base_dist != "normal":
            raise ValueError(f"{where}: calc_base_dist applies to calctype='asymptotics' only")
        if test_stat not in _TEST_STATS:
            raise ValueError(f"{where}: test_stat must be one of {_TEST_STATS}; got {test_stat!r}")
        return toy_hypotest(
            poi_value,
            data,
            model,
            test_stat,
            return_tail_probs,
            return_expected,
            return_expected_set,
            ntoys=DEFAULT_NTOYS if ntoys is None else ntoys,
            key=key,
            init=init,
            fixed=fixed,
            bounds=bounds,
            chunk_size=DEFAULT_CHUNK if chunk_size is None else chunk_size,
            progress=progress,
            tol=tol,
            maxiter=maxiter,
            toy_tol=TOY_TOL if toy_tol is None else toy_tol,
        )
    if ntoys is not None or key is not None or chunk_size is not None or toy_tol is not None:
        raise ValueError(
            f"{where}: ntoys, key, chunk_size and toy_tol apply to calctype='toybased' only"
        )
    if test_stat not in _TEST_STATS:
        raise ValueError(f"{where}: test_stat must be one of {_TEST_STATS}; got {test_stat!r}")
    if calc_base_dist not in _BASE_DISTS:
        raise ValueError(
            f"{where}: calc_base_dist must be one of {_BASE_DISTS}; got {calc_base_dist!r}"
        )
    setup = _Setup(model, data, init, bounds, fixed, where, tol, maxiter)
    poi_value = as_poi_value(poi_value, where)
    if test_stat != "q0":
        check_poi_in_bounds(poi_value, setup, where)
    mu, asimov_mu = _mu_values(poi_value, test_stat)
    fits = _fits_jit(mu, asimov_mu, *setup.args(), **setup.kwargs())
    fits = report_convergence(fits.converged, model, where, fits)
    clsb, clb, cls, clsb_exp, cls_exp = _pvalues_jit(
        fits, mu, test_stat=test_stat, calc_base_dist=calc_base_dist
    )
    return hypotest_returns(
        test_stat, clsb, clb, cls, clsb_exp, cls_exp,
        return_tail_probs, return_expected, return_expected_set,
    )  # fmt: skip


class DiscoveryResult(NamedTuple):
    """Discovery significance of a signal (a PyTree).

    **Fields:** `p0` (observed p-value of the background-only hypothesis), `z0`
    (observed significance `sqrt(q0)`), `p0_expected` and `z0_expected` (median
    expected under signal plus background at `mu = 1`, from Asimov data whose nuisance
    parameters are profiled on the observed data, as pyhf does). All `()`.
    """

    p0: Float[Array, ""]
    z0: Float[Array, ""]
    p0_expected: Float[Array, ""]
    z0_expected: Float[Array, ""]


def discovery(
    data: Float[ArrayLike, " n"],
    model: Any,
    *,
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
) -> DiscoveryResult:
    """Observed and expected discovery p-value and significance from `q_0`.

    Equivalent to `pyhf.infer.hypotest(0.0, data, model, test_stat="q0",
    return_expected=True)` for the p-values, with `Z = sqrt(q0)` (and
    `Z_exp = sqrt(q0_A)`), which equals `Phi^-1(1 - p)` without its round-off.

    **Arguments:** `data` `(nbins + naux,)`, `model`; `init`, `fixed`, `bounds` as in
    :func:`diffana.infer.fit`.

    **Returns:** a :class:`DiscoveryResult`.
    """
    where = "diffana.infer.discovery"
    require_float64(where)
    setup = _Setup(model, data, init, bounds, fixed, where, tol, maxiter)
    mu, asimov_mu = _mu_values(0.0, "q0")
    fits = _fits_jit(mu, asimov_mu, *setup.args(), **setup.kwargs())
    fits = report_convergence(fits.converged, model, where, fits)
    return _discovery_from_fits(fits)


@entry_jit
def _discovery_from_fits(fits: _Asymptotics) -> DiscoveryResult:
    q0, q0_a = _clip_statistics(fits, 0.0, "q0")
    z0 = safe_sqrt(q0)
    z0_exp = safe_sqrt(q0_a)
    return DiscoveryResult(p0=ndtr(-z0), z0=z0, p0_expected=ndtr(-z0_exp), z0_expected=z0_exp)
