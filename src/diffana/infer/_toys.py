"""Pseudo-experiments ("toys"): sampling a HistFactory model, and the toy-based
calculator of pyhf (test-statistic distributions, CLs+b, CLb, CLs, expected band).

Toys are drawn from the full probability model: Poisson counts in the main bins and the
auxiliary data of the constraints (Gaussian constraints: `Normal(theta, sigma)`;
Poisson constraints of `shapesys`: `Poisson(tau * gamma)`, pyhf's layout, where the
auxdata are the counts `tau`). Toy `i` of a hypothesis uses the key
`jax.random.fold_in(hypothesis_key, i)`, so the toys do not depend on how they are
split into chunks, and a fixed key gives the same numbers on the same machine.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr
from jaxtyping import Array, ArrayLike, Bool, Float

from diffana._config import entry_jit
from diffana.infer._mle import (
    DEFAULT_MAXITER,
    DEFAULT_TOL,
    _solve,
    as_poi_value,
    dynamic_options,
    floating,
    report_convergence,
)
from diffana.infer._solver import Start, _cholesky, _scaled_system
from diffana.infer._teststat import _Setup, check_poi_in_bounds, hypotest_returns

__all__ = ["ToyDistributions", "sample_data", "toy_distributions"]

DEFAULT_NTOYS = 2000
DEFAULT_CHUNK = 2048
# Accuracy of each toy fit's minimum NLL (`toy_tol`), and the largest one accepted. A
# toy's test statistic, twice a difference of two minima, is then good to about 1e-5
# away from the parameters' bounds (next to one, the quadratic model's minimum can be
# up to 5e-5 below the box's), far below what its comparison with the observed
# statistic can resolve; pyhf's toy fits (scipy's SLSQP) stop at 1e-6 in twice the
# NLL. It is also where the solver's convergence test meets its acceptance of small
# Newton steps without a decrease test (`_solver._DECREMENT_TRUSTED`): a Newton
# decrement of `TOY_TOL ** (2 / 3)` = 1e-4.
TOY_TOL = 1e-6
_TEST_STATS = ("qtilde", "q", "q0")
# Percentiles of the background-only distribution of the p-values behind the expected
# band, pyhf's order: +2, +1, 0, -1, -2 sigma (smallest CLs first).
_BAND_PERCENTILES = 100.0 * np.asarray(ndtr(jnp.asarray([-2.0, -1.0, 0.0, 1.0, 2.0])))


# --------------------------------------------------------------------------------------
# input checks


def check_key(key: Any, where: str) -> Array:
    """A single JAX PRNG key (`jax.random.key(seed)` or the legacy
    `jax.random.PRNGKey(seed)`), or a clear `TypeError`."""
    hint = "pass key=jax.random.key(seed) (an explicit JAX random key; there is no global seed)"
    if key is None:
        raise TypeError(f"{where}: toys need a random key; {hint}")
    if not isinstance(key, jax.Array):
        raise TypeError(
            f"{where}: 'key' must be a JAX random key; got {type(key).__name__}. {hint}"
        )
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise TypeError(
                f"{where}: 'key' must be a single key; got a key array of shape {key.shape}"
            )
        return key
    if key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    raise TypeError(
        f"{where}: 'key' must be a JAX random key; got an array of dtype {key.dtype} and "
        f"shape {key.shape}. {hint}"
    )


def check_ntoys(ntoys: Any, where: str) -> int:
    if isinstance(ntoys, bool) or not isinstance(ntoys, int | np.integer):
        raise TypeError(f"{where}: 'ntoys' must be an integer; got {ntoys!r}")
    if ntoys < 1:
        raise ValueError(f"{where}: 'ntoys' must be at least 1; got {ntoys}")
    return int(ntoys)


def check_toy_tol(toy_tol: Any, where: str) -> float:
    """`toy_tol` (a real number, or a 0-d array of one) as a float in `(0, TOY_TOL]`,
    or a clear error."""
    array = np.asarray(toy_tol) if not isinstance(toy_tol, bool | str | bytes) else None
    if array is None or array.shape != () or array.dtype.kind not in "iuf":
        raise TypeError(f"{where}: 'toy_tol' must be a number; got {toy_tol!r}")
    if not 0.0 < float(array) <= TOY_TOL:
        raise ValueError(
            f"{where}: 'toy_tol' (the accuracy of a toy fit's minimum NLL) must be in "
            f"(0, {TOY_TOL:g}]; got {toy_tol!r}"
        )
    return float(toy_tol)


def check_chunk(chunk_size: Any, where: str) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
        raise TypeError(f"{where}: 'chunk_size' must be an integer; got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"{where}: 'chunk_size' must be at least 1; got {chunk_size}")
    return int(chunk_size)


def check_sampleable(model: Any, where: str) -> None:
    for attr in ("structure", "gauss_sigma", "pois_factor", "expected_actualdata"):
        if not hasattr(model, attr):
            raise TypeError(
                f"{where}: pseudo-experiments need a diffana.hf.Model (its constraint "
                f"layout); got {type(model).__name__} without .{attr}"
            )


# --------------------------------------------------------------------------------------
# sampling


def _sample_one(key: Array, model: Any, pars: Array) -> Array:
    """One pseudo-dataset (main bins followed by auxdata) at `pars`.

    The main bins and the Poisson auxdata (shapesys) are drawn by one call of
    `jax.random.poisson`, whose rejection loops take seconds to compile: the toys' first
    call compiles them once, not twice (`benchmarks/bench_sampling.py`). (A
    rejection loop runs until every count of its call is accepted, so where the model
    has Poisson auxdata, a toy's main bins differ from those a call for them alone would
    draw; both are Poisson samples.)"""
    st = model.structure
    # split in three as when the Poisson auxdata had a key of their own: the Gaussian
    # auxdata keep theirs
    k_main, k_gauss = jax.random.split(key, 3)[:2]
    nbins = st.nbins
    rates = jnp.maximum(model.expected_actualdata(pars), 0.0)
    rate = pars[np.asarray(st.pois_par, dtype=np.int64)] * model.pois_factor
    counts = jax.random.poisson(k_main, jnp.concatenate([rates, jnp.maximum(rate, 0.0)]))
    counts = counts.astype(jnp.float64)
    centre = pars[np.asarray(st.gauss_par, dtype=np.int64)]
    gauss = centre + model.gauss_sigma * jax.random.normal(k_gauss, centre.shape, jnp.float64)
    aux = jnp.concatenate([gauss, counts[nbins:]])[np.asarray(st.aux_perm, dtype=np.int64)]
    return jnp.concatenate([counts[:nbins], aux])


def _sample_indices(key: Array, model: Any, pars: Array, indices: Array) -> Array:
    """Toys number `indices` of the stream `key` at `pars`, `(len(indices), n)`."""
    return jax.vmap(lambda i: _sample_one(jax.random.fold_in(key, i), model, pars))(indices)


def _sample_streams(keys: Array, model: Any, pars: Array, indices: Array) -> Array:
    """Toys number `indices` of each stream `keys[h]` at `pars[h]` `(h, npars)`,
    `(h, len(indices), n)`: :func:`_sample_indices` for each stream, as one `vmap` over
    all toys: the Poisson sampler's loops compile faster under one `vmap` than under two
    nested ones (`benchmarks/bench_sampling.py`)."""
    nstreams, m = pars.shape[0], indices.shape[0]
    stream = np.repeat(np.arange(nstreams), m)
    flat = jax.vmap(lambda h, i: _sample_one(jax.random.fold_in(keys[h], i), model, pars[h]))(
        stream, jnp.tile(indices, nstreams)
    )
    return flat.reshape(nstreams, m, -1)


@eqx.filter_jit
def _sample_jit(key, model, pars, *, ntoys):
    return _sample_indices(key, model, pars, jnp.arange(ntoys, dtype=jnp.uint32))


def sample_data(
    model: Any,
    pars: Float[ArrayLike, " npars"],
    ntoys: int,
    *,
    key: Array,
) -> Float[Array, "ntoys n"]:
    """Pseudo-datasets drawn from the model's full probability density at `pars`.

    Main bins are Poisson with the expected counts at `pars`; the auxiliary data are
    drawn from the constraint terms: `Normal(theta, sigma)` for Gaussian constraints
    (`sigma` is 1 for normsys/histosys, the relative uncertainty for staterror, the
    luminosity uncertainty for lumi) and `Poisson(tau * gamma)` for shapesys (the
    auxdata are the counts `tau`, pyhf's convention), as pyhf's
    `model.make_pdf(pars).sample((ntoys,))`.

    **Arguments:**

    - `model`: a `diffana.hf.Model`.
    - `pars`: the parameters the toys are drawn at, `(npars,)`.
    - `ntoys`: number of pseudo-datasets.
    - `key`: a JAX random key (`jax.random.key(seed)`); toy `i` uses
      `jax.random.fold_in(key, i)`.

    **Returns:** `(ntoys, nbins + nauxdata)` float64, each row a dataset for
    :func:`diffana.infer.fit` and friends.

    Example:

    >>> import jax
    >>> from diffana import hf, infer
    >>> model = hf.uncorrelated_background([5.0, 10.0], [50.0, 60.0], [5.0, 12.0])
    >>> toys = infer.sample_data(model, model.init, 3, key=jax.random.key(0))
    >>> toys.shape
    (3, 4)
    """
    where = "diffana.infer.sample_data"
    check_sampleable(model, where)
    key = check_key(key, where)
    ntoys = check_ntoys(ntoys, where)
    pars = jnp.asarray(pars, dtype=jnp.float64)
    if pars.shape != (int(model.npars),):
        raise ValueError(f"{where}: 'pars' must have shape ({model.npars},); got {pars.shape}")
    return _sample_jit(key, model, pars, ntoys=ntoys)


# --------------------------------------------------------------------------------------
# test statistics of toys


def statistic_from_fits(cond_nll, free_nll, mu_hat, mu, is_q0) -> Array:
    """pyhf's test statistic from the conditional and free fits (NLLs, `mu_hat`):
    `q0` where `is_q0` (an array, so one compilation serves every statistic), else
    `q_mu` (`q~_mu` with the POI bounded at zero)."""
    t = jnp.maximum(2.0 * (cond_nll - free_nll), 0.0)
    return jnp.where(is_q0, jnp.where(mu_hat < 0, 0.0, t), jnp.where(mu_hat > mu, 0.0, t))


# Largest number of parameters whose toy fits run vmapped on a CPU (every fit of a chunk
# in lock-step); larger models fit one toy after the other (`lax.map`). On sbottom (67
# parameters) the vmapped fits took 44-48 ms per toy against 7-8 ms one after the other:
# the batched closed-form Hessian and factorisations cost more per toy on a CPU than
# the unbatched ones, and every fit of a chunk runs as long as the slowest.
VMAP_MAX_PARS = 32


def vmapped_toys(npars: int) -> bool:
    """Whether the toy fits of a model with `npars` parameters run vmapped: small models
    on a CPU (`VMAP_MAX_PARS`), every model on an accelerator, where one fit after the
    other would launch each operation of each iteration once per toy, and a vmapped
    chunk launches it once for all its toys (not measured on a GPU yet)."""
    return npars <= VMAP_MAX_PARS or jax.default_backend() != "cpu"


THREADS_ENV_VAR = "DIFFANA_TOY_THREADS"


# Where Linux states the CPU quota of this process's control group (a container's limit):
# cgroup v2's `cpu.max` ("QUOTA PERIOD", or "max PERIOD" without a quota), then cgroup
# v1's two files.
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"
CGROUP_V1_QUOTA = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _read_fields(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return []


def cgroup_cpu_limit() -> float | None:
    """The CPUs this process's control group may use on average (its quota divided by
    its period, e.g. 1.5 for a container limited to one and a half CPUs), or None where
    no quota is set or none can be read."""
    fields = _read_fields(CGROUP_CPU_MAX)
    if len(fields) == 2 and fields[0] != "max":
        quota, period = fields
    else:
        quota_f, period_f = (_read_fields(path) for path in CGROUP_V1_QUOTA)
        if len(quota_f) != 1 or len(period_f) != 1:
            return None
        quota, period = quota_f[0], period_f[0]
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:  # v1 writes -1 where there is no quota
        return None
    return quota_us / period_us


def usable_cores() -> int:
    """CPU cores this process may keep busy: its affinity mask (where the system has one),
    at most its control group's CPU quota rounded up (a container limited to 2 CPUs on a
    64-core machine runs 2 threads, not 64 that the quota would stall in turn)."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(cores, 1)


