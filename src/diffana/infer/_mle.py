"""Maximum-likelihood fits of HistFactory models with implicit gradients."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from diffana._config import check_float64, entry_jit, under_vmap
from diffana.errors import ConvergenceWarning, DataError
from diffana.infer._solver import minimize_bounded, newton_solve_free

T = TypeVar("T")

__all__ = ["FitResult", "fit", "fixed_poi_fit"]

DEFAULT_TOL = 1e-10
DEFAULT_MAXITER = 200


class FitResult(NamedTuple):
    """Result of a maximum-likelihood fit (a PyTree: it passes through `jit` and `vmap`).

    **Fields:**

    - `pars`: best-fit parameters, `(npars,)`, in the model's (pyhf's) order.
    - `nll`: negative log-likelihood at `pars`, `()`.
    - `converged`: whether the fit converged, `()` bool. Always check it when the fit
      runs under `jit`/`vmap`, where no warning can be raised at trace time.
    - `n_iter`: Newton iterations used, `()` int.
    - `uncertainties`: `sqrt(diag(H^-1))` of the NLL Hessian over the floating
      parameters (zero for fixed ones), `(npars,)`, when requested with
      `return_uncertainties=True`; `None` otherwise (not computed, so not mistaken for
      zero uncertainties). A `None` field is an empty subtree: the result still passes
      through `jit`, `vmap` and `jax.tree_util`.
    """

    pars: Float[Array, " npars"]
    nll: Float[Array, ""]
    converged: Bool[Array, ""]
    n_iter: Int[Array, ""]
    uncertainties: Float[Array, " npars"] | None = None


# --------------------------------------------------------------------------------------
# helpers shared by the inference functions


def describe_model(model: Any) -> str:
    """A short, readable name for a model, used in warnings."""
    parts = [type(model).__name__]
    channels = getattr(model, "channels", None)
    if channels is not None:
        with contextlib.suppress(TypeError):
            parts.append(f"channels={list(channels)}")
    npars = getattr(model, "npars", None)
    if npars is not None:
        parts.append(f"npars={npars}")
    poi = getattr(model, "poi_name", None)
    if poi is not None:
        parts.append(f"poi={poi!r}")
    return parts[0] + "(" + ", ".join(parts[1:]) + ")"


def _is_traced(x: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jtu.tree_leaves(x))


def _rate_labels(model: Any) -> tuple[tuple[str, ...], tuple[int, ...]] | None:
    """`(channels, offsets)` naming a model's main bins, or `None` (not an hf model)."""
    channels = getattr(model, "channels", None)
    structure = getattr(model, "structure", None)
    offsets = getattr(structure, "channel_offsets", None)
    if channels is None or offsets is None:
        return None
    return tuple(channels), tuple(int(o) for o in np.asarray(offsets))


def _nonpositive_rates(nominal: Any, labels: Any) -> str:
    """Where the nominal rates (all samples summed) of `nominal` (samples x bins, with
    any leading batch axes) are not positive, as a phrase naming channel and bin; "" if
    nowhere (or where it cannot be said). Runs on the failure path only (on the host)."""
    if nominal is None or labels is None:
        return ""
    try:
        rates = np.asarray(nominal, dtype=float)
        rates = np.sum(rates, axis=-2).reshape(-1, rates.shape[-1])
    except (TypeError, ValueError):
        return ""
    bad_bins = np.flatnonzero(np.any(~(rates > 0), axis=0))
    if not bad_bins.size:
        return ""
    channels, offsets = labels
    where = []
    for i in bad_bins[:3]:
        c = int(np.searchsorted(offsets, i, side="right")) - 1
        value = rates[np.flatnonzero(~(rates[:, i] > 0))[0], i]
        where.append(f"channel {channels[c]!r} bin {i - offsets[c]} ({value:.4g})")
    more = f" and {bad_bins.size - 3} more" if bad_bins.size > 3 else ""
    return (
        f"the model's nominal expected rate (all samples summed) is not positive in "
        f"{', '.join(where)}{more}, so its Poisson term is not finite: a negative (or "
        "zero) yield?"
    )


