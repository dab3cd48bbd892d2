"""Profile-likelihood test statistics and Asimov data, with pyhf's definitions."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from diffana._config import entry_jit
from diffana.infer._mle import (
    AUTODIFF_HESSIAN_MAX,
    DEFAULT_MAXITER,
    DEFAULT_TOL,
    FitResult,
    _argmin,
    _fit_impl,
    _fit_tangents,
    _zeros_for_none,
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
    vectorised_fits,
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
        return _start(self.init, jnp.asarray(self.fixed), pars)

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


# Fits run one after the other (`fits_in_sequence`), each a row of a schedule: on which
# data it runs (the observed or the Asimov data), where it starts (the initial values,
# the free fit's result - row 0 - or the Asimov-generating fit's), and whether the POI
# floats or is fixed at one of the `poi_values`.
OBSERVED, ASIMOV = 0, 1
AT_INIT, AT_FREE, AT_GEN = 0, 1, 2
FLOATING = -1


class SequenceFits(NamedTuple):
    """The fits of a schedule: `pars` `(k, npars)`, `nll` `(k,)` (the fit objective,
    `Model.relative_nll`), `converged` `(k,)`; `gen` `(npars,)` is the better
    Asimov-generating fit and `data_asimov` the Asimov data it generates."""

    pars: Array
    nll: Array
    converged: Array
    gen: Array | None
    data_asimov: Array | None


def better(nll: Array, pars: Array, a: int, b: int) -> tuple[Array, Array]:
    """The better of fits `a` and `b` of a sequence: `(nll, pars)` of the lower NLL
    (`a` on ties or NaN)."""
    take_b = nll[b] < nll[a]
    return jnp.where(take_b, nll[b], nll[a]), jnp.where(take_b, pars[b], pars[a])


def fits_in_sequence(
    setup: _Setup, schedule, poi_values: Array, generators: tuple[int, int] | None = None
) -> SequenceFits:
    """The fits of `schedule` one after the other, in one solver loop (`lax.scan`).

    How fits run outside a batch of small models (:func:`diffana.infer._mle.vectorised_fits`),
    where several conditional fits need different starts:

    - A model with hundreds of parameters can have more than one minimum at fixed POI
      (a theory-scale parameter of ATLAS's 3L resonance workspace has two, 0.02 apart
      in NLL), and the one reached from the initial values is then a matter of luck.
      Running a conditional fit from the initial values and again from the free fit's
      result and keeping the lower NLL gives the profile likelihood, not the path.
    - A fit on the Asimov data starts at the point that generated them, the better of
      the fits `generators` (rows of the schedule); a free fit there starts at its exact
      minimum where that lies inside the bounds (one Newton step confirms it).
    - Fits outside a batch run one after the other anyway, so a sequence costs no
      parallelism, and its one solver loop compiles once where separate batches each
      compile their own.

    Rows that need the free fit's or the generating fits' results must come after them;
    without `generators` there are no Asimov rows (and `gen`, `data_asimov` are `None`).

    A model of up to `AUTODIFF_HESSIAN_MAX` parameters skips the second starts (the
    conditional fits on the observed data from the free fit's result): their rows keep
    `nll = inf` and `converged = True`, so :func:`better` takes the first start, as a
    vmapped batch of such fits does (:meth:`_Setup.batch`). Its fits cost more in
    per-operation overhead than in arithmetic, and a few parameters rarely give a
    second minimum.
    """
    schedule = tuple(tuple(int(v) for v in row) for row in schedule)
    generators = None if generators is None else tuple(int(g) for g in generators)
    pars, nll, converged = _sequence(
        setup.model,
        setup.data,
        setup.init,
        setup.bounds,
        jnp.asarray(setup.fixed),
        jnp.asarray(poi_values, dtype=jnp.float64),
        setup.tol,
        setup.maxiter,
        schedule=schedule,
        generators=generators,
    )
    if generators is None:
        return SequenceFits(pars, nll, converged, None, None)
    gen, data_asimov = _asimov_of(setup.model, pars, nll, generators)
    return SequenceFits(pars, nll, converged, gen, data_asimov)


def _asimov_of(model, pars: Array, nll: Array, generators: tuple[int, int]):
    """The better of the generating fits and the Asimov data (with auxdata) it generates."""
    _, gen = better(nll, pars, *generators)
    return gen, model.expected_data(gen, include_auxdata=True)


def _second_start(row: tuple[int, int, int]) -> bool:
    on, start, poi_at = row
    return on == OBSERVED and start == AT_FREE and poi_at != FLOATING


def _start(init: Array, fixed: Array, pars: Array) -> Array:
    """:meth:`_Setup.start_from` on arrays: `pars` (no gradient), with `init` where
    `fixed` or where `pars` is not finite."""
    pars = jax.lax.stop_gradient(pars)
    return jnp.where(fixed | ~jnp.isfinite(pars), init, pars)


@eqx.filter_custom_jvp
def _sequence(model, data, init, bounds, fixed, poi_values, tol, maxiter, *, schedule, generators):
    """The fits of :func:`fits_in_sequence`: `(pars (k, npars), nll (k,), converged (k,))`.

    Differentiated outside the solver loop (:func:`_sequence_jvp`): a loop's derivative
    would run every fit's tangent in a loop of its own, backwards too.
    """
    npars = init.shape[0]
    poi = int(model.poi_index)
    is_poi = jnp.arange(npars) == poi
    rows = np.asarray(schedule, dtype=np.int32)
    k = rows.shape[0]

    def step(carry, xs):
        pars_done, nll_done, conv_done = carry
        i, (on, start, poi_at) = xs[0], xs[1:]
        d = data
        gen = init
        if generators is not None:
            gen, data_asimov = _asimov_of(model, pars_done, nll_done, generators)
            d = jnp.where(on == ASIMOV, data_asimov, data)
        starts = jnp.stack([init, _start(init, fixed, pars_done[0]), _start(init, fixed, gen)])
        pinned = poi_at != FLOATING
        x0 = jnp.where(is_poi & pinned, poi_values[jnp.maximum(poi_at, 0)], starts[start])
        free = floating(model, fixed | (is_poi & pinned))
        pars, nll, _, converged = _argmin(model, d, x0, bounds, free, tol, maxiter)
        carry = (pars_done.at[i].set(pars), nll_done.at[i].set(nll), conv_done.at[i].set(converged))
        return carry, None

    second_starts = npars > AUTODIFF_HESSIAN_MAX
    run = [i for i, row in enumerate(schedule) if second_starts or not _second_start(row)]
    carry = (
        jnp.broadcast_to(init, (k, npars)),
        jnp.full((k,), jnp.inf, dtype=jnp.float64),
        jnp.ones((k,), dtype=bool),
    )
    xs = jnp.asarray(np.concatenate([np.asarray(run)[:, None], rows[run]], axis=1), jnp.int32)
    (pars, nll, converged), _ = jax.lax.scan(step, carry, xs)
    return pars, nll, converged


def _expected_data_jvp(model, t_model, pars: Array, t_pars: Array) -> tuple[Array, Array]:
    """`model.expected_data(pars, include_auxdata=True)` and its tangent."""
    m_diff, m_static, t_m = _zeros_for_none(model, t_model)

    def expected(md, p):
        return eqx.combine(md, m_static).expected_data(p, include_auxdata=True)

    return jax.jvp(expected, (m_diff, pars), (t_m, t_pars))


@_sequence.def_jvp
def _sequence_jvp(primals, tangents, *, schedule, generators):
    """Tangents of the fits of the sequence by :func:`diffana.infer._mle._fit_tangents`,
    outside the solver loop, in two stages: the rows on the observed data, then those
    that need the Asimov-generating fit (its tangent comes from the first stage).
    Skipped second starts get zero tangents."""
    model, data, init, bounds, fixed, poi_values = primals[:6]
    t_model, t_data, t_init, t_bounds, _, t_poi = tangents[:6]
    pars, nll, converged = _sequence(*primals, schedule=schedule, generators=generators)
    npars = init.shape[0]
    is_poi = jnp.arange(npars) == int(model.poi_index)
    t_init = jnp.zeros_like(init) if t_init is None else t_init
    t_poi = jnp.zeros_like(poi_values) if t_poi is None else t_poi
    t_data = jnp.zeros_like(data) if t_data is None else t_data
    t_pars = [jnp.zeros_like(init)] * len(schedule)
    t_nll = [jnp.zeros_like(nll[0])] * len(schedule)

    def start_of(p):
        return _start(init, fixed, p), jnp.where(fixed | ~jnp.isfinite(p), t_init, 0.0)

    def inputs(row, d, t_d, gen):
        """A row's data, start and free parameters, with their tangents."""
        _, start, poi_at = row
        x0, t_x0 = (
            (init, t_init) if start == AT_INIT else start_of(pars[0] if start == AT_FREE else gen)
        )
        free_mask = fixed
        if poi_at != FLOATING:
            x0 = jnp.where(is_poi, poi_values[poi_at], x0)
            t_x0 = jnp.where(is_poi, t_poi[poi_at], t_x0)
            free_mask = fixed | is_poi
        return d, t_d, x0, t_x0, floating(model, free_mask)

    def one(d, t_d, x0, t_x0, free, x):
        return _fit_tangents((model, d, x0, bounds, free), (t_model, t_d, t_x0, t_bounds), x, None)

    def stage(rows, per_row):
        """Tangents of the fits `rows` into `t_pars` and `t_nll`: row by row for a small
        model (a tangent nobody uses then costs nothing once `jit` removes it, and small
        operations cost per operation), vmapped over the rows for a large one (one copy
        of the derivative code to compile)."""
        if npars <= AUTODIFF_HESSIAN_MAX:
            for i, inputs_i in zip(rows, per_row, strict=True):
                t_pars[i], t_nll[i] = one(*inputs_i, pars[i])
            return
        stacked = [jnp.stack(column) for column in zip(*per_row, strict=True)]
        tx, tn = jax.vmap(one)(*stacked, pars[np.asarray(rows)])
        for j, i in enumerate(rows):
            t_pars[i], t_nll[i] = tx[j], tn[j]

    skipped = {
        i for i, row in enumerate(schedule) if npars <= AUTODIFF_HESSIAN_MAX and _second_start(row)
    }
    late = {i for i, (on, start, _) in enumerate(schedule) if on == ASIMOV or start == AT_GEN}
    first = [i for i in range(len(schedule)) if i not in skipped | late]
    if first:
        stage(first, [inputs(schedule[i], data, t_data, None) for i in first])
    second = sorted(late - skipped)
    if second:
        take_b = nll[generators[1]] < nll[generators[0]]
        gen = jnp.where(take_b, pars[generators[1]], pars[generators[0]])
        t_gen = jnp.where(take_b, t_pars[generators[1]], t_pars[generators[0]])
        data_a, t_data_a = _expected_data_jvp(model, t_model, gen, t_gen)
        per_row = [
            inputs(
                schedule[i],
                *((data_a, t_data_a) if schedule[i][0] == ASIMOV else (data, t_data)),
                gen,
            )
            for i in second
        ]
        stage(second, per_row)
    return (pars, nll, converged), (jnp.stack(t_pars), jnp.stack(t_nll), None)


def check_poi_in_bounds(poi_value: Array, setup: _Setup, where: str) -> None:
    """Raise where a concrete tested POI value lies outside the POI's bounds (pyhf
    does too): the fit at that value would be clipped into them, and the test would
    silently answer another question."""
    if isinstance(poi_value, jax.core.Tracer) or isinstance(setup.bounds, jax.core.Tracer):
        return
    low, high = (float(x) for x in np.asarray(setup.bounds)[setup.poi_index])
    value = float(poi_value)
    if not low <= value <= high:
        names = getattr(setup.model, "par_names", None)
        name = repr(names[setup.poi_index]) if names is not None else "the POI"
        raise ValueError(
            f"{where}: the tested value {value} lies outside the bounds [{low}, {high}] of "
            f"the parameter of interest {name}; test a value inside them, or widen the "
            "bounds (argument `bounds`, or the measurement's parameter config)"
        )


def _tmu_like(setup: _Setup, mu, data: Array):
    """`2 (nll(mu, theta_hathat) - nll(mu_hat, theta_hat))`, clipped at zero."""
    if not vectorised_fits(setup.npars):
        # the conditional fit from two starts (see `fits_in_sequence`)
        seq = fits_in_sequence(_on_data(setup, data), _TMU_SCHEDULE, jnp.stack([mu]))
        take = seq.nll[2] < seq.nll[1]
        cond = FitResult(
            pars=jnp.where(take, seq.pars[2], seq.pars[1]),
            nll=jnp.where(take, seq.nll[2], seq.nll[1]),
            converged=seq.converged[1] & seq.converged[2],
            n_iter=jnp.asarray(0, dtype=jnp.int32),
            uncertainties=None,
        )
        free = FitResult(seq.pars[0], seq.nll[0], seq.converged[0], cond.n_iter, cond.uncertainties)
    else:
        cond, free = setup.batch(data, [mu, None])
    t = jnp.maximum(2.0 * (cond.nll - free.nll), 0.0)
    return t, cond, free


def _on_data(setup: _Setup, data: Array) -> _Setup:
    """`setup` with its data replaced."""
    other = copy.copy(setup)
    other.data = data
    return other


# The fits of a test statistic outside a batch of small models: free, conditional from the initial
# values, conditional from the free fit's result.
_TMU_SCHEDULE = ((OBSERVED, AT_INIT, FLOATING), (OBSERVED, AT_INIT, 0), (OBSERVED, AT_FREE, 0))


@entry_jit
def _tmu_fits_jit(mu, model, data, init, bounds, *, fixed, tol, maxiter):
    """The two fits behind every test statistic (one compilation for all of them)."""
    setup = _Setup.core(model, data, init, bounds, fixed, tol, maxiter)
    t, cond, free = _tmu_like(setup, mu, data)
    return t, cond.pars, free.pars, cond.converged & free.converged


@entry_jit
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


@entry_jit
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


def hypotest_returns(
    test_stat: str,
    clsb,
    clb,
    cls,
    band_clsb,
    band_cls,
    return_tail_probs: bool,
    return_expected: bool,
    return_expected_set: bool,
):
    """What `diffana.infer.hypotest` returns, as pyhf orders it: CLs (``q0``: p0), then
    with the flags the tail probabilities ``[CLs+b, CLb]`` (``q0``: ``[p0]``), the median
    expected value and the expected band (``q0``: of p0, otherwise of CLs)."""
    is_q0 = test_stat == "q0"
    out = [clsb if is_q0 else cls]
    if return_tail_probs:
        out.append(jnp.stack([clb]) if is_q0 else jnp.stack([clsb, clb]))
    band = band_clsb if is_q0 else band_cls
    if return_expected:
        out.append(band[2])
    if return_expected_set:
        out.append(band)
    return tuple(out) if len(out) > 1 else out[0]