def toy_threads(vmapped: bool, where: str) -> int:
    """Threads that run the chunks of toys at once: one per usable core where a chunk's
    toys are fitted one after the other (`vmapped` false, :func:`vmapped_toys`: large
    models on a CPU), since such a chunk runs on one core; `DIFFANA_TOY_THREADS`
    overrides the count. Vmapped chunks keep one thread: XLA's CPU runtime runs their
    large batched operations on its own thread pool, and two such programs executing at
    once from two threads can wait on each other forever (seen with batched Cholesky
    factorisations of 1024 matrices; jax 0.10.2)."""
    value = os.environ.get(THREADS_ENV_VAR, "").strip()
    threads = usable_cores()
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(
                f"{where}: the environment variable {THREADS_ENV_VAR} must be a positive "
                f"integer (threads that fit toys); got {value!r}"
            )
    return 1 if vmapped else threads


# Toys per compiled call where a chunk's toys are fitted one after the other: a fixed
# length (one compilation for every `ntoys`), short enough to share the toys out over
# the threads; the padded toys of a last chunk are skipped, not fitted.
SEQUENTIAL_CHUNK = 32


def chunk_length(ntoys: int, chunk_size: int, vmapped: bool) -> int:
    """Toys per compiled call: for vmapped fits `chunk_size`, or `ntoys` if fewer (a
    padded toy of a vmapped chunk costs as much as any other); for fits one after the
    other `SEQUENTIAL_CHUNK`, or `chunk_size` if smaller."""
    return min(chunk_size, ntoys) if vmapped else min(chunk_size, SEQUENTIAL_CHUNK)