def _warn_unconverged(
    converged: np.ndarray, what: str, name: str, nominal: Any = None, labels: Any = None
) -> None:
    converged = np.asarray(converged)
    if converged.all():
        return
    n_bad, n_all = int(np.size(converged) - np.count_nonzero(converged)), int(np.size(converged))
    count = "" if n_all == 1 else f" ({n_bad} of {n_all})"
    cause = _nonpositive_rates(nominal, labels)
    if cause:
        advice = f"The cause: {cause}"
    else:
        advice = (
            "Check the model (parameter bounds, inits, degenerate parameters) or raise `maxiter`."
        )
    warnings.warn(
        f"{what}: the fit of {name} did not converge{count}; its result is not a "
        f"maximum-likelihood estimate. {advice}",
        ConvergenceWarning,
        stacklevel=4,
    )


_RUNTIME_CHECKS = [True]


@contextlib.contextmanager
def runtime_convergence_checks(enabled: bool) -> Iterator[None]:
    """Switch the run-time convergence warnings of traced fits on or off.

    Under `jit`/`vmap`/`grad` a fit can only warn at run time through a host callback.
    diffana's sits in a branch that runs only when a fit did not converge, and is a
    `jax.pure_callback` (every output of the fit is tied to its result, so it is not
    pruned): a compiled function keeps JAX's fast dispatch path, which a callback with
    side effects would take it off, and a converged call never reaches the host.
    Functions *traced* inside ``runtime_convergence_checks(False)`` carry no callback at
    all (a compiled program without host calls, e.g. to export it, or to keep it in
    JAX's persistent compilation cache, which skips programs with host callbacks); their
    fits still report ``converged`` in their results, and eager (untraced) calls still
    warn. The
    setting is read at trace time: a function jitted before keeps its callbacks.

    **Arguments:**

    - `enabled`: `False` to trace without the callbacks, `True` (the default state) to
      trace with them.

    Example:

    >>> import jax
    >>> from diffana import hf, infer, losses
    >>> model = hf.simple_model([5.0, 10.0], [50.0, 60.0])
    >>> with infer.runtime_convergence_checks(False):
    ...     cls = jax.jit(losses.cls_loss)(model)  # traced and compiled here
    >>> round(float(cls), 4)
    0.1604
    """
    saved = _RUNTIME_CHECKS[0]
    _RUNTIME_CHECKS[0] = bool(enabled)
    try:
        yield
    finally:
        _RUNTIME_CHECKS[0] = saved


def _warn_and_pass(converged, nominal, what, name, labels) -> np.ndarray:
    _warn_unconverged(converged, what, name, nominal, labels)
    return np.ones((), dtype=np.float32)


def _runtime_check(what: str, name: str, labels: Any = None):
    """A traced check of the `converged` flags that warns at run time, at most once per
    call: the callback runs only if a flag is false, and under `vmap` the whole batch is
    checked at once (not one host call per item). It also takes the model's `nominal`
    yields (samples x bins, or a zero-size array) so that the warning can name a bin
    whose rate is not positive; they are only read by the callback, on the failure path.
    Returns a traced 1.0 (see :func:`report_convergence`)."""
    one = jax.ShapeDtypeStruct((), jnp.float32)

    def warn(ops):
        c, nominal = ops
        host = lambda c, n: _warn_and_pass(c, n, what, name, labels)  # noqa: E731
        return jax.pure_callback(host, one, c, nominal)

    @jax.custom_batching.custom_vmap
    def check(converged, nominal):
        return jax.lax.cond(
            jnp.all(converged),
            lambda ops: jnp.ones((), jnp.float32),
            warn,
            (converged, nominal),
        )

    @check.def_vmap
    def _check_batch(axis_size, in_batched, converged, nominal):
        # a batched `nominal` keeps its batch axis in front (the callback sums over
        # samples and looks at every row)
        return check(jnp.ravel(converged), nominal), False

    return check


def _tie(leaf: Any, one: Array) -> Any:
    """`leaf` unchanged in value, but computed from `one` (exactly 1)."""
    if not isinstance(leaf, jax.Array):
        return leaf
    if leaf.dtype == jnp.bool_:
        return leaf & (one > 0)
    if jnp.issubdtype(leaf.dtype, jnp.number):
        return leaf * one.astype(leaf.dtype)
    return leaf


