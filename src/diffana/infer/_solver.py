"""Bounded, damped Newton minimiser that jits and vmaps.

The minimiser works on a flat parameter vector with box constraints and a mask of
floating parameters. Each iteration solves the Newton system restricted to the
floating parameters that are not pinned at a bound (projected Newton), in coordinates
scaled by the Hessian's diagonal, with Levenberg-Marquardt damping that grows when a
step fails to decrease the objective and shrinks when steps succeed. Negative
curvature (an indefinite Hessian, common at the start of a fit to data with an excess)
is shifted to unit curvature in the scaled coordinates. The step is projected onto the
box. The fit has converged when the (lightly damped) Newton
decrement ``g^T H^-1 g`` over the floating, non-pinned parameters is below ``tol``;
one last step is then taken to polish the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

__all__ = ["SolverResult", "minimize_bounded", "newton_solve_free"]

# Relative damping always added to the scaled Hessian: makes exactly flat directions
# (a parameter without effect) solvable without affecting well-determined ones.
_LAMBDA_FLOOR = 1e-12
# Newton decrement below which the undamped Newton step is taken and accepted without
# a decrease test: the objective's rounding noise can hide decreases this small.
_DECREMENT_TRUSTED = 1e-4
_LAMBDA_FAIL = 1e12
# Damping after the first rejected step. The scaled Hessian has a unit diagonal, so its
# curvatures are of order one and a smaller damping would barely shorten the step.
_LAMBDA_REJECT = 1.0
# Relative size below which a negative eigenvalue of the scaled Hessian is round-off.
_NEGATIVE_EIGENVALUE = 1e-9


class SolverResult(NamedTuple):
    """Internal result of :func:`minimize_bounded`."""

    x: Float[Array, " n"]
    value: Float[Array, ""]
    hessian: Float[Array, "n n"]
    n_iter: Int[Array, ""]
    converged: Bool[Array, ""]


class _State(NamedTuple):
    x: Array  # accepted point
    f: Array
    g: Array
    h: Array
    lam: Array
    trial: Array  # next point to evaluate
    trial_is_final: Array  # the trial is the polishing step of a converged fit
    trial_trusted: Array  # the trial is a small Newton step, accepted without a test
    n_iter: Array
    converged: Array
    failed: Array


def _value_grad_hess(fun, x, args):
    def grad_aux(x_):
        f, g = jax.value_and_grad(fun)(x_, args)
        return g, (f, g)

    h, (f, g) = jax.jacfwd(grad_aux, has_aux=True)(x)
    return f, g, h


def _scales(h: Array, mask: Array) -> Array:
    """Per-parameter scales `sqrt(max(|H_ii|, max_j H_ij^2 / |H_jj|))` over the masked
    parameters, floored relative to the largest one.

    For a positive semi-definite `H` the second term never exceeds `|H_ii|` (its 2x2
    principal minors are non-negative), so the scales are `sqrt(|H_ii|)`. Where `H` is
    indefinite with a small diagonal entry - a histosys whose interpolation curves
    against an excess in the data, cancelling most of its constraint's curvature - the
    scaled off-diagonal entries stay within [-1, 1] instead of turning the coupling into
    a large negative eigenvalue and a step far outside the region where the quadratic
    model holds.
    """
    diag = jnp.abs(jnp.diagonal(h))
    diag = jnp.where(mask & jnp.isfinite(diag), diag, 0.0)
    both = mask[:, None] & mask[None, :] & (diag[None, :] > 0) & jnp.isfinite(h)
    coupling = jnp.where(both, h * h, 0.0) / jnp.where(diag > 0, diag, 1.0)[None, :]
    diag = jnp.maximum(diag, jnp.max(coupling, axis=1))
    floor = 1e-12 * jnp.max(diag)
    scale2 = jnp.maximum(diag, floor)
    return jnp.sqrt(jnp.where(scale2 > 0, scale2, 1.0))


class _Eigen(NamedTuple):
    scale: Array
    evals: Array
    evecs: Array


def _eigensystem(h: Array, mask: Array) -> _Eigen:
    """Eigendecomposition of the masked Hessian scaled to unit diagonal."""
    d = _scales(h, mask)
    both = mask[:, None] & mask[None, :]
    hs = jnp.where(both, h / (d[:, None] * d[None, :]), 0.0)
    hs = hs + jnp.diag(jnp.where(mask, 0.0, 1.0))
    evals, evecs = jnp.linalg.eigh(0.5 * (hs + hs.T))
    return _Eigen(d, evals, evecs)


def _solve_eigen(eig: _Eigen, rhs: Array, mask: Array, lam: Array | float) -> Array:
    top = jnp.max(jnp.abs(eig.evals))
    shifted = eig.evals + lam
    indefinite = jnp.min(shifted) < -_NEGATIVE_EIGENVALUE * top
    denom = jnp.maximum(shifted, _LAMBDA_FLOOR * top)
    rs = jnp.where(mask, rhs / eig.scale, 0.0)
    ys = eig.evecs @ ((eig.evecs.T @ rs) / denom)
    ys = jnp.where(indefinite, jnp.nan, ys)
    return jnp.where(mask, ys / eig.scale, 0.0)


def newton_solve_free(h: Array, rhs: Array, mask: Array, lam: Array | float = 0.0) -> Array:
    """Solve `(H + damping)_{mm} y_m = rhs_m` on the masked parameters, zero elsewhere.

    The system is scaled to unit diagonal and solved through its eigendecomposition;
    `lam` is added to the scaled eigenvalues. Directions flatter than `1e-12` of the
    stiffest one (parameters without effect, exact degeneracies, round-off) are
    regularised to that floor instead of blowing up. Linear in `rhs`. Returns NaN when
    the damped, masked Hessian has a clearly negative eigenvalue (not a minimum).
    """
    return _solve_eigen(_eigensystem(h, mask), rhs, mask, lam)


def minimize_bounded(
    fun: Callable[[Array, Any], Array],
    x0: Float[Array, " n"],
    lower: Float[Array, " n"],
    upper: Float[Array, " n"],
    free: Bool[Array, " n"],
    args: Any,
    *,
    tol: float,
    maxiter: int,
) -> SolverResult:
    """Minimise `fun(x, args)` over the box `[lower, upper]`, moving only `free` entries.

    Entries of `x0` that are not free are kept exactly; free entries start from `x0`
    clipped into the box.

    **Returns:** a :class:`SolverResult`; `converged` is `False` when `maxiter` was
    reached, when no decreasing step could be found, or when the objective is not
    finite.
    """
    x0 = jnp.where(free, jnp.clip(x0, lower, upper), x0)
    n = x0.shape[0]

    def propose(x, g, h, lam):
        """Projected Newton step from an accepted point: the undamped step when it is
        small (then also the convergence test), else the damped one."""
        pinned = ((x <= lower) & (g > 0)) | ((x >= upper) & (g < 0))
        move = free & ~pinned
        eig = _eigensystem(h, move)
        newton = _solve_eigen(eig, -g, move, 0.0)
        # Negative curvature (a saddle or a concave region, e.g. a histosys whose up and
        # down templates both lie below the nominal, or one whose interpolation curves
        # against an excess in the data): shift the damped system so that its most
        # negative eigenvalue becomes 1, the unit curvature of the scaled coordinates.
        lowest = jnp.min(eig.evals)
        negative = lowest < -_NEGATIVE_EIGENVALUE * jnp.max(jnp.abs(eig.evals))
        shift = jnp.where(negative, 1.0 - lowest, 0.0)
        damped = _solve_eigen(eig, -g, move, lam + shift)
        newton_ok = jnp.all(jnp.isfinite(newton))
        decrement = -jnp.dot(g, jnp.where(newton_ok, newton, 0.0))
        near = newton_ok & (decrement < _DECREMENT_TRUSTED)
        damped = jnp.where(jnp.all(jnp.isfinite(damped)), damped, 0.0)
        step = jnp.where(near, newton, damped)
        trial = jnp.where(free, jnp.clip(x + step, lower, upper), x)
        return trial, near & (decrement < tol), near

    # The first iteration evaluates x0 and accepts it (f = +inf before).
    state = _State(
        x=x0,
        f=jnp.asarray(jnp.inf, dtype=x0.dtype),
        g=jnp.zeros_like(x0),
        h=jnp.zeros((n, n), dtype=x0.dtype),
        lam=jnp.asarray(0.0, dtype=x0.dtype),
        trial=x0,
        trial_is_final=jnp.asarray(False),
        trial_trusted=jnp.asarray(True),
        n_iter=jnp.asarray(0, dtype=jnp.int32),
        converged=jnp.asarray(False),
        failed=jnp.asarray(False),
    )

    def cond(s: _State) -> Array:
        return ~s.converged & ~s.failed & (s.n_iter < maxiter)

    def body(s: _State) -> _State:
        first = s.n_iter == 0
        f_t, g_t, h_t = _value_grad_hess(fun, s.trial, args)
        finite_t = jnp.isfinite(f_t) & jnp.all(jnp.isfinite(g_t)) & jnp.all(jnp.isfinite(h_t))
        delta = s.trial - s.x
        predicted = jnp.dot(s.g, delta) + 0.5 * jnp.dot(delta, s.h @ delta)
        actual = f_t - s.f
        decreased = (predicted < 0) & (actual <= 1e-4 * predicted)
        accept = finite_t & (first | decreased | s.trial_trusted)
        ratio = actual / jnp.where(predicted < 0, predicted, -1.0)
        lam_accept = jnp.where(ratio > 0.5, 0.1 * s.lam, s.lam)
        lam_accept = jnp.where(lam_accept < 1e-8, 0.0, lam_accept)
        lam_reject = jnp.maximum(10.0 * s.lam, _LAMBDA_REJECT)
        lam = jnp.where(accept, lam_accept, lam_reject)
        x = jnp.where(accept, s.trial, s.x)
        f = jnp.where(accept, f_t, s.f)
        g = jnp.where(accept, g_t, s.g)
        h = jnp.where(accept, h_t, s.h)
        trial, final, trusted = propose(x, g, h, lam)
        return _State(
            x=x,
            f=f,
            g=g,
            h=h,
            lam=lam,
            trial=trial,
            trial_is_final=final,
            trial_trusted=trusted,
            n_iter=s.n_iter + 1,
            converged=accept & s.trial_is_final,
            failed=(first & ~finite_t) | (lam > _LAMBDA_FAIL),
        )

    s = jax.lax.while_loop(cond, body, state)
    return SolverResult(x=s.x, value=s.f, hessian=s.h, n_iter=s.n_iter, converged=s.converged)