def _floor(model: Any) -> Array | None:
    """`Model.relative_nll_floor` where the fits minimise `relative_nll`, else None."""
    floor = getattr(model, "relative_nll_floor", None)
    return floor() if floor is not None and hasattr(model, "relative_nll") else None


def toy_fit(model, data, x0, bounds, free, tol, maxiter, start=None):
    """One fit of a toy (not differentiated), a :class:`SolverResult`.

    It stops, not converged, where its objective falls below
    `Model.relative_nll_floor`: a Poisson fluctuation to zero in a bin whose expected
    count additive (histosys) variations can push below zero makes the likelihood
    unbounded there (pyhf's term of an empty bin is `lam`), and the fit would run to a
    corner of the parameter box, up to its iteration limit. Ordinary fits keep going
    to that corner, as pyhf's do. Large models' toy fits also stop each step at the first
    bound it meets (`corners`, :func:`diffana.infer._solver.minimize_bounded`): toys
    whose minimum sits in a corner of the box reach it in tens of iterations, not
    hundreds. Toys need only the minimum's value: no polishing step (`polish`); the fit
    returns the minimum of its last quadratic model, within about `tol` of the minimum
    away from the bounds, one Newton step before the test of ordinary fits. The toys of
    a test pass their `toy_tol` (default :data:`TOY_TOL`) as `tol`, which saves about
    one iteration per toy (9-12% of the iterations on the published sbottom and 1Lbb
    workspaces) against the ordinary fits' default of 1e-10. `start`: where the caller
    knows `x0` to be the minimum (:class:`_solver.Start`).
    """
    return _solve(
        model, data, x0, bounds, free, tol=tol, maxiter=maxiter, floor=_floor(model),
        corners=True, polish=False, start=start,
    )  # fmt: skip