def report_convergence(converged: Array, model: Any, what: str, result: T) -> T:
    """Warn with :class:`diffana.ConvergenceWarning` when `converged` is not all true;
    returns `result`.

    Outside tracing the warning is raised at once. Under `jit`/`vmap`/`grad` the flag
    is a tracer: the check is then deferred to run time with a host callback, so the
    warning is emitted when the compiled function executes. The callback sits in a
    `lax.cond` branch taken only when a fit did not converge, so a converged call does
    not pay for a trip to the host, and under `vmap` one check covers the whole batch.

    The callback is a `jax.pure_callback` that returns 1, and every leaf of the
    returned `result` is multiplied by that 1 (an exact no-op on its value and its
    derivatives). Whatever part of `result` a caller uses, for its value or for its
    gradient, the check is then needed to compute it and cannot be pruned. A callback
    with side effects (`jax.debug.callback`) needs no such tie, but its effect takes
    the compiled function off JAX's fast dispatch path: 70-155 us more per call on the
    CPUs measured ("The cost of run-time convergence warnings" in docs/performance.md).
    """
    if not _is_traced(converged) and np.asarray(converged).all():
        return result
    name = describe_model(model)
    labels = _rate_labels(model)
    nominal = getattr(model, "nominal", None) if labels is not None else None
    if _is_traced(converged):
        if _RUNTIME_CHECKS[0]:
            if not isinstance(nominal, jax.Array | np.ndarray):
                nominal, labels = jnp.zeros((0, 0)), None
            nominal = jax.lax.stop_gradient(jnp.asarray(nominal))
            one = _runtime_check(what, name, labels)(jnp.asarray(converged), nominal)
            return jtu.tree_map(lambda leaf: _tie(leaf, one), result)
        return result
    if not np.asarray(converged).all() and _is_traced(nominal):
        # a concrete result of a traced model (`jax.grad` outside `jit`): the values
        # of its yields, where the trace holds them
        nominal = jax.lax.stop_gradient(nominal)
        nominal = None if _is_traced(nominal) else nominal
    _warn_unconverged(np.asarray(converged), what, name, nominal, labels)
    return result


def check_argument_order(data: Any, model: Any, where: str) -> None:
    """Raise a clear error for the model handed before the data (the order of diffana
    before it followed pyhf: a function that requires data takes it before the model)."""
    if hasattr(data, "nll") and not hasattr(model, "nll"):
        raise TypeError(
            f"{where}: got the model where the data belong; pass the data before the "
            "model, as pyhf does (a function that requires data takes it first, "
            "optional data come after)"
        )


# Model types seen with the whole interface of `model_arrays` (an instance of an
# equinox module has every attribute its class declares; checking once per type saves
# 80 us of a warm fit).
_MODEL_TYPES: set[type] = set()


def model_arrays(model: Any, where: str) -> tuple[int, int | None]:
    """Validate the minimal model interface, returning `(npars, poi_index)`."""
    if type(model) in _MODEL_TYPES:
        return int(model.npars), getattr(model, "poi_index", None)
    for attr in ("nll", "init", "bounds", "fixed", "npars", "expected_data"):
        if not hasattr(model, attr):
            raise TypeError(
                f"{where}: 'model' must be a diffana.hf.Model (or provide .{attr}); "
                f"got {type(model).__name__} without .{attr}"
            )
    if isinstance(model, eqx.Module):
        _MODEL_TYPES.add(type(model))
    return int(model.npars), getattr(model, "poi_index", None)


def as_float64(x: ArrayLike) -> Array:
    """`x` as a float64 JAX array (not weakly typed); such an array (or tracer) is returned
    as it is, without the 10-30 us of a conversion that would change nothing (a warm fit
    of a published workspace converts its data, initial values and bounds every call)."""
    if isinstance(x, jax.Array) and x.dtype == jnp.float64 and not x.weak_type:
        return x
    return jnp.asarray(x, dtype=jnp.float64)


def as_data(model: Any, data: ArrayLike, where: str) -> Array:
    """Cast observed data (main bins followed by auxdata) to float64 and check length."""
    check_float64(data, "data", where)
    data = as_float64(data)
    nbins = getattr(model, "nbins", None)
    auxdata = getattr(model, "auxdata", None)
    if data.ndim != 1:
        raise ValueError(
            f"{where}: 'data' must be 1-d (main bins followed by auxdata); got shape "
            f"{data.shape}. Use jax.vmap for batches of datasets."
        )
    if nbins is not None and auxdata is not None:
        expected = int(nbins) + int(np.shape(auxdata)[0])
        if data.shape[0] != expected:
            raise ValueError(
                f"{where}: 'data' has {data.shape[0]} entries but the model expects "
                f"{expected} ({nbins} main bins followed by {expected - int(nbins)} auxdata);"
                " build it with diffana.hf.workspace_data(workspace, model)."
            )
    if not _is_traced(data):
        values = np.asarray(data)
        bad = ~np.isfinite(values)
        if nbins is not None:
            bad[: int(nbins)] |= values[: int(nbins)] < 0
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            part = f"main bin {i}" if nbins is None or i < int(nbins) else "auxdata"
            raise DataError(
                f"{where}: data[{i}] ({part}) is {values[i]}; expected finite values, "
                "counts >= 0 in the main bins"
            )
    return data


