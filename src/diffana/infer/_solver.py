"""Bounded, damped Newton minimiser that jits and vmaps.

The minimiser works on a flat parameter vector with box constraints and a mask of
floating parameters. Each iteration solves the Newton system restricted to the
floating parameters that are not pinned at a bound (projected Newton), in coordinates
scaled by the Hessian's diagonal, with Levenberg-Marquardt damping that shrinks when
steps succeed. A step that fails to decrease the objective is first shortened along its
direction (one interpolated backtracking step); the damping grows only when the shorter
step fails too. Negative curvature (an indefinite Hessian, common at the start of a fit
to data with an excess) is shifted to at least unit curvature in the scaled
coordinates; at a saddle, where the gradient has no component along the negative
curvature, the step follows it instead. The step is clipped to the box. With
`corners` (pseudo-experiments of large models), the shift's margin shrinks while such
steps succeed (a long, slightly concave valley: a trust region that grows) and a step
that would cross a bound stops at the first one it meets. A fit stops as failed where
the objective falls below a `floor` the caller knows it cannot reach (the likelihood of
an empty bin whose rate went negative). The fit has converged when the (lightly
damped) Newton decrement ``g^T H^-1 g`` over the floating, non-pinned parameters is
below ``tol``; one last Newton step is then taken to polish the result. That step is
not evaluated inside the loop: the value, gradient and Hessian at the result are
computed once after it (unused ones cost nothing under `jit`), which saves an
iteration's bookkeeping per fit.

Fits of up to `UNROLLED_MAX` parameters factorise their Newton systems with an LDL^T
factorisation unrolled into element-wise operations: a vmapped batch of fits (a toy
study, a batch of training losses) is processed at once where LAPACK would factorise
one matrix per call, and a single fit saves LAPACK's call overhead
(docs/performance.md has the measurements). Larger fits use LAPACK's Cholesky
factorisation, skipping the systems an iteration does not need; a vmapped batch of fits
above `SHARPENED_BATCH_MIN` parameters takes the same steps as each fit alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

__all__ = ["SolverResult", "Start", "minimize_bounded", "newton_solve_free"]

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
# Kinds of trial point (`_State.trial_kind`).
# A trial of kind `_TRUSTED` or above is accepted without a decrease test.
_STEP, _SHORTENED, _TRUSTED, _FINAL = np.int32(0), np.int32(1), np.int32(2), np.int32(3)


class SolverResult(NamedTuple):
    """Internal result of :func:`minimize_bounded`: the minimum `x`, its `value` (without
    polishing, the minimum of the last quadratic model), the objective's `hessian` and
    `gradient` at `x`, the iterations and whether the fit converged."""

    x: Float[Array, " n"]
    value: Float[Array, ""]
    hessian: Float[Array, "n n"]
    n_iter: Int[Array, ""]
    converged: Bool[Array, ""]
    gradient: Float[Array, " n"]


class Start(NamedTuple):
    """A fit whose initial point the caller knows to be the minimum where `stop` (the
    result of another fit on the same objective, which the caller checked): the fit
    then returns that point at once, converged, with the minimum's `value` and the
    objective's `gradient` and `hessian` there, which the caller passes."""

    value: Float[Array, ""]
    gradient: Float[Array, " n"]
    hessian: Float[Array, "n n"]
    stop: Bool[Array, ""]


class _State(NamedTuple):
    # The accepted point and the objective's value, gradient and Hessian there, packed
    # into one vector (see `_pack`): one select per iteration accepts or rejects them.
    # Large systems keep the Hessian apart, in `hess` (`point` is then `2 n + 1` long).
    point: Array
    hess: Array
    lam: Array
    trial: Array  # next point to evaluate
    # What the trial is: _STEP, _TRUSTED (the initial point, or a small Newton step:
    # accepted without a test), _SHORTENED (a rejected step shortened along its
    # direction) or _FINAL (the polishing step after convergence: the last evaluation,
    # whose Hessian the fit returns). One integer where flags would cost operations.
    trial_kind: Array
    n_iter: Array
    converged: Array
    failed: Array
    # Margin of the step shifted past negative curvature (large systems): shrinks while
    # such steps succeed (a trust region growing along a long, slightly concave valley)
    # and returns to `_SHIFT_MARGIN` when a step fails.
    margin: Array
    shifted: Array  # the trial is a step shifted past negative curvature
    # Without polishing: the decrease the quadratic model predicts from the accepted
    # point to the minimum (half the Newton decrement), once converged.
    drop: Array