def _fit_pair(model, data, cond_init, free, bounds, poi, tol, maxiter, is_q0):
    """The conditional fit of one toy (POI fixed, from `cond_init`), then the free fit
    starting at its result: `(cond_nll, free_nll, mu_hat, converged, iterations)`.

    Starting the free fit where the conditional one ended makes its minimum at most the
    conditional one (the test statistic is never negative by a local minimum), and it
    needs about half the iterations of a fit from the generating parameters (sbottom:
    4.7 against 10.0).

    Where the POI's gradient at the conditional minimum points to the side where the
    test statistic is zero by definition (`mu_hat > mu` for `q_mu` and `q~_mu`: a
    negative slope; `mu_hat < 0` for `q0`, tested at 0: a positive one), the free fit
    returns the conditional minimum at once, and the statistic is zero. That slope is
    the profile NLL's at the tested value (envelope theorem): the NLL falls from the
    conditional minimum towards that side, and the free fit from there would move to
    it. About half the signal-plus-background toys of a test are such
    (their fitted POI is above the tested value), and their free fits were 18% of the
    iterations of sbottom's toys drawn at mu = 1 (`benchmarks/bench_toy_fits.py`).

    Both fits are one solver loop run twice (`lax.scan`), so the compiled program
    holds the loop once."""
    cond_free = free.at[poi].set(False)
    n = cond_init.shape[0]
    none = Start(
        value=jnp.zeros((), cond_init.dtype),
        gradient=jnp.zeros(n, cond_init.dtype),
        hessian=jnp.zeros((n, n), cond_init.dtype),
        stop=jnp.zeros((), bool),
    )

    def phase(carry, use_free):
        x0, start = carry
        res = toy_fit(
            model, data, x0, bounds, jnp.where(use_free, free, cond_free), tol, maxiter, start
        )  # fmt: skip
        slope = res.gradient[poi]
        zero_stat = jnp.where(is_q0, slope > 0, slope < 0)
        after = Start(
            value=res.value,
            gradient=res.gradient,
            hessian=res.hessian,
            stop=res.converged & zero_stat & free[poi],
        )
        return (res.x, after), (res.value, res.converged, res.n_iter)

    (x, _), (nll, conv, n_iter) = jax.lax.scan(
        phase, (cond_init, none), jnp.asarray([False, True])
    )  # fmt: skip
    return nll[0], nll[1], x[poi], conv[0] & conv[1], n_iter[0] + n_iter[1]