def as_poi_value(poi_value: ArrayLike, where: str, name: str = "poi_value") -> Array:
    """Cast a tested value of the POI to a float64 scalar (clear error otherwise)."""
    value = as_float64(poi_value)
    if value.ndim != 0:
        raise ValueError(
            f"{where}: '{name}' must be a scalar; got shape {value.shape} "
            "(use jax.vmap to scan several values)"
        )
    if not _is_traced(value) and not np.isfinite(float(value)):
        raise ValueError(f"{where}: '{name}' is {float(value)}; expected a finite number")
    return value


def resolve_init(model: Any, init: ArrayLike | None, npars: int, where: str) -> Array:
    if init is None:
        return as_float64(model.init)
    check_float64(init, "init", where)
    init = as_float64(init)
    if init.shape != (npars,):
        raise ValueError(f"{where}: 'init' must have shape ({npars},); got {init.shape}")
    return init


def resolve_bounds(model: Any, bounds: ArrayLike | None, npars: int, where: str) -> Array:
    if bounds is None:
        return as_float64(model.bounds)
    bounds = as_float64(bounds)
    if bounds.shape != (npars, 2):
        raise ValueError(f"{where}: 'bounds' must have shape ({npars}, 2); got {bounds.shape}")
    if not _is_traced(bounds):
        b = np.asarray(bounds)
        bad = np.isnan(b).any(axis=1) | (b[:, 0] > b[:, 1])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            names = getattr(model, "par_names", None)
            par = f" ({names[i]})" if names is not None and len(names) == npars else ""
            raise ValueError(
                f"{where}: bounds[{i}]{par} is {b[i].tolist()}; expected [low, high] with "
                "low <= high"
            )
    return bounds


def resolve_fixed(model: Any, fixed: Sequence[bool] | None, npars: int, where: str) -> np.ndarray:
    if fixed is None:
        fixed = model.fixed
    if _is_traced(fixed):
        raise TypeError(
            f"{where}: 'fixed' must be a concrete sequence of bools (it decides which "
            "parameters float), not a traced array"
        )
    fixed = np.asarray(fixed)
    if fixed.shape != (npars,) or fixed.dtype != np.bool_:
        raise ValueError(
            f"{where}: 'fixed' must be {npars} bools (one per parameter); got "
            f"shape {fixed.shape} of dtype {fixed.dtype}"
        )
    return fixed


def dynamic_options(fixed, tol: float, maxiter: int) -> dict[str, Array]:
    """Fit options as arrays, so that changing them does not recompile."""
    if not float(tol) > 0:
        raise ValueError(f"tol must be positive; got {tol}")
    if int(maxiter) < 1:
        raise ValueError(f"maxiter must be at least 1; got {maxiter}")
    fixed = np.asarray(fixed, dtype=bool)
    return dict(_option_arrays(fixed.tobytes(), fixed.shape, float(tol), int(maxiter)))


@functools.lru_cache(maxsize=64)
def _option_arrays(fixed: bytes, shape: tuple[int, ...], tol: float, maxiter: int):
    """The arrays of `dynamic_options`, made once per distinct setting: read-only NumPy
    arrays, which a jitted call takes without the cost of creating JAX arrays (three
    of them cost about 0.2 ms, a tenth of a warm fit of a published workspace), and
    which are safe to share between calls and traces."""
    arrays = (
        np.frombuffer(fixed, dtype=bool).reshape(shape).copy(),
        np.asarray(tol, dtype=np.float64),
        np.asarray(maxiter, dtype=np.int32),
    )
    for a in arrays:
        a.flags.writeable = False
    return tuple(zip(("fixed", "tol", "maxiter"), arrays, strict=True))


