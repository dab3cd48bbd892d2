"""Soft selection of objects (muons, jets, ...) stored as padded jagged arrays.

Events with a variable number of objects come as a dense array `(events, max_objects)`
plus a boolean validity mask of the same shape (as `diffana.io` produces from awkward).
Padding never contributes: its values may be anything (NaN included) and receive zero
gradient.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Bool, Float

from diffana.relax._checks import as_float, check_mask
from diffana.relax._cuts import cut, hard_cut, hard_window, window

__all__ = [
    "count_at_least",
    "hard_count_at_least",
    "hard_leading_weights",
    "hard_object_cut",
    "hard_object_window",
    "leading_weights",
    "object_cut",
    "object_window",
]


def _check_objects(a, name, where):
    if len(jnp.shape(a)) == 0:
        raise ValueError(f"{where}: '{name}' must have shape (..., objects), got shape ()")


def _safe_values(x, mask, where):
    _check_objects(x, "x", where)
    mask = check_mask(mask, jnp.shape(x), where)
    x = as_float(x, "x", where)
    # Double where: padding values never reach the cut, so they cannot make NaN gradients.
    return jnp.where(mask, x, 0.0), mask


def object_cut(
    x: Float[ArrayLike, "events objects"],
    mask: Bool[ArrayLike, "events objects"],
    threshold: Float[ArrayLike, "..."],
    slope: Float[ArrayLike, "..."],
    direction: str = ">",
    *,
    hard: bool = False,
) -> Float[Array, "events objects"]:
    """Per-object sigmoid cut on padded objects: [`cut`][diffana.relax.cut], 0 on padding.

    **Arguments:**

    - `x`: the objects' observable (e.g. muon pT), shape `(events, objects)` (any leading
      shape works), padded.
    - `mask`: boolean validity mask of the shape of `x`.
    - `threshold`, `slope`, `direction`: as for [`cut`][diffana.relax.cut], broadcastable
      against `x` (a threshold per object slot is shape `(objects,)`).
    - `hard`: evaluate the hard twin instead (static Python bool).

    **Returns:** pass weights in [0, 1] of the shape of `x` (float64), exactly 0 where
    `mask` is False.

    Example:

    >>> import jax.numpy as jnp
    >>> from diffana.relax import object_cut
    >>> pt = jnp.array([[40.0, 5.0, jnp.nan]])
    >>> mask = jnp.array([[True, True, False]])
    >>> object_cut(pt, mask, 20.0, 1.0).round(4).tolist()
    [[1.0, 0.0, 0.0]]
    """
    if hard:
        return hard_object_cut(x, mask, threshold, slope, direction)
    x, mask = _safe_values(x, mask, "diffana.relax.object_cut")
    return jnp.where(mask, cut(x, threshold, slope, direction), 0.0)


def hard_object_cut(
    x: Float[ArrayLike, "events objects"],
    mask: Bool[ArrayLike, "events objects"],
    threshold: Float[ArrayLike, "..."],
    slope: Float[ArrayLike, "..."] | None = None,
    direction: str = ">",
) -> Float[Array, "events objects"]:
    """Hard twin of [`object_cut`][diffana.relax.object_cut]: 1.0 for valid passing objects.

    `slope` is accepted and ignored. **Returns:** {0, 1} of the shape of `x` (float64).
    """
    x, mask = _safe_values(x, mask, "diffana.relax.hard_object_cut")
    return jnp.where(mask, hard_cut(x, threshold, None, direction), 0.0)


def object_window(
    x: Float[ArrayLike, "events objects"],
    mask: Bool[ArrayLike, "events objects"],
    lo: Float[ArrayLike, "..."],
    hi: Float[ArrayLike, "..."],
    slope: Float[ArrayLike, "..."],
    *,
    hard: bool = False,
) -> Float[Array, "events objects"]:
    """Per-object soft window `lo <= x < hi` ([`window`][diffana.relax.window]), 0 on padding.

    **Returns:** pass weights in [0, 1] of the shape of `x` (float64).
    """
    if hard:
        return hard_object_window(x, mask, lo, hi, slope)
    x, mask = _safe_values(x, mask, "diffana.relax.object_window")
    return jnp.where(mask, window(x, lo, hi, slope), 0.0)


def hard_object_window(
    x: Float[ArrayLike, "events objects"],
    mask: Bool[ArrayLike, "events objects"],
    lo: Float[ArrayLike, "..."],
    hi: Float[ArrayLike, "..."],
    slope: Float[ArrayLike, "..."] | None = None,
) -> Float[Array, "events objects"]:
    """Hard twin of [`object_window`][diffana.relax.object_window]: 1.0 where valid and
    `lo <= x < hi`. `slope` is accepted and ignored.

    **Returns:** {0, 1} of the shape of `x` (float64).
    """
    x, mask = _safe_values(x, mask, "diffana.relax.hard_object_window")
    return jnp.where(mask, hard_window(x, lo, hi), 0.0)


def _pass_probabilities(p, mask, where):
    _check_objects(p, "p", where)
    p = as_float(p, "p", where)
    if mask is not None:
        mask = check_mask(mask, jnp.shape(p), where, against="p")
        p = jnp.where(mask, p, 0.0)
    return p


def _check_count(n, name, where):
    try:
        n_int = operator.index(n)
    except TypeError:
        raise ValueError(
            f"{where}: '{name}' must be a non-negative Python int (static), got {n!r}"
        ) from None
    if n_int < 0:
        raise ValueError(f"{where}: '{name}' must be >= 0, got {n_int}")
    return n_int


def _poisson_binomial_step(state, p):
    """Add one object passing with probability `p` to the count distribution `state`.

    `state[..., k]` is P(count == k) for k < K and the last entry P(count >= K) (absorbing).
    """
    shifted = jnp.concatenate([jnp.zeros_like(state[..., :1]), state[..., :-1]], axis=-1)
    new = state * (1.0 - p[..., None]) + shifted * p[..., None]
    return new.at[..., -1].add(state[..., -1] * p)


def count_at_least(
    p: Float[ArrayLike, "events objects"],
    n: int,
    mask: Bool[ArrayLike, "events objects"] | None = None,
    *,
    hard: bool = False,
) -> Float[Array, " events"]:
    """Soft "at least `n` objects pass": P(count >= n) for independent passes.

    Each object passes with probability `p` (e.g. from
    [`object_cut`][diffana.relax.object_cut]); the number passing then follows the
    Poisson-binomial distribution, computed exactly by a recursion over the objects in
    O(events x objects x n). For `p` in {0, 1} it is exactly the hard count
    ([`hard_count_at_least`][diffana.relax.hard_count_at_least]), so it tends to it as the
    cut slope goes to 0. Smooth (a polynomial in `p`), never NaN.

    **Arguments:**

    - `p`: per-object pass probabilities in [0, 1], shape `(events, objects)` (any leading
      shape works).
    - `n`: the required number of passing objects, a non-negative Python int.
    - `mask`: optional boolean validity mask of the shape of `p`; padding never passes.
    - `hard`: evaluate the hard twin instead (static Python bool).

    **Returns:** per-event weights in [0, 1], shape `(events,)` (float64).

    Example: "two muons with pT > θ", differentiable in θ.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> from diffana.relax import count_at_least, object_cut
    >>> pt = jnp.array([[45.0, 31.0, 0.0], [52.0, 8.0, 0.0]])
    >>> mask = jnp.array([[True, True, False], [True, True, False]])
    >>> def two_muons(theta):
    ...     return count_at_least(object_cut(pt, mask, theta, 2.0), 2)
    >>> two_muons(20.0).round(3).tolist()
    [0.996, 0.002]
    >>> bool(jax.grad(lambda t: two_muons(t).sum())(20.0) < 0)
    True
    """
    where = "diffana.relax.count_at_least"
    n = _check_count(n, "n", where)
    if hard:
        return hard_count_at_least(p, n, mask)
    return _count_at_least(_pass_probabilities(p, mask, where), n)


@functools.partial(jax.jit, static_argnames=("n",))
def _count_at_least(p, n):
    batch = p.shape[:-1]
    if n == 0:
        return jnp.ones(batch, dtype=p.dtype)
    state = jnp.zeros((*batch, n + 1), dtype=p.dtype).at[..., 0].set(1.0)
    state, _ = lax.scan(
        lambda s, pj: (_poisson_binomial_step(s, pj), None), state, jnp.moveaxis(p, -1, 0)
    )
    return state[..., n]


def hard_count_at_least(
    p: Float[ArrayLike, "events objects"],
    n: int,
    mask: Bool[ArrayLike, "events objects"] | None = None,
) -> Float[Array, " events"]:
    """Hard twin of [`count_at_least`][diffana.relax.count_at_least]: integer count >= n.

    An object counts when it is valid and `p > 0.5` (so hard pass flags in {0, 1} count
    exactly). **Returns:** per-event weights in {0, 1}, shape `(events,)` (float64).
    """
    where = "diffana.relax.hard_count_at_least"
    n = _check_count(n, "n", where)
    p = _pass_probabilities(p, mask, where)
    count = jnp.sum(p > 0.5, axis=-1)
    return (count >= n).astype(p.dtype)


def leading_weights(
    key: Float[ArrayLike, "events objects"],
    p: Float[ArrayLike, "events objects"],
    mask: Bool[ArrayLike, "events objects"] | None = None,
    rank: int = 0,
    *,
    hard: bool = False,
) -> Float[Array, "events objects"]:
    """Soft choice of the leading passing object: P(object j is the `rank`-th one).

    Objects are ordered by `key` (e.g. pT, largest first); each passes independently with
    probability `p`. The weight of object `j` is the probability that it passes and that
    exactly `rank` objects with a larger key pass (for `rank=0`:
    `p_j * prod_{k ahead of j} (1 - p_k)`). Weighting each object's observables with
    these gives the distribution of the leading (`rank=0`), sub-leading (`rank=1`), ...
    passing object, differentiable in whatever `p` depends on. Per event the weights sum
    to `count_at_least(p, rank + 1)`; for `p` in {0, 1} they are one-hot on the hard
    choice ([`hard_leading_weights`][diffana.relax.hard_leading_weights]). Ties in `key`
    keep the original object order. The order itself is not differentiated.

    **Arguments:**

    - `key`: the ordering variable, shape `(events, objects)` (any leading shape works).
    - `p`: per-object pass probabilities in [0, 1], the shape of `key`.
    - `mask`: optional boolean validity mask of that shape; padding is never chosen.
    - `rank`: 0 for the leading object, 1 for the sub-leading, ... (Python int).
    - `hard`: evaluate the hard twin instead (static Python bool).

    **Returns:** weights in [0, 1], the shape of `key` (float64).

    Example: the leading muon with pT > 20 (soft), as weights over the muons.

    >>> import jax.numpy as jnp
    >>> from diffana.relax import leading_weights, object_cut
    >>> pt = jnp.array([[12.0, 45.0, 31.0]])
    >>> mask = jnp.array([[True, True, True]])
    >>> p = object_cut(pt, mask, 20.0, 1.0)
    >>> leading_weights(pt, p, mask).round(4).tolist()
    [[0.0, 1.0, 0.0]]
    >>> leading_weights(pt, p, mask, rank=1).round(4).tolist()
    [[0.0, 0.0, 1.0]]
    """
    where = "diffana.relax.leading_weights"
    rank = _check_count(rank, "rank", where)
    if hard:
        return hard_leading_weights(key, p, mask, rank)
    p = _pass_probabilities(p, mask, where)
    return _leading(key, p, mask, rank, where)


def _leading(key, p, mask, rank, where):
    if tuple(jnp.shape(key)) != p.shape:
        raise ValueError(
            f"{where}: 'key' must have the shape of 'p' {p.shape}, got {jnp.shape(key)}"
        )
    key = as_float(key, "key", where)
    if mask is not None:
        key = jnp.where(jnp.asarray(mask), key, -jnp.inf)
    return _leading_impl(key, p, rank)


@functools.partial(jax.jit, static_argnames=("rank",))
def _leading_impl(key, p, rank):
    key = lax.stop_gradient(key)
    key = jnp.where(jnp.isnan(key), -jnp.inf, key)
    # Descending by key, stable: argsort of -key keeps the original order among ties.
    order = jnp.argsort(-key, axis=-1, stable=True)
    p_sorted = jnp.take_along_axis(p, order, axis=-1)
    batch = p.shape[:-1]
    state = jnp.zeros((*batch, rank + 1), dtype=p.dtype).at[..., 0].set(1.0)

    def step(state, pj):
        # state[..., k] = P(exactly k objects ahead passed), k <= rank.
        weight = pj * state[..., rank]
        shifted = jnp.concatenate([jnp.zeros_like(state[..., :1]), state[..., :-1]], axis=-1)
        return state * (1.0 - pj[..., None]) + shifted * pj[..., None], weight

    _, w_sorted = lax.scan(step, state, jnp.moveaxis(p_sorted, -1, 0))
    w_sorted = jnp.moveaxis(w_sorted, 0, -1)
    return jnp.take_along_axis(w_sorted, jnp.argsort(order, axis=-1), axis=-1)


def hard_leading_weights(
    key: Float[ArrayLike, "events objects"],
    p: Float[ArrayLike, "events objects"],
    mask: Bool[ArrayLike, "events objects"] | None = None,
    rank: int = 0,
) -> Float[Array, "events objects"]:
    """Hard twin of [`leading_weights`][diffana.relax.leading_weights]: one-hot choice.

    1.0 on the valid object with `p > 0.5` that has exactly `rank` such objects with a
    larger `key` ahead of it; rows without one are all zero.

    **Returns:** weights in {0, 1}, the shape of `key` (float64).
    """
    where = "diffana.relax.hard_leading_weights"
    rank = _check_count(rank, "rank", where)
    p = _pass_probabilities(p, mask, where)
    return _leading(key, (p > 0.5).astype(p.dtype), mask, rank, where)