def toy_statistics(
    setup: _Setup, data: Array, starts: Array, mu, is_q0, valid=None, vmapped=None
):  # fmt: skip
    """Test statistics of the datasets `data` `(m, n)`, fits starting at `starts`
    `(m, npars)`: `(stat (m,), converged (m,))`. Fixed parameters keep `setup.init`.
    The fits are vmapped, or run one after the other (`vmapped`, static; default
    :func:`vmapped_toys`). Toys where `valid` `(m,)` is false (padding) get zeros, and are
    not fitted where the fits run one after the other.

    Each toy's conditional fit starts at `starts` with the POI at `mu`, its free fit
    where the conditional one ended (:func:`_fit_pair`). Toys are fitted vmapped where
    :func:`vmapped_toys` says so, else one after the other (`lax.map`, each fit stopping
    when it converges); see :func:`toy_fit` for the floor and the steps that stop at a
    bound."""
    poi = setup.poi_index
    fixed = jnp.asarray(setup.fixed)
    starts = jnp.where(fixed, setup.init, starts)
    cond_init = starts.at[:, poi].set(mu)
    free = floating(setup.model, fixed)

    def one(d, x0):
        return _fit_pair(
            setup.model, d, x0, free, setup.bounds, poi, setup.tol, setup.maxiter, is_q0
        )[:4]  # fmt: skip

    if valid is None:
        valid = jnp.ones(data.shape[0], bool)
    if vmapped is None:
        vmapped = vmapped_toys(starts.shape[1])
    if vmapped:
        cond_nll, free_nll, mu_hat, conv = jax.vmap(one)(data, cond_init)
    else:

        def one_or_skip(args):
            d, x0, use = args
            skip = (jnp.zeros(()), jnp.zeros(()), mu, jnp.ones((), bool))
            return jax.lax.cond(use, lambda: one(d, x0), lambda: skip)

        cond_nll, free_nll, mu_hat, conv = jax.lax.map(one_or_skip, (data, cond_init, valid))
    stat = statistic_from_fits(cond_nll, free_nll, mu_hat, mu, is_q0)
    return jnp.where(valid, stat, 0.0), conv | ~valid


# Fraction of the linearised response to a toy's data that its conditional fit starts
# from (:func:`start_response`). The whole response overshoots where the likelihood is
# far from quadratic (low counts, normsys exponentials); half of it took the fewest
# iterations of 0.35, 0.5, 0.7 and 1 on the published sbottom and 1Lbb workspaces.
START_RESPONSE = 0.5


# Ridge added to the unit diagonal of the scaled Fisher information of the toys'
# starting points: regularises parameters without effect.
_FISHER_RIDGE = 1e-9


class StartResponse(NamedTuple):
    """Where the conditional fit of a toy of one hypothesis starts: `pars + offset +
    gain @ (data - centre)`, a fraction :data:`START_RESPONSE` of the linearised move of
    the conditional minimum from the generating parameters `pars` `(npars,)`.

    `centre` `(n,)`: the expected data at `pars`; `gain` `(npars, n)`; `offset`
    `(npars,)`: the move due to the POI's step to the tested value."""

    centre: Array
    gain: Array
    offset: Array


def start_response(
    model: Any, pars: Array, move: Array, poi: int, mu, fraction: float = START_RESPONSE
) -> StartResponse:
    """The linearised conditional minimum of toys drawn at `pars` `(npars,)`.

    With `J` the Jacobian of the expected data (main bins and auxdata) at `pars` and `W`
    the inverse variances of the data (`1 / rate` for Poisson terms, `1 / sigma^2` for
    Gaussian constraints), the expected Hessian of the objective is `F = J^T W J` (the
    Fisher information), and a toy `d` moves the minimum over the parameters `move` (the
    POI fixed at `mu`) by `F^-1 (J^T W (d - centre) - F[:, poi] (mu - pars[poi]))`: one
    Fisher-scoring step, which needs neither the toy's Hessian nor an evaluation at
    `pars`. The toys' own Newton steps from `pars` are often rejected (a step into a
    bin's negative rate, a normsys exponential); on the published sbottom and 1Lbb
    workspaces, starting at half this move (`fraction`) takes a fifth fewer iterations.

    Empty bins carry no weight; a parameter without effect is held by a ridge of
    :data:`_FISHER_RIDGE` on the scaled diagonal, and where `F` cannot be factorised
    the toys start at `pars`."""
    st = model.structure
    centre = model.expected_data(pars)
    jac = jax.jacfwd(model.expected_data)(pars)  # (n, npars)
    gauss = st.nbins + np.asarray(st.gauss_aux, dtype=np.int64)
    variance = centre.at[gauss].set(model.gauss_sigma**2)
    weight = jnp.where(variance > 0, 1.0 / jnp.where(variance > 0, variance, 1.0), 0.0)
    weighted = jac * weight[:, None]
    fisher = jac.T @ weighted
    poi_step = -fisher[:, poi : poi + 1] * (mu - pars[poi])
    moves = fraction * _solve_masked(fisher, jnp.concatenate([weighted.T, poi_step], axis=1), move)
    moves = jnp.where(jnp.all(jnp.isfinite(moves)), moves, 0.0)
    return StartResponse(centre=centre, gain=moves[:, :-1], offset=moves[:, -1])