def floating(model: Any, fixed: Any) -> Array:
    """The parameters a fit moves: those not `fixed`, less those the model's numbers
    leave without uncertainty when they are traced (`Model.value_fixed`: the staterror
    or shapesys parameter of a bin without uncertainty, which concrete numbers fix)."""
    free = ~jnp.asarray(fixed)
    value_fixed = getattr(model, "value_fixed", None)
    if value_fixed is None:
        return free
    return free & jnp.broadcast_to(~value_fixed, free.shape)  # `fixed` may be a stack


def require_poi(poi_index: int | None, where: str) -> int:
    if poi_index is None:
        raise ValueError(
            f"{where}: the model has no parameter of interest; set the measurement's "
            "'poi' in the workspace"
        )
    return int(poi_index)


# --------------------------------------------------------------------------------------
# the fit with its implicit derivative


def _objective(x: Array, args: tuple[Any, Array]) -> Array:
    """The function fits minimise: the model's `relative_nll` (the NLL less a constant
    of the data, with the NLL's derivatives) where it has one, else its `nll`."""
    model, data = args
    relative = getattr(model, "relative_nll", None)
    return model.nll(x, data) if relative is None else relative(x, data)


def nll_offset(model: Any, data: Array) -> Array:
    """`model.nll - _objective` for `data` (zero for a model without `relative_nll`)."""
    offset = getattr(model, "nll_offset", None)
    return jnp.zeros((), dtype=data.dtype) if offset is None else offset(data)


# Largest number of parameters whose fits, run under `jax.vmap`, take their Hessian by
# automatic differentiation (forward over reverse) and run side by side in one vmapped
# solver loop (see `vectorised_fits`).
AUTODIFF_HESSIAN_MAX = 8


def vectorised_fits(npars: int) -> bool:
    """Whether fits of a model with `npars` parameters run element-wise: a small model
    (at most `AUTODIFF_HESSIAN_MAX` parameters) under `jax.vmap` (a batch of datasets or
    models, :func:`diffana._config.under_vmap`).

    - Then each Newton iteration takes the Hessian by automatic differentiation, and
      the fits of a test statistic run side by side in one vmapped loop: on the
      vmapped batches of 1000 of `benchmarks/bench_hypotest.py` this was 1.2-1.8x
      faster than the alternative, forced in its place (2026-12-04).
    - Otherwise the Hessian is assembled in closed form
      (`diffana.hf.Model.nll_derivatives`: a few matrix products, where forward over
      reverse costs a gradient per parameter) and the fits run one after the other
      (:func:`diffana.infer._teststat.fits_in_sequence`). A single hypothesis test of a
      small model then compiles in about a third of the time, and runs as fast or
      faster (docs/performance.md, "First calls and warm calls").

    Both reach the same minima; the choice is one of speed.
    """
    return npars <= AUTODIFF_HESSIAN_MAX and under_vmap()


def value_grad_hess(x: Array, args: tuple[Any, Array]) -> tuple[Array, Array, Array]:
    """:func:`_objective`, its gradient and its Hessian at `x` (see :func:`vectorised_fits`)."""
    model, data = args
    closed_form = getattr(model, "nll_derivatives", None)
    if closed_form is not None and not vectorised_fits(x.shape[0]):
        return closed_form(x, data)

    def grad_aux(x_):
        f, g = jax.value_and_grad(_objective)(x_, args)
        return g, (f, g)

    h, (f, g) = jax.jacfwd(grad_aux, has_aux=True)(x)
    return f, g, h


def _solve(
    model, data, x0, bounds, free, *, tol, maxiter, floor=None, corners=False, polish=True,
    start=None,
):  # fmt: skip
    """The solver on the model's objective; `floor`, `corners`, `polish`, `start`: see
    :func:`minimize_bounded`."""
    return minimize_bounded(
        value_grad_hess,
        x0,
        bounds[:, 0],
        bounds[:, 1],
        free,
        (model, data),
        tol=tol,
        maxiter=maxiter,
        floor=floor,
        corners=corners,
        polish=polish,
        start=start,
    )


@eqx.filter_custom_jvp
def _argmin(model, data, x0, bounds, free, tol, maxiter):
    """The fit: `(pars, nll, n_iter, converged)`, differentiable (see :func:`_fit_tangents`)."""
    res = _solve(model, data, x0, bounds, free, tol=tol, maxiter=maxiter)
    return res.x, res.value, res.n_iter, res.converged