def _pack(x: Array, f: Array, g: Array, h: Array) -> tuple[Array, Array]:
    """`x`, `f`, `g` and `h` (n, (), n, (n, n)) as `(point, hess)`: one vector of
    `2 n + 1 + n^2` and an empty `hess` for small systems (up to `UNROLLED_MAX`), whose
    few element-wise operations cost more than their size; `2 n + 1` and `h` itself for
    larger ones, whose Hessian a concatenation would copy once more every iteration."""
    if x.shape[0] <= UNROLLED_MAX:
        return jnp.concatenate([x, f[None], g, jnp.ravel(h)]), jnp.zeros(0, h.dtype)
    return jnp.concatenate([x, f[None], g]), h


def _unpack(point: Array, hess: Array, n: int) -> tuple[Array, Array, Array, Array]:
    """Inverse of :func:`_pack`."""
    h = point[2 * n + 1 :].reshape(n, n) if n <= UNROLLED_MAX else hess
    return point[:n], point[n], point[n + 1 : 2 * n + 1], h


def _all_finite(point: Array, hess: Array) -> Array:
    """Whether a packed evaluation is finite; a separate Hessian is checked on its
    diagonal (a non-finite entry elsewhere makes the factorisation fail, and the step
    with it)."""
    finite = jnp.all(jnp.isfinite(point))
    return finite if hess.ndim < 2 else finite & jnp.all(jnp.isfinite(jnp.diagonal(hess)))


# Largest Hessian (number of parameters, fixed ones included) whose Newton systems the
# loop solves by the unrolled LDL^T factorisation; larger ones go through LAPACK's
# Cholesky factorisation.
UNROLLED_MAX = 8


def _diagonal(h: Array) -> Array:
    """The diagonal of a square `h`: for a small matrix (up to `UNROLLED_MAX`) assembled
    from its elements, static slices that fuse with their neighbours (`jnp.diagonal` is a
    gather, an operation of its own on a CPU)."""
    n = h.shape[0]
    if n > UNROLLED_MAX:
        return jnp.diagonal(h)
    return jnp.stack([h[i, i] for i in range(n)])


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
    diag = jnp.abs(_diagonal(h))
    diag = jnp.where(mask & jnp.isfinite(diag), diag, 0.0)
    both = mask[:, None] & mask[None, :] & (diag[None, :] > 0) & jnp.isfinite(h)
    coupling = jnp.where(both, h * h, 0.0) / jnp.where(diag > 0, diag, 1.0)[None, :]
    diag = jnp.maximum(diag, jnp.max(coupling, axis=1))
    floor = 1e-12 * jnp.max(diag)
    scale2 = jnp.maximum(diag, floor)
    return jnp.sqrt(jnp.where(scale2 > 0, scale2, 1.0))


def _scaled_system(h: Array, mask: Array, symmetrise: bool = True) -> tuple[Array, Array]:
    """Scales `d` and the masked Hessian scaled by them (unit diagonal where `H` is
    positive semi-definite), with the identity on the rows of unmasked parameters.

    `symmetrise` (static): average the result with its transpose, making it exactly
    symmetric (the Hessian of a model is symmetric to round-off). The Newton systems of
    a fit's loop skip it above `UNROLLED_MAX` parameters: LAPACK's factorisation reads
    the lower triangle alone, and the transposed pass cost 6 us of an iteration's 41 at
    67 parameters, 18 of 127 at 126 (`benchmarks/bench_newton_loop.py`)."""
    d = _scales(h, mask)
    both = mask[:, None] & mask[None, :]
    hs = jnp.where(both, h / (d[:, None] * d[None, :]), 0.0)
    hs = hs + jnp.diag(jnp.where(mask, 0.0, 1.0))
    if symmetrise or h.shape[0] <= UNROLLED_MAX:
        return d, 0.5 * (hs + hs.T)
    return d, hs


def _gershgorin(hs: Array) -> tuple[Array, Array]:
    """Lower and upper bounds on the eigenvalues of the symmetric matrix `hs` (of its
    symmetric part where `hs` is symmetric only to round-off)."""
    radius = jnp.sum(jnp.abs(hs), axis=1) - jnp.abs(_diagonal(hs))
    return jnp.min(_diagonal(hs) - radius), jnp.max(_diagonal(hs) + radius)