def _solve_masked(a: Array, rhs: Array, move: Array) -> Array:
    """`a_mm^-1 rhs_m` `(npars, k)` over the rows `move`, zero elsewhere, for a positive
    semi-definite `a` `(npars, npars)`: the solver's scaled system
    (:func:`diffana.infer._solver._scaled_system`) with a ridge of :data:`_FISHER_RIDGE`;
    NaN where the factorisation fails."""
    d, scaled = _scaled_system(a, move)
    factor, _ = _cholesky(scaled + _FISHER_RIDGE * jnp.eye(a.shape[0], dtype=a.dtype))
    rhs = jnp.where(move[:, None], rhs, 0.0) / d[:, None]
    return (
        jnp.where(move[:, None], jax.scipy.linalg.cho_solve((factor, True), rhs), 0.0) / d[:, None]
    )


def response_starts(pars: Array, response: StartResponse, data: Array) -> Array:
    """Starting points `(m, npars)` of toys `data` `(m, n)` drawn at `pars`."""
    moves = (data - response.centre[None, :]) @ response.gain.T
    return (pars + response.offset)[None, :] + moves


@entry_jit
def _observed_jit(
    mu_null, mu_alt, stat_mu, is_q0, model, data, init, bounds, *, fixed, tol, maxiter
):
    """Generating parameters of both hypotheses, the observed test statistic, and the
    toys' starting points (:func:`start_response`, stacked over the hypotheses)."""
    setup = _Setup.core(model, data, init, bounds, fixed, tol, maxiter)
    null, alt, cond, free = setup.batch(data, [mu_null, mu_alt, stat_mu, None])
    stat = statistic_from_fits(cond.nll, free.nll, free.pars[setup.poi_index], stat_mu, is_q0)
    gen = jnp.stack([setup.start_from(null.pars), setup.start_from(alt.pars)])
    converged = null.converged & alt.converged & cond.converged & free.converged
    poi = setup.poi_index
    move = floating(model, jnp.asarray(fixed)).at[poi].set(False)
    responses = [start_response(model, g, move, poi, stat_mu) for g in gen]
    response = jax.tree.map(lambda *a: jnp.stack(a), *responses)
    return stat, gen, response, converged


@eqx.filter_jit
def _chunk_jit(
    offset, ntoys, keys, gen, response, stat_mu, is_q0, model, init, bounds, *, size,
    vmapped, fixed, tol, maxiter,
):  # fmt: skip
    """Test statistics of toys `offset + arange(size)` of both hypotheses, `(2, size)`;
    toys from `ntoys` on are padding. Each toy's conditional fit starts at
    :func:`response_starts`. `vmapped`: see :func:`toy_statistics`."""
    setup = _Setup.core(model, None, init, bounds, fixed, tol, maxiter)
    idx = offset + jnp.arange(size, dtype=jnp.uint32)
    data = _sample_streams(keys, model, gen, idx)  # (2, size, n)
    starts = jax.vmap(response_starts)(gen, response, data).reshape(2 * size, -1)
    valid = jnp.tile(idx < ntoys, 2)
    stat, conv = toy_statistics(
        setup, data.reshape(2 * size, -1), starts, stat_mu, is_q0, valid, vmapped
    )  # fmt: skip
    return stat.reshape(2, size), conv.reshape(2, size)


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (a no-op when not `enabled`); yields `advance(n)`."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.update(task, advance=n)


def run_calls(calls: Sequence[Callable[[], Any]], threads: int, done) -> list:
    """The results of `calls`, in their order; `done(i)` after result `i` is in, in the
    order the calls finish (a progress bar then advances with every finished call, not
    only when the oldest one is done).

    With `threads > 1` the calls run on that many threads at once: a compiled call
    releases Python's lock while it runs, and the first calls compile once between them.
    Each call sees the 64-bit mode of the calling thread (a `jax.enable_x64` context is
    per thread). An error or an interrupt cancels the calls not started yet."""
    if threads <= 1 or len(calls) <= 1:
        out = []
        for i, call in enumerate(calls):
            out.append(call())
            done(i)
        return out
    x64 = jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.float64

    def run(call):
        with jax.enable_x64(x64):
            return call()

    pool = ThreadPoolExecutor(max_workers=min(threads, len(calls)))
    try:
        futures = {pool.submit(run, call): i for i, call in enumerate(calls)}
        out: list = [None] * len(calls)
        for future in as_completed(futures):
            i = futures[future]
            out[i] = future.result()
            done(i)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return out


def chunk_calls(fn: Callable[[Array], Any], ntoys: int, chunk: int) -> list[Callable[[], Any]]:
    """`fn(offset)` (device results fetched to the host) for offsets `0, chunk, ...`
    below `ntoys`, as calls for :func:`run_calls`."""

    def call(offset: int):
        return jax.device_get(fn(jnp.asarray(offset, dtype=jnp.uint32)))

    return [functools.partial(call, offset) for offset in range(0, ntoys, chunk)]


def concatenate_chunks(pieces: Sequence[tuple], ntoys: int) -> list[np.ndarray]:
    """The outputs of the chunks of :func:`chunk_calls`, each concatenated along its
    last axis and trimmed to `ntoys` (the padding of the last chunk)."""
    return [np.concatenate(parts, axis=-1)[..., :ntoys] for parts in zip(*pieces, strict=True)]