def _zeros_for_none(primal, tangent):
    """Full tangents for the inexact-array leaves of `primal` (zeros where `None`)."""
    diff, static = eqx.partition(primal, eqx.is_inexact_array)
    if tangent is None:
        t = jtu.tree_map(jnp.zeros_like, diff)
    else:
        t = jtu.tree_map(
            lambda p, tp: None if p is None else (jnp.zeros_like(p) if tp is None else tp),
            diff,
            tangent,
            is_leaf=lambda v: v is None,
        )
    return diff, static, t


def _fit_tangents(primals, tangents, x, hessian):
    """Tangents `(t_pars, t_nll)` of a fit's result `x` with respect to its inputs.

    `primals` and `tangents` are `(model, data, x0, bounds, free, ...)`; `hessian` is
    the NLL's Hessian at `x` (or `None` to compute it).

    - Parameters that do not move follow their inputs: fixed ones their values in `x0`,
      those pinned at a bound the bound.
    - The moving ones follow from the implicit-function theorem on their stationarity,
      `H_mm dx_m = -(d/dt) grad_m nll(x_pinned + t dx_pinned, model + t dmodel, ...)`.
    - The NLL at the minimum follows from the envelope theorem: its gradient with
      respect to the moving parameters vanishes there, so its tangent is the partial
      one, `(d/dt) nll(x_pinned + t dx_pinned, model + t dmodel, data + t ddata)`, with
      no linear solve. Reverse-mode gradients of test statistics (differences of such
      minima) therefore never factorise a Hessian, and the Hessian and the solve above
      are dead code that `jit` removes unless the parameters themselves are
      differentiated. Both tangents are exact at the minimum and, being computed from
      `x`, differentiable again (e.g. by `jax.hessian` of a profiled NLL).
    """
    model, data, _, bounds, free = primals[:5]
    t_model, t_data, t_x0, t_bounds = tangents[:4]
    lower, upper = bounds[:, 0], bounds[:, 1]
    at_lower = free & (x <= lower)
    at_upper = free & (x >= upper) & ~at_lower
    moving = free & ~at_lower & ~at_upper

    zero = jnp.zeros_like(x)
    t_x0 = zero if t_x0 is None else t_x0
    t_lo = zero if t_bounds is None else t_bounds[:, 0]
    t_hi = zero if t_bounds is None else t_bounds[:, 1]
    t_pinned = jnp.where(~free, t_x0, jnp.where(at_lower, t_lo, jnp.where(at_upper, t_hi, 0.0)))

    m_diff, m_static, t_m = _zeros_for_none(model, t_model)
    t_d = jnp.zeros_like(data) if t_data is None else t_data

    def value_grad_nll(md, d, xx):
        return jax.value_and_grad(_objective)(xx, (eqx.combine(md, m_static), d))

    _, (t_nll, rhs) = jax.jvp(value_grad_nll, (m_diff, data, x), (t_m, t_d, t_pinned))
    if hessian is None:
        hessian = value_grad_hess(x, (model, data))[2]
    t_x = t_pinned + newton_solve_free(hessian, -rhs, moving)
    return t_x, t_nll


@_argmin.def_jvp
def _argmin_jvp(primals, tangents):
    model, data, x0, bounds, free, tol, maxiter = primals
    res = _solve(model, data, x0, bounds, free, tol=tol, maxiter=maxiter)
    t_x, t_nll = _fit_tangents(primals, tangents, res.x, res.hessian)
    return (res.x, res.value, res.n_iter, res.converged), (t_x, t_nll, None, None)


def _asimov_argmin_impl(model, data, pars, bounds, free, tol, maxiter):
    lower, upper = bounds[:, 0], bounds[:, 1]
    inside = jnp.all(jnp.where(free, (pars >= lower) & (pars <= upper), True))
    main = model.expected_data(pars, include_auxdata=False)
    applies = inside & jnp.all(main > 0)

    def closed_form(_):
        return pars, jnp.asarray(True), jnp.asarray(0, dtype=jnp.int32)

    def fit(_):
        res = _solve(model, data, pars, bounds, free, tol=tol, maxiter=maxiter)
        return res.x, res.converged, res.n_iter

    # Only the parameters pass through the branches; the NLL is evaluated after them.
    best, converged, n_iter = jax.lax.cond(applies, closed_form, fit, None)
    nll = _objective(best, (model, data))
    return best, nll, n_iter, converged & jnp.isfinite(nll)