def _solve_unrolled(hs, rhs, shifts, floor, negative) -> tuple[Array, Array]:
    """`(hs + shift I) y = rhs` for each shift by an LDL^T factorisation without pivoting,
    unrolled over the (static, small) size: a few fused element-wise operations per
    column, which vectorise over a `vmap` batch (LAPACK factorises one matrix per call).

    The shifts include the regularisation `floor` (see :func:`_solve_with`); pivots
    below it (round-off) are raised to it. `ok` is false where a pivot is below
    `-negative`, which by Sylvester's law of inertia means the shifted matrix has a
    negative eigenvalue.
    """
    n = hs.shape[-1]
    idx = jnp.arange(n)
    a = hs[None, :, :] + shifts[:, None, None] * jnp.eye(n, dtype=hs.dtype)[None, :, :]
    z = jnp.broadcast_to(rhs, (shifts.shape[0], n))
    ok = jnp.ones(shifts.shape, dtype=bool)
    cols, pivots = [], []
    for j in range(n):
        pivot = a[:, j, j]
        ok = ok & (pivot >= -negative)
        pivot = jnp.maximum(pivot, floor)
        col = jnp.where(idx > j, a[:, :, j] / pivot[:, None], 0.0)
        a = a - pivot[:, None, None] * col[:, :, None] * col[:, None, :]
        z = z - col * z[:, j : j + 1]
        cols.append(col)
        pivots.append(pivot)
    # Back substitution, column by column: L^T y = D^-1 z (row j of L holds L_ji).
    lower = jnp.stack(cols, axis=2)
    w = z / jnp.stack(pivots, axis=1)
    for j in reversed(range(n)):
        w = w - lower[:, j, :] * w[:, j : j + 1]
    return w, ok


def _cholesky(a: Array) -> tuple[Array, Array]:
    """The lower Cholesky factor of the symmetric `a` and whether it exists (`a` is
    positive definite); the factor is NaN where it does not.

    Only the lower triangle of `a` is read (the scaled systems of a fit's loop above
    `UNROLLED_MAX` parameters are not symmetrised, :func:`_scaled_system`), so the
    factorisation skips `jnp.linalg.cholesky`'s symmetrisation, and a
    failed factorisation is seen on the diagonal: two passes over a published model's
    Hessian fewer per factorisation (each about a third of a millisecond at 625
    parameters)."""
    factor = jax.lax.linalg.cholesky(a, symmetrize_input=False)
    return factor, jnp.all(jnp.isfinite(jnp.diagonal(factor)))


def _cholesky_solve(hs: Array, rhs: Array, shift: Array) -> tuple[Array, Array]:
    """`(hs + shift I) y = rhs` by a Cholesky factorisation, and whether it exists (the
    shifted matrix is positive definite); `y` is NaN where it does not."""
    a = hs + shift * jnp.eye(hs.shape[-1], dtype=hs.dtype)
    factor, ok = _cholesky(a)
    y = jax.scipy.linalg.cho_solve((factor, True), rhs)
    return y, ok


def _solve_cholesky(hs, rhs, shifts, floor, negative) -> tuple[Array, Array]:
    """As :func:`_solve_unrolled`, by LAPACK's Cholesky factorisation: `ok` is false where
    the shifted matrix (the `floor` included in `shifts`) is not positive definite."""
    del floor, negative
    return jax.vmap(lambda s: _cholesky_solve(hs, rhs, s))(shifts)


# Bisection steps that bound the lowest eigenvalue of an indefinite Newton system by
# Cholesky factorisations (see :func:`_solve_newton_cholesky`).
_SHIFT_BISECTIONS = 6
# Lowest curvature of a system shifted past negative curvature, in the scaled
# coordinates (unit diagonal) of large systems.
_SHIFT_MARGIN = 0.3
# Smallest number of parameters above which a vmapped batch of fits sharpens its
# shifted step as a single fit does (:func:`_solve_newton_cholesky`, every
# factorisation run); smaller batches (toys of small models on a CPU, training losses)
# keep Gershgorin's bound alone, which costs six factorisations less per iteration.
# On sbottom (67 parameters) a batched free fit with the bound alone took 18 iterations
# of short steps and stopped 0.16 higher in NLL than the same fit alone (9 iterations).
SHARPENED_BATCH_MIN = 32


def _positive_definite(hs: Array, shift: Array) -> Array:
    return _cholesky(hs + shift * jnp.eye(hs.shape[-1], dtype=hs.dtype))[1]