def run_chunks(
    fn: Callable[[Array], tuple], ntoys: int, chunk: int, advance, threads: int = 1
) -> list[np.ndarray]:
    """Call `fn(offset)` for offsets `0, chunk, ...` below `ntoys` (one compiled
    function, a padded last chunk), on `threads` threads at once (:func:`run_calls`),
    and concatenate its outputs along their last axis, trimmed to `ntoys`. The outputs
    do not depend on `chunk` or `threads`: toy `i` is drawn from its own key."""
    calls = chunk_calls(fn, ntoys, chunk)
    pieces = run_calls(calls, threads, lambda i: advance(min(chunk, ntoys - i * chunk)))
    return concatenate_chunks(pieces, ntoys)


class ToyDistributions(NamedTuple):
    """Test statistics of pseudo-experiments under the two hypotheses (a PyTree).

    pyhf's naming: for `"qtilde"` and `"q"` the signal-plus-background toys are drawn
    at the tested `mu`, the background-only ones at `mu = 0`; for `"q0"` the first are
    drawn at the tested value (the null hypothesis of discovery, `mu = 0` as usually
    called) and the second at `mu = 1`. Nuisance parameters at their conditional
    maximum-likelihood estimates on the observed data for each hypothesis.

    **Fields:** `signal_plus_background` and `background_only` `(ntoys,)`, `observed`
    `()` (the test statistic of the observed data), `converged_sb` and `converged_b`
    `(ntoys,)` bool (both fits of each toy converged).
    """

    signal_plus_background: Float[Array, " ntoys"]
    background_only: Float[Array, " ntoys"]
    observed: Float[Array, ""]
    converged_sb: Bool[Array, " ntoys"]
    converged_b: Bool[Array, " ntoys"]


def _hypotheses(poi_value, test_stat):
    """`(mu of the sb toys, mu of the b toys, mu of the test statistic)`, pyhf's."""
    if test_stat == "q0":
        return poi_value, jnp.asarray(1.0, jnp.float64), jnp.asarray(0.0, jnp.float64)
    return poi_value, jnp.asarray(0.0, jnp.float64), poi_value


def toy_distributions(
    poi_value: Float[ArrayLike, ""],
    data: Float[ArrayLike, " n"],
    model: Any,
    ntoys: int = DEFAULT_NTOYS,
    *,
    key: Array,
    test_stat: str = "qtilde",
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: bool = False,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
    toy_tol: float = TOY_TOL,
) -> ToyDistributions:
    """Distributions of a test statistic from pseudo-experiments, as pyhf's
    `ToyCalculator.distributions`.

    For each hypothesis the nuisance parameters are fitted to `data` with the POI fixed
    at the hypothesis (pyhf's and the LHC Higgs combination's choice), `ntoys`
    pseudo-datasets are drawn there (:func:`sample_data`: main bins and auxdata), and
    each is fitted twice (POI fixed at `poi_value`, POI free). The fits run vmapped
    (small models) or one after the other (large ones) in chunks of at most
    `chunk_size` toys of each hypothesis: one compilation, bounded memory for any
    `ntoys`. On a CPU the chunks of a large model (32 toys each) run on one thread per
    core at once (:func:`toy_threads`; `DIFFANA_TOY_THREADS` sets the number).

    **Arguments:**

    - `poi_value`: tested value of the POI (must lie within its bounds).
    - `data`: observed main-bin counts followed by auxdata, `(nbins + naux,)`.
    - `model`: a `diffana.hf.Model`.
    - `ntoys`: toys per hypothesis (default 2000, pyhf's).
    - `key`: a JAX random key, `jax.random.key(seed)`; the two hypotheses use
      `jax.random.split(key)`.
    - `test_stat`: `"qtilde"` (default), `"q"` or `"q0"`.
    - `init`, `fixed`, `bounds`: as in :func:`diffana.infer.fit`.
    - `chunk_size`: most toys per hypothesis fitted in one compiled call.
    - `progress`: show a progress bar on stderr.
    - `tol`, `maxiter`: passed to the fits of the observed data; `maxiter` to the
      toys' fits too.
    - `toy_tol`: accuracy of each toy fit's minimum NLL, at most (and by default)
      1e-6 (:data:`TOY_TOL`): the toys' test statistics are good to about 1e-5 away
      from the parameters' bounds (1e-4 next to one), and a toy takes about one
      iteration less than with fits to 1e-10 (9-12% of the iterations on the
      published sbottom and 1Lbb workspaces).

    **Returns:** a :class:`ToyDistributions`. Non-converged toy fits raise a
    :class:`diffana.ConvergenceWarning` with their number (their test statistics are
    kept, as pyhf does).
    """
    where = "diffana.infer.toy_distributions"
    return _distributions(
        poi_value, data, model, ntoys, key, test_stat, init, fixed, bounds, chunk_size,
        progress, tol, maxiter, toy_tol, where,
    )  # fmt: skip