@eqx.filter_custom_jvp
def asimov_argmin(model, data, pars, bounds, free, tol, maxiter):
    """The free fit of Asimov data generated at `pars`, in closed form where it applies:
    `(pars, nll, n_iter, converged)` as :func:`_argmin`.

    `data` must be `model.expected_data(pars, include_auxdata=True)`. When `pars` lies
    inside the bounds (fixed parameters aside) and every main bin's expected count
    there is positive, each term of the NLL - each Poisson bin at rate = count, each
    constraint at its centre - is at its minimum at `pars`, so `pars` is the global
    maximum-likelihood estimate exactly. Otherwise (a parameter outside its bounds, or
    an empty bin, whose term `rate` keeps falling if a parameter can push the rate below
    zero) the fit runs, starting at `pars`. The choice is made at run time; under `vmap`
    both branches run, the fit then converging at once where the closed form holds.

    The derivatives are those of any fit (:func:`_fit_tangents`), taken at the result,
    so that the branch itself is never differentiated at first order: a gradient does
    not carry the fit branch's intermediates out of it.
    """
    return _asimov_argmin_impl(model, data, pars, bounds, free, tol, maxiter)


@asimov_argmin.def_jvp
def _asimov_argmin_jvp(primals, tangents):
    best, nll, n_iter, converged = _asimov_argmin_impl(*primals)
    t_x, t_nll = _fit_tangents(primals, tangents, best, None)
    return (best, nll, n_iter, converged), (t_x, t_nll, None, None)


def _fit_impl(model, data, init, bounds, fixed, tol, maxiter, return_uncertainties):
    free = floating(model, fixed)
    pars, nll, n_iter, converged = _argmin(model, data, init, bounds, free, tol, maxiter)
    if return_uncertainties:
        h = value_grad_hess(pars, (model, data))[2]
        inv_diag = _inverse_diagonal(h, free)
        unc = jnp.where(free, jnp.sqrt(jnp.where(free & (inv_diag > 0), inv_diag, 0.0)), 0.0)
    else:
        unc = None
    return FitResult(pars=pars, nll=nll, converged=converged, n_iter=n_iter, uncertainties=unc)


@entry_jit
def _fit_jit(model, data, init, bounds, *, fixed, tol, maxiter, return_uncertainties):
    res = _fit_impl(model, data, init, bounds, fixed, tol, maxiter, return_uncertainties)
    # inside, fits carry the objective; users get the NLL itself
    return res._replace(nll=res.nll + nll_offset(model, data))


def fit_batch(model, data, inits, bounds, fixed_masks, tol, maxiter) -> FitResult:
    """Several fits of one model in one solver loop (one compilation): vmapped for a
    small model under `jax.vmap` (:func:`vectorised_fits`), else one after the other
    (`lax.map`).

    `data` is `(k, n)` or `(n,)` (shared), `inits` `(k, npars)`, `fixed_masks` a bool
    array `(k, npars)`. Returns a batched :class:`FitResult` (no uncertainties).
    """
    free = floating(model, fixed_masks)
    data_axis = 0 if data.ndim == 2 else None

    def one(d, x0, fr):
        pars, nll, n_iter, converged = _argmin(model, d, x0, bounds, fr, tol, maxiter)
        return FitResult(pars, nll, converged, n_iter, None)

    if not vectorised_fits(inits.shape[1]):
        # One fit after the other, each stopping when it converges and skipping the
        # factorisations it does not need (a vmapped batch runs every fit for as many
        # iterations as the slowest, with every factorisation).
        if data_axis is None:
            return jax.lax.map(lambda a: one(data, *a), (inits, free))
        return jax.lax.map(lambda a: one(*a), (data, inits, free))
    return jax.vmap(one, in_axes=(data_axis, 0, 0))(data, inits, free)


def _inverse_diagonal(h: Array, free: Array) -> Array:
    """Diagonal of the inverse of `h` restricted to the `free` block (zero elsewhere)."""
    eye = jnp.eye(h.shape[0], dtype=h.dtype)
    cols = jax.vmap(lambda e: newton_solve_free(h, e, free), in_axes=0)(eye)
    return jnp.where(free, jnp.diagonal(cols), 0.0)