def _solve_newton_cholesky(hs, rhs, shifts, floor, negative) -> tuple[Array, Array]:
    """:func:`_solve_cholesky` for the three systems of a Newton iteration
    (:func:`minimize_bounded`: the Newton step, the damped one and the one shifted past
    negative curvature), skipping the factorisations whose results are not used: the
    damped system is the Newton system when the damping is zero (after successful
    steps), and the shifted one matters only where the Newton system is not positive
    definite (its solution is NaN and `ok` false otherwise). A factorisation of a
    published model's Hessian (hundreds of parameters) is the largest cost of an
    iteration.

    The shifted system's shift is sharpened: `shifts[2]` is `damping + m - g` with the
    margin `m` (:data:`_SHIFT_MARGIN`, less after successful shifted steps) and
    Gershgorin's lower bound `g` on the lowest eigenvalue, which for a hundred
    parameters can be ten times too low (a step ten times too short, and a fit that
    crawls through its indefinite start). Bisection between 0 and `-g` with Cholesky
    factorisations as the test of positive definiteness brackets the lowest eigenvalue
    `e` to `g / 2^6`; the system is then shifted by `damping + m - e'` with `e' <= e`
    the bracket's lower end, so that every eigenvalue is again at least `m`.

    That bracket is still wide against a small margin: along a slightly concave valley
    (published 1Lbb workspace, toys drawn at mu = 0), where toy fits shrink the margin
    (`corners` of :func:`minimize_bounded`), the steps then grew by a few percent per
    iteration, and fits crawled for 50-80 iterations. The Rayleigh quotient
    `r = y^T hs y / y^T y` of the shifted step `y` is at least `e`, and close to it
    where `y` runs along the lowest eigenvector, as it does in such a valley; where the
    margin is below half its initial value, one more factorisation tries the shift
    `damping + m - max(r, -lo)` and keeps the first step where that system is not
    positive definite. With it the 1Lbb toys took 8-13% fewer iterations, sbottom's
    1-2% more. Ordinary fits, whose margin stays, do not take it: tried at every
    shifted step, it made the warm hypothesis tests of 1Lbb and 1Ljets a quarter slower.
    """
    del negative
    nan = jnp.full_like(rhs, jnp.nan)
    y0, ok0 = _cholesky_solve(hs, rhs, shifts[0])
    y1, ok1 = jax.lax.cond(
        shifts[1] == shifts[0],
        lambda: (y0, ok0),
        lambda: _cholesky_solve(hs, rhs, shifts[1]),
    )

    def shifted():
        damping = shifts[1] - floor
        top = -_gershgorin(hs)[0]
        margin = shifts[2] - shifts[1] - top

        def bisect(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            ok = _positive_definite(hs, mid + floor)
            return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

        lo, hi = jax.lax.fori_loop(
            0, _SHIFT_BISECTIONS, bisect, (jnp.zeros_like(top), jnp.maximum(top, 0.0))
        )
        y, ok = _cholesky_solve(hs, rhs, damping + margin + hi + floor)
        # Where the margin has shrunk (successful shifted steps of toy fits, along a
        # concave valley), the Rayleigh quotient of that step, an upper bound on the
        # lowest eigenvalue and close to it where the step runs along its eigenvector,
        # sharpens the bracket's upper end; where the system shifted by it is not
        # positive definite, the step above stays.
        rho = jnp.dot(y, hs @ y) / jnp.dot(y, y)
        tight = jnp.maximum(-rho, lo)

        def sharpened():
            y_s, ok_s = _cholesky_solve(hs, rhs, damping + margin + tight + floor)
            return jnp.where(ok_s, y_s, y), ok | ok_s

        use = ok & jnp.isfinite(rho) & (tight < hi) & (margin < 0.5 * _SHIFT_MARGIN)
        return jax.lax.cond(use, sharpened, lambda: (y, ok))

    y2, ok2 = jax.lax.cond(ok0, lambda: (nan, jnp.asarray(False)), shifted)
    return jnp.stack([y0, y1, y2]), jnp.stack([ok0, ok1, ok2])


def _regularisation(hs: Array) -> tuple[Array, Array]:
    """`(floor, negative)` for the symmetric `hs`: `1e-12` of the stiffest curvature
    (bounded by Gershgorin's theorem), added to the diagonal so that flat directions
    (parameters without effect, exact degeneracies) are regularised instead of blowing
    up, the same way by either factorisation; and `1e-9` of it, the negative curvature
    beyond which an eigenvalue is not round-off."""
    top = _gershgorin(hs)[1]
    return _LAMBDA_FLOOR * top, _NEGATIVE_EIGENVALUE * top


def _solve_with(solve, hs: Array, rhs: Array, shifts: Array) -> tuple[Array, Array]:
    """Solutions `(k, n)` of `(hs + shifts[i] I) y_i = rhs`, and whether each shifted
    matrix is positive semi-definite up to round-off `(k,)`, by `solve`, regularised
    by :func:`_regularisation`.
    """
    floor, negative = _regularisation(hs)
    return solve(hs, rhs, shifts + floor, floor, negative)


def _make_stack_solver(lazy: bool):
    """A solver of stacks of shifted systems (:func:`_solve_with` over `m` systems,
    `(m, n, n)`, `(m, n)`, `(m, k)`), batched and differentiable.

    Small matrices (up to `UNROLLED_MAX`) are factorised by the unrolled LDL^T, one
    fit's as a vmapped batch's: its element-wise operations process a whole batch at
    once (LAPACK factorises one matrix per call), and for a single fit they cost less
    than LAPACK's call (docs/performance.md has both measurements). Under `vmap` the
    batch is folded into the stack: one flat batch axis, which XLA compiled into faster
    code than nested ones (docs/performance.md, "Batched fits of the 10-bin model").
    Larger matrices go through LAPACK's Cholesky factorisation; with `lazy`, the three
    systems of a Newton iteration skip the factorisations whose results the iteration
    does not use (:func:`_solve_newton_systems`).

    The solver is differentiable in forward mode (the solver loop is, when a fit's
    implicit gradient is itself differentiated, e.g. by `jax.hessian`): the derivative
    comes from a second solve, `(hs + s I) dy = drhs - (dhs + ds I) y`, so that the
    batching rule never sees a tangent.
    """

    @jax.custom_batching.custom_vmap
    def batched(hs: Array, rhs: Array, shifts: Array) -> tuple[Array, Array]:
        if hs.shape[-1] <= UNROLLED_MAX:
            solve = _solve_unrolled
        elif lazy and hs.shape[0] == 1:
            # one fit: its factorisations are skipped by run-time branches (in a batch,
            # the branches would become selects that run every factorisation anyway)
            ys, ok = _solve_with(_solve_newton_cholesky, hs[0], rhs[0], shifts[0])
            return ys[None], ok[None]
        elif lazy and hs.shape[-1] > SHARPENED_BATCH_MIN:
            # a batch of large fits: the same steps as one fit's, so that a fit's result
            # does not depend on whether it was batched
            if jax.default_backend() == "cpu":
                # One fit's systems after another's, each skipping the factorisations it
                # does not need. Batched, the factorisations of an iteration are
                # independent batched LAPACK calls, which XLA's CPU runtime may run
                # concurrently, and two of those can deadlock in its thread pool (seen
                # with jax 0.10.2).
                return jax.lax.map(
                    lambda a: _solve_with(_solve_newton_cholesky, *a), (hs, rhs, shifts)
                )
            solve = _solve_newton_cholesky
        else:
            solve = _solve_cholesky
        return jax.vmap(lambda *a: _solve_with(solve, *a))(hs, rhs, shifts)

    @batched.def_vmap
    def _batch(axis_size, in_batched, hs, rhs, shifts):
        args = [
            a if batched_ else jnp.broadcast_to(a, (axis_size, *a.shape))
            for a, batched_ in zip((hs, rhs, shifts), in_batched, strict=True)
        ]
        ys, ok = batched(*(jnp.reshape(a, (-1, *a.shape[2:])) for a in args))
        m = hs.shape[-3]
        ys = jnp.reshape(ys, (axis_size, m, *ys.shape[1:]))
        ok = jnp.reshape(ok, (axis_size, m, *ok.shape[1:]))
        return (ys, ok), (True, True)

    @jax.custom_jvp
    def stack(hs: Array, rhs: Array, shifts: Array) -> tuple[Array, Array]:
        return batched(hs, rhs, shifts)

    @stack.defjvp
    def _jvp(primals, tangents):
        hs, rhs, shifts = primals
        d_hs, d_rhs, d_shifts = tangents
        ys, ok = stack(hs, rhs, shifts)
        m, k, n = ys.shape
        d_rhs_k = (
            d_rhs[:, None, :]
            - jnp.sum(d_hs[:, None, :, :] * ys[:, :, None, :], axis=3)
            - d_shifts[:, :, None] * ys
        )
        d_ys, _ = _solve_stack(
            jnp.repeat(hs, k, axis=0),
            jnp.reshape(d_rhs_k, (m * k, n)),
            jnp.reshape(shifts, (-1, 1)),
        )
        return (ys, ok), (jnp.reshape(d_ys, (m, k, n)), np.zeros(ok.shape, jax.dtypes.float0))

    return stack


#: Solutions and positive-definiteness flags of stacks of shifted systems.
_solve_stack = _make_stack_solver(lazy=False)
#: As `_solve_stack` for the three systems of a Newton iteration `(shifts: 0, damping,
#: damping past negative curvature)`: where the matrices are large, the second is the
#: first when the damping is zero, and the third is solved only where the first is not
#: positive definite (NaN and `ok = False` otherwise).
_solve_newton_systems = _make_stack_solver(lazy=True)


def newton_solve_free(h: Array, rhs: Array, mask: Array, lam: Array | float = 0.0) -> Array:
    """Solve `(H + damping)_{mm} y_m = rhs_m` on the masked parameters, zero elsewhere.

    The system is scaled to unit diagonal and `lam` is added to its diagonal. `1e-12` of
    the stiffest curvature is added as well, so that flat directions (parameters without
    effect, exact degeneracies, round-off) are regularised instead of blowing up. Linear
    in `rhs`. Returns NaN when the damped, masked Hessian has a clearly negative
    eigenvalue (not a minimum).

    Small systems (up to `UNROLLED_MAX` parameters) are factorised by the unrolled
    LDL^T, larger ones by LAPACK's Cholesky factorisation. Either way the solve is a
    `jax.lax.custom_linear_solve`: its derivatives are those of a linear solve,
    `d y = -A^-1 dA y`, to any order and in either mode, never those of the
    factorisation. This solve sits in the implicit derivatives of fits: their second
    derivatives (`jax.hessian` of fitted parameters, of CLs) differentiate it.
    """
    d, hs = _scaled_system(h, mask)
    n = hs.shape[-1]
    floor, negative = _regularisation(hs)
    shift = jnp.asarray(lam, dtype=hs.dtype) + floor
    a = hs + shift * jnp.eye(n, dtype=hs.dtype)
    # The factorisation is of the primal matrix only: custom_linear_solve differentiates
    # the product `a y` instead.
    hs_, shift_, floor_, negative = jax.lax.stop_gradient((hs, shift, floor, negative))
    if n <= UNROLLED_MAX:
        zero = jnp.zeros_like(rhs)
        ok = _solve_unrolled(hs_, zero, shift_[None], floor_, negative)[1][0]

        def solve(_, b):
            # The same factorisation as for `ok`: identical operations on the same
            # inputs, which XLA can merge (common-subexpression elimination).
            return _solve_unrolled(hs_, b, shift_[None], floor_, negative)[0][0]

        def product(y):
            return jnp.sum(a * y[None, :], axis=1)
    else:
        factor, ok = _cholesky(hs_ + shift_ * jnp.eye(n, dtype=hs.dtype))

        def solve(_, b):
            return jax.scipy.linalg.cho_solve((factor, True), b)

        def product(y):
            return a @ y

    y = jax.lax.custom_linear_solve(product, jnp.where(mask, rhs / d, 0.0), solve, symmetric=True)
    return jnp.where(mask & ok, y / d, jnp.where(mask, jnp.nan, 0.0))


def minimize_bounded(
    value_grad_hess: Callable[[Array, Any], tuple[Array, Array, Array]],
    x0: Float[Array, " n"],
    lower: Float[Array, " n"],
    upper: Float[Array, " n"],
    free: Bool[Array, " n"],
    args: Any,
    *,
    tol: float,
    maxiter: int,
    floor: Array | None = None,
    corners: bool = False,
    polish: bool = True,
    start: Start | None = None,
) -> SolverResult:
    """Minimise a function over the box `[lower, upper]`, moving only `free` entries;
    `value_grad_hess(x, args)` returns its value, gradient and Hessian at `x`.

    Entries of `x0` that are not free are kept exactly; free entries start from `x0`
    clipped into the box.

    `floor`: a value the objective cannot reach where it is meaningful (e.g.
    `Model.relative_nll_floor`); an accepted point below it stops the fit as failed.

    `corners` (static; effective above `UNROLLED_MAX` parameters): steps stop at the
    first bound they meet, and the margin of steps shifted past negative curvature
    shrinks while they succeed. A pseudo-experiment of the published 1Lbb workspace
    whose minimum sits in a corner of the box, along a valley of two degenerate
    normalisations, converges in 60 iterations this way instead of 400; on the
    observed data of the published workspaces it costs iterations (3L resonance's warm
    hypothesis test: 3.85 s against 2.0 s in `benchmarks/bench_realws.py`), so only toy
    fits ask for it.

    `polish` (static): take one last Newton step after convergence and return the
    value, gradient and Hessian there. Without it the fit stops at the point whose
    Newton decrement `d` passed the test, one evaluation earlier, and returns the
    minimum of the quadratic model there, `f - d / 2`, with that point; that value is
    off by the cubic term of the Taylor series, of order `d^(3/2)`, so the test is then
    `d < tol^(2/3)`: a value within about `tol` of the minimum away from the bounds, one
    Newton step before `d < tol` (next to a bound the unclipped quadratic model can
    undershoot the minimum over the box by up to `d / 2`). Pseudo-experiments, which
    need only the minimum's value, skip it.

    `start`: where the caller knows `x0` to be the minimum (:class:`Start`).

    **Returns:** a :class:`SolverResult`; `converged` is `False` when `maxiter` was
    reached, when no decreasing step could be found, when the objective is not
    finite, or when it fell below `floor`.
    """
    x0 = jnp.where(free, jnp.clip(x0, lower, upper), x0)
    n = x0.shape[0]
    # Newton decrement below which the fit has converged (see `polish`)
    limit = tol if polish else jnp.asarray(tol, dtype=x0.dtype) ** (2.0 / 3.0)

    def propose(x, g, h, lam, margin):
        """Projected Newton step from an accepted point: the undamped step when it is
        small (then also the convergence test), else the damped one."""
        pinned = ((x <= lower) & (g > 0)) | ((x >= upper) & (g < 0))
        move = free & ~pinned
        d, hs = _scaled_system(h, move, symmetrise=False)
        # Three systems in one factorisation pass: the Newton step, the damped one and,
        # for negative curvature (a saddle or a concave region, e.g. a histosys whose up
        # and down templates both lie below the nominal, or one whose interpolation
        # curves against an excess in the data), the damped one shifted so that every
        # eigenvalue is at least 1, the unit curvature of the scaled coordinates. The
        # shift uses Gershgorin's lower bound on the lowest eigenvalue, which needs no
        # eigendecomposition; it is at most the number of parameters, and can exceed
        # the exact shift by as much, shortening such steps.
        shift = (1.0 if n <= UNROLLED_MAX else margin) - _gershgorin(hs)[0]
        shifts = jnp.stack([jnp.zeros_like(lam), lam, lam + shift])
        ys, ok = _solve_newton_systems(hs[None], jnp.where(move, -g / d, 0.0)[None], shifts[None])
        ys, ok = ys[0], ok[0]
        steps = jnp.where(move[None, :], ys / d[None, :], 0.0)
        finite = jnp.all(jnp.isfinite(steps), axis=1)
        newton_ok = ok[0] & finite[0]
        decrement = -jnp.sum(g * jnp.where(newton_ok, steps[0], 0.0))
        near = newton_ok & (decrement < _DECREMENT_TRUSTED)
        # A saddle: where the gradient has no component along a direction of negative
        # curvature (a histosys whose up and down templates lie on the same side of the
        # nominal has zero slope at alpha = 0), the shifted step does not move along it.
        # Step along the moving coordinate of most negative curvature instead, one scaled
        # unit shortened by the damping (downhill where the slope is not exactly zero).
        curvature = jnp.where(move, _diagonal(hs), jnp.inf)
        along = jnp.arange(n) == jnp.argmin(curvature)
        slope = jnp.sum(jnp.where(along, g, 0.0))
        shifted_along = jnp.sum(jnp.where(along, ys[2], 0.0))
        saddle = ~newton_ok & (jnp.min(curvature) < 0) & (jnp.abs(shifted_along) < 1e-3)
        kick = jnp.where(along, jnp.where(slope > 0, -1.0, 1.0) / ((1.0 + lam) * d), 0.0)
        shifted = steps[2] + jnp.where(saddle, kick, 0.0)
        # The damped step, or the shifted one where the Newton system is not positive
        # definite; no step at all where neither is usable (the damping then grows).
        damped = jnp.where(newton_ok, steps[1], shifted)
        damped_ok = jnp.where(newton_ok, finite[1], ok[2] & finite[2])
        step = jnp.where(near, steps[0], jnp.where(damped_ok, damped, 0.0))
        trial = jnp.where(free, jnp.clip(x + step, lower, upper), x)
        if corners and n > UNROLLED_MAX:
            # Large models: a step that would cross a bound stops where the first
            # coordinate reaches it (coordinates already at a bound are clipped). Clipping
            # every crossing coordinate bends the step: along a valley of correlated
            # parameters that runs into a corner of the box (two degenerate
            # normalisations pushing each other to their bounds), the bent step leaves
            # the valley, fails the decrease test and is shortened, and the fit crawls
            # towards the corner for hundreds of iterations. Stopped at the bound, the
            # step stays in the valley, and the next iteration pins that coordinate.
            room = jnp.where(step > 0, upper - x, lower - x)
            inside = free & (x > lower) & (x < upper) & (step != 0)
            fraction = jnp.where(inside, room / jnp.where(inside, step, 1.0), jnp.inf)
            alpha = jnp.minimum(jnp.min(fraction), 1.0)
            stopped = jnp.where(free, jnp.clip(x + alpha * step, lower, upper), x)
            blocking = inside & (fraction <= alpha) & (alpha < 1.0)
            trial = jnp.where(blocking, jnp.where(step > 0, upper, lower), stopped)
        final = near & (decrement < limit)
        return trial, final, near, ~near & ~newton_ok & damped_ok, 0.5 * decrement

    def below(f):
        if floor is None:
            return jnp.asarray(False)
        return f < floor - 1e-9 * (1.0 + jnp.abs(floor))

    # The first iteration evaluates x0 and accepts it (f = +inf before). Every entry of
    # the state derives from x0, so that under `vmap` (a batch of fits) the whole state
    # is batched from the start: JAX then batches the loop's body once, not once more
    # for each entry it finds batched after a pass (tracing a small model's hypothesis
    # test took twice as long).
    false = jnp.isnan(x0[0]) & False
    zero = false.astype(x0.dtype)
    point0, hess0 = _pack(
        x0, zero + jnp.inf, jnp.zeros_like(x0) + zero, jnp.zeros((n, n), x0.dtype) + zero
    )
    stop = false
    if start is not None:
        stop = start.stop | false
        point_k, hess_k = _pack(x0, start.value, start.gradient, start.hessian)
        point0 = jnp.where(stop, point_k, point0)
        hess0 = jnp.where(stop, hess_k, hess0)
    state = _State(
        point=point0,
        hess=hess0,
        lam=zero,
        trial=x0,
        trial_kind=false.astype(jnp.int32) + _TRUSTED,
        n_iter=false.astype(jnp.int32),
        converged=stop,
        failed=false,
        margin=zero + _SHIFT_MARGIN,
        shifted=false,
        drop=zero,
    )

    def cond(s: _State) -> Array:
        return ~s.converged & ~s.failed & ((s.n_iter < maxiter) | (s.trial_kind == _FINAL))

    def body(s: _State) -> _State:
        first = s.n_iter == 0
        point_t, hess_t = _pack(s.trial, *value_grad_hess(s.trial, args))
        finite_t = _all_finite(point_t, hess_t)
        x, f, g, h = _unpack(s.point, s.hess, n)
        delta = s.trial - x
        if n <= UNROLLED_MAX:
            # The slope g.delta and the predicted change g.delta + delta.H.delta / 2 in
            # one reduction (tiny arrays: one fused operation).
            slope_gd = jnp.diag(g * delta)
            slope, predicted = jnp.sum(
                jnp.stack([slope_gd, slope_gd + 0.5 * delta[:, None] * h * delta[None, :]]),
                axis=(1, 2),
            )
        else:
            # products with the vector: no pass over an (n, n) temporary
            slope = g @ delta
            predicted = slope + 0.5 * (delta @ (h @ delta))
        actual = point_t[n] - f
        decreased = (predicted < 0) & (actual <= 1e-4 * predicted)
        accept = finite_t & (decreased | (s.trial_kind >= _TRUSTED))
        ratio = actual / jnp.where(predicted < 0, predicted, -1.0)
        lam_accept = jnp.where(ratio > 0.5, 0.1 * s.lam, s.lam)
        lam_accept = jnp.where(lam_accept < 1e-8, 0.0, lam_accept)
        # A rejected step that points downhill is first shortened along its direction,
        # to the minimum of the parabola through f, the slope g.delta and the trial's
        # value (at most half, at least a tenth of it; a tenth where the trial's value is
        # not finite), with the damping unchanged; the damping grows only when that
        # shorter step fails too. The first Newton step from the initial values is often
        # far too long along a weakly curved direction (a histosys at alpha = 0), and the
        # shortened step saves the damped steps that would crawl back.
        backtrack = ~accept & (s.trial_kind != _SHORTENED) & (slope < 0)
        excess = jnp.where(jnp.isfinite(actual), actual - slope, jnp.inf)
        shorten = jnp.clip(-slope / (2.0 * jnp.where(excess > 0, excess, jnp.inf)), 0.1, 0.5)
        lam_reject = jnp.where(backtrack, s.lam, jnp.maximum(10.0 * s.lam, _LAMBDA_REJECT))
        lam = jnp.where(accept, lam_accept, lam_reject)
        point = jnp.where(accept, point_t, s.point)
        hess = jnp.where(accept, hess_t, s.hess)
        x, f, g, h = _unpack(point, hess, n)
        # A successful step shifted past negative curvature lets the next one go further.
        margin = jnp.where(
            accept,
            jnp.where(
                s.shifted & (ratio > 0.5) & corners,
                jnp.maximum(0.25 * s.margin, 1e-3),
                s.margin,
            ),
            _SHIFT_MARGIN,
        )
        trial, final, trusted, shifted, drop = propose(x, g, h, lam, margin)
        trial = jnp.where(backtrack, x + shorten * delta, trial)
        # Converged: the trial is then the polishing step, evaluated (and accepted
        # where finite) by one more iteration, so that the objective and its
        # derivatives appear once in the compiled program, inside the loop.
        polish_now = final & ~backtrack & jnp.isfinite(f)
        kind = jnp.where(
            backtrack,
            _SHORTENED,
            jnp.where(polish_now, _FINAL, jnp.where(trusted, _TRUSTED, _STEP)),
        )
        return _State(
            point=point,
            hess=hess,
            lam=lam,
            trial=trial,
            trial_kind=kind,
            n_iter=s.n_iter + 1,
            converged=(s.trial_kind == _FINAL) if polish else polish_now,
            failed=(first & ~finite_t) | (lam > _LAMBDA_FAIL) | below(f),
            margin=margin,
            shifted=shifted & ~backtrack,
            drop=jnp.where(polish_now, drop, 0.0),
        )

    s = jax.lax.while_loop(cond, body, state)
    x, f, g, h = _unpack(s.point, s.hess, n)
    converged = s.converged & jnp.isfinite(f)
    if not polish:
        f = f - s.drop
    # the polishing evaluation is not an iteration of the method
    n_iter = s.n_iter - s.converged.astype(s.n_iter.dtype) if polish else s.n_iter
    return SolverResult(x=x, value=f, hessian=h, n_iter=n_iter, converged=converged, gradient=g)