def _distributions(
    poi_value, data, model, ntoys, key, test_stat, init, fixed, bounds, chunk_size,
    progress, tol, maxiter, toy_tol, where,
) -> ToyDistributions:  # fmt: skip

    if test_stat not in _TEST_STATS:
        raise ValueError(f"{where}: test_stat must be one of {_TEST_STATS}; got {test_stat!r}")
    ntoys = check_ntoys(ntoys, where)
    key = check_key(key, where)
    chunk_size = check_chunk(chunk_size, where)
    toy_tol = check_toy_tol(toy_tol, where)
    check_sampleable(model, where)
    setup = _Setup(model, data, init, bounds, fixed, where, tol, maxiter)
    vmapped = vmapped_toys(len(setup.fixed))
    threads = toy_threads(vmapped, where)
    chunk = chunk_length(ntoys, chunk_size, vmapped)
    poi_value = as_poi_value(poi_value, where)
    check_poi_in_bounds(poi_value, setup, where)
    mu_null, mu_alt, stat_mu = _hypotheses(poi_value, test_stat)
    if test_stat == "q0":
        check_poi_in_bounds(mu_alt, setup, where)
    options = setup.kwargs()
    is_q0 = jnp.asarray(test_stat == "q0")
    observed, gen, response, converged = _observed_jit(
        mu_null, mu_alt, stat_mu, is_q0, *setup.args(), **options
    )
    observed, gen = report_convergence(converged, model, where, (observed, gen))
    keys = jax.random.split(key)
    model_, _, init_, bounds_ = setup.args()
    n_total = jnp.asarray(ntoys, dtype=jnp.uint32)
    toy_options = dynamic_options(setup.fixed, toy_tol, maxiter)

    def one_chunk(offset):
        return _chunk_jit(
            offset, n_total, keys, gen, response, stat_mu, is_q0, model_, init_, bounds_,
            size=chunk, vmapped=vmapped, **toy_options,
        )  # fmt: skip

    with progress_bar(progress, ntoys, "toys (both hypotheses)") as advance:
        stats, conv = run_chunks(one_chunk, ntoys, chunk, advance, threads)
    report_convergence(conv, model, where + " (toy fits)", None)
    return ToyDistributions(
        signal_plus_background=jnp.asarray(stats[0]),
        background_only=jnp.asarray(stats[1]),
        observed=observed,
        converged_sb=jnp.asarray(conv[0]),
        converged_b=jnp.asarray(conv[1]),
    )


# --------------------------------------------------------------------------------------
# p-values


def _tail(sorted_samples: Array, values: Array) -> Array:
    """Fraction of `sorted_samples` at or above each of `values` (pyhf's `>=`)."""
    n = sorted_samples.shape[0]
    below = jnp.searchsorted(sorted_samples, values, side="left")
    return (n - below).astype(jnp.float64) / n


@jax.jit
def _toy_pvalues(sb: Array, b: Array, observed: Array):
    """Observed `(CLs+b, CLb, CLs)` and the expected band `(CLs+b (5,), CLs (5,))`."""
    sb_sorted, b_sorted = jnp.sort(sb), jnp.sort(b)
    clsb, clb = _tail(sb_sorted, observed), _tail(b_sorted, observed)
    # p-values of every background-only toy, then their percentiles (pyhf's band)
    clsb_b, clb_b = _tail(sb_sorted, b), _tail(b_sorted, b)
    q = jnp.asarray(_BAND_PERCENTILES)
    band_clsb = jnp.percentile(clsb_b, q, method="linear")
    band_cls = jnp.percentile(clsb_b / clb_b, q, method="linear")
    return clsb, clb, clsb / clb, band_clsb, band_cls


def toy_hypotest(
    poi_value,
    data,
    model,
    test_stat,
    return_tail_probs,
    return_expected,
    return_expected_set,
    *,
    ntoys,
    key,
    init,
    fixed,
    bounds,
    chunk_size,
    progress,
    tol,
    maxiter,
    toy_tol,
):
    """:func:`diffana.infer.hypotest` with `calctype="toybased"` (see there)."""
    where = "diffana.infer.hypotest"
    dists = _distributions(
        poi_value, data, model, ntoys, key, test_stat, init, fixed, bounds, chunk_size,
        progress, tol, maxiter, toy_tol, where,
    )  # fmt: skip
    clsb, clb, cls, band_clsb, band_cls = _toy_pvalues(
        dists.signal_plus_background, dists.background_only, dists.observed
    )
    return hypotest_returns(
        test_stat, clsb, clb, cls, band_clsb, band_cls,
        return_tail_probs, return_expected, return_expected_set,
    )  # fmt: skip