def fit(
    data: Float[ArrayLike, " nbins_plus_naux"],
    model: Any,
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    *,
    return_uncertainties: bool = False,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
) -> FitResult:
    """Global maximum-likelihood fit: minimise `model.nll(pars, data)` within the bounds.

    A bounded, damped Newton method with the exact Hessian runs in a
    `jax.lax.while_loop`, so the fit jits and vmaps (e.g. over pseudo-datasets).
    Gradients of the result with respect to the model's arrays (yields, modifier
    data), `data`, `init` (values of fixed parameters) and `bounds` (parameters pinned
    at a bound) come from the implicit-function theorem at the optimum, not from
    unrolling the iterations; forward and reverse mode both work. Parameters pinned at a
    bound are treated as fixed there (they follow the bound, not the yields).

    **Arguments:**

    - `data`: observed main-bin counts followed by the auxiliary data, `(nbins + naux,)`.
    - `model`: a `diffana.hf.Model`.
    - `init`: starting values `(npars,)`; default `model.init` (pyhf's suggested init).
      Fixed parameters keep these values.
    - `fixed`: one bool per parameter (a concrete sequence); default `model.fixed`.
    - `bounds`: `(npars, 2)` lower/upper bounds; default `model.bounds`.
    - `return_uncertainties`: fill `FitResult.uncertainties` from the inverse Hessian
      (otherwise it is `None`).
    - `tol`: convergence threshold on the Newton decrement `g^T H^-1 g` (NLL units).
    - `maxiter`: iteration limit.

    **Returns:** a :class:`FitResult`. A fit that does not converge has
    `converged=False` and raises :class:`diffana.ConvergenceWarning` naming the model
    (at call time outside `jit`; at run time through a host callback inside it).

    Example:

    >>> import diffana.infer as infer
    >>> res = infer.fit(data, model)  # doctest: +SKIP
    >>> bool(res.converged)  # doctest: +SKIP
    True
    """
    where = "diffana.infer.fit"
    check_argument_order(data, model, where)
    npars, _ = model_arrays(model, where)
    data = as_data(model, data, where)
    init = resolve_init(model, init, npars, where)
    bounds = resolve_bounds(model, bounds, npars, where)
    fixed = resolve_fixed(model, fixed, npars, where)
    res = _fit_jit(
        model,
        data,
        init,
        bounds,
        **dynamic_options(fixed, tol, maxiter),
        return_uncertainties=return_uncertainties,
    )
    return report_convergence(res.converged, model, where, res)


def fixed_poi_fit(
    poi_value: Float[ArrayLike, ""],
    data: Float[ArrayLike, " nbins_plus_naux"],
    model: Any,
    init: Float[ArrayLike, " npars"] | None = None,
    fixed: Sequence[bool] | None = None,
    bounds: Float[ArrayLike, "npars 2"] | None = None,
    *,
    return_uncertainties: bool = False,
    tol: float = DEFAULT_TOL,
    maxiter: int = DEFAULT_MAXITER,
) -> FitResult:
    """Conditional fit with the parameter of interest fixed at `poi_value`.

    Same as :func:`fit` with `init[poi] = poi_value` and the POI fixed (pyhf's
    `fixed_poi_fit`); `poi_value` may be traced and is differentiated through.

    **Arguments:** `poi_value` (scalar), then `data`, `model` and the rest as
    :func:`fit`.

    **Returns:** a :class:`FitResult` whose `pars[model.poi_index] == poi_value`.
    """
    where = "diffana.infer.fixed_poi_fit"
    check_argument_order(data, model, where)
    res = _fixed_poi_fit(
        poi_value,
        model,
        data,
        init,
        fixed,
        bounds,
        where=where,
        tol=tol,
        maxiter=maxiter,
        return_uncertainties=return_uncertainties,
    )
    return report_convergence(res.converged, model, where, res)


def _fixed_poi_fit(
    poi_value, model, data, init, fixed, bounds, *, where, tol, maxiter, return_uncertainties=False
):
    npars, poi_index = model_arrays(model, where)
    poi_index = require_poi(poi_index, where)
    data = as_data(model, data, where)
    init = resolve_init(model, init, npars, where)
    bounds = resolve_bounds(model, bounds, npars, where)
    fixed = resolve_fixed(model, fixed, npars, where).copy()
    fixed[poi_index] = True
    init = init.at[poi_index].set(as_poi_value(poi_value, where))
    return _fit_jit(
        model,
        data,
        init,
        bounds,
        **dynamic_options(fixed, tol, maxiter),
        return_uncertainties=return_uncertainties,
    )
