"""Sigmoid cuts, windows and soft logic on per-event weights, with their hard twins."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from diffana.relax._checks import (
    as_float,
    broadcast_shape,
    check_direction,
    check_positive,
    concrete_value,
)

__all__ = ["cut", "hard_cut", "hard_window", "soft_and", "soft_not", "soft_or", "window"]


def _operands(where: str, **named):
    """Named operands as float arrays broadcast to their common shape."""
    shape = broadcast_shape(where, **named)
    return [jnp.broadcast_to(as_float(a, n, where), shape) for n, a in named.items()]


def cut(
    x: Float[ArrayLike, "*shape"],
    threshold: Float[ArrayLike, "*#shape"],
    slope: Float[ArrayLike, "*#shape"],
    direction: str = ">",
    *,
    hard: bool = False,
) -> Float[Array, "*shape"]:
    """Sigmoid cut: the weight with which each entry of `x` passes `x > threshold`.

    `sigmoid((x - threshold) / slope)` for `direction=">"` (or `">="`), and
    `sigmoid((threshold - x) / slope)` for `"<"` (or `"<="`). The hard twin is
    [`hard_cut`][diffana.relax.hard_cut], reached as `slope -> 0`.

    **Bias.** `slope` is in the units of `x`: the weight rises from 0.1 to 0.9 over
    `2 ln 9 * slope ≈ 4.4 * slope` around the threshold. For events of density `f(x)`,
    the soft yield differs from the hard yield by `-(π²/6) * slope² * f'(threshold)`
    (with `+` for `"<"`) to second order: no bias where the density is flat at the
    threshold, a bias quadratic in `slope` elsewhere. Anneal `slope` towards zero (see
    [`anneal_geometric`][diffana.relax.anneal_geometric]) and evaluate with the hard twin.

    **Arguments:**

    - `x`: the observable, any shape.
    - `threshold`: the cut value, broadcastable against `x` (e.g. a scalar).
    - `slope`: the width of the transition, in the units of `x`, > 0 (checked when
      concrete; a traced slope is the caller's responsibility), broadcastable against `x`.
    - `direction`: `">"`, `">="` (keep entries above) or `"<"`, `"<="` (keep entries below);
      the soft cut is the same for strict and non-strict, the hard twin differs at ties.
    - `hard`: evaluate the hard twin instead (static Python bool).

    **Returns:** weights in [0, 1] of the broadcast shape of the arguments (float64).

    Example:

    >>> import jax.numpy as jnp
    >>> from diffana.relax import cut
    >>> cut(jnp.array([10.0, 20.0, 30.0]), 20.0, 1.0).round(4).tolist()
    [0.0, 0.5, 1.0]
    """
    where = "diffana.relax.cut"
    check_direction(direction, where)
    if hard:
        return hard_cut(x, threshold, slope, direction)
    broadcast_shape(where, x=x, threshold=threshold, slope=slope)
    check_positive(slope, "slope", where)  # before broadcasting: checks the small array
    x, threshold, slope = _operands(where, x=x, threshold=threshold, slope=slope)
    z = (x - threshold) / slope if direction.startswith(">") else (threshold - x) / slope
    return jax.nn.sigmoid(z)


def hard_cut(
    x: Float[ArrayLike, "*shape"],
    threshold: Float[ArrayLike, "*#shape"],
    slope: Float[ArrayLike, "*#shape"] | None = None,
    direction: str = ">",
) -> Float[Array, "*shape"]:
    """Hard twin of [`cut`][diffana.relax.cut]: 1.0 where `x direction threshold`, else 0.0.

    `slope` is accepted for a signature identical to `cut` and ignored. The comparison is
    exactly `direction` (`">"` is strict, `">="` is not). NaN entries of `x` fail every cut.

    **Returns:** weights in {0, 1} (float64) of the broadcast shape of the arguments.
    """
    where = "diffana.relax.hard_cut"
    check_direction(direction, where)
    x, threshold = _operands(where, x=x, threshold=threshold)
    compare = {">": jnp.greater, ">=": jnp.greater_equal, "<": jnp.less, "<=": jnp.less_equal}
    return compare[direction](x, threshold).astype(x.dtype)


def _check_window(lo, hi, where: str) -> None:
    lo_v, hi_v = concrete_value(lo), concrete_value(hi)
    if lo_v is not None and hi_v is not None and not np.all(lo_v < hi_v):
        raise ValueError(f"{where}: 'lo' must be < 'hi', got lo={lo_v}, hi={hi_v}")


def window(
    x: Float[ArrayLike, "*shape"],
    lo: Float[ArrayLike, "*#shape"],
    hi: Float[ArrayLike, "*#shape"],
    slope: Float[ArrayLike, "*#shape"],
    *,
    hard: bool = False,
) -> Float[Array, "*shape"]:
    """Soft window `lo <= x < hi`: the product of two sigmoid cuts of the same `slope`.

    `cut(x, lo, slope, ">=") * cut(x, hi, slope, "<")`; its hard twin is
    [`hard_window`][diffana.relax.hard_window]. The bias of each edge is that of
    [`cut`][diffana.relax.cut]; a window narrower than a few `slope` never reaches weight 1.

    **Arguments:**

    - `x`: the observable, any shape.
    - `lo`, `hi`: the window's edges (`lo < hi`, checked when concrete), broadcastable
      against `x`.
    - `slope`: width of each edge's transition in the units of `x`, > 0.
    - `hard`: evaluate the hard twin instead (static Python bool).

    **Returns:** weights in [0, 1] of the broadcast shape of the arguments (float64).

    Example:

    >>> import jax.numpy as jnp
    >>> from diffana.relax import window
    >>> window(jnp.array([80.0, 91.0, 100.0]), 86.0, 96.0, 0.5).round(3).tolist()
    [0.0, 1.0, 0.0]
    """
    where = "diffana.relax.window"
    if hard:
        return hard_window(x, lo, hi, slope)
    broadcast_shape(where, x=x, lo=lo, hi=hi, slope=slope)
    check_positive(slope, "slope", where)  # before broadcasting: checks the small arrays
    _check_window(lo, hi, where)
    x, lo, hi, slope = _operands(where, x=x, lo=lo, hi=hi, slope=slope)
    return jax.nn.sigmoid((x - lo) / slope) * jax.nn.sigmoid((hi - x) / slope)


def hard_window(
    x: Float[ArrayLike, "*shape"],
    lo: Float[ArrayLike, "*#shape"],
    hi: Float[ArrayLike, "*#shape"],
    slope: Float[ArrayLike, "*#shape"] | None = None,
) -> Float[Array, "*shape"]:
    """Hard twin of [`window`][diffana.relax.window]: 1.0 where `lo <= x < hi`, else 0.0.

    `slope` is accepted and ignored. **Returns:** weights in {0, 1} (float64).
    """
    where = "diffana.relax.hard_window"
    broadcast_shape(where, x=x, lo=lo, hi=hi)
    _check_window(lo, hi, where)
    x, lo, hi = _operands(where, x=x, lo=lo, hi=hi)
    return ((x >= lo) & (x < hi)).astype(x.dtype)


def _weights(where: str, weights) -> list[Array]:
    if not weights:
        raise ValueError(f"{where}: needs at least one array of weights")
    return _operands(where, **{f"weights[{i}]": w for i, w in enumerate(weights)})


def soft_and(*weights: Float[ArrayLike, "*#shape"]) -> Float[Array, "*shape"]:
    """Soft logical AND of selections: the product of their weights in [0, 1].

    The probability that all pass, were the selections independent. Exact on weights in
    {0, 1} (booleans are accepted), so it is its own hard twin.

    **Arguments:** one or more weight arrays in [0, 1] that broadcast together.

    **Returns:** weights in [0, 1] of the broadcast shape (float64).

    Example:

    >>> from diffana.relax import soft_and
    >>> soft_and(0.5, 0.5, 1.0).item()
    0.25
    """
    return functools.reduce(jnp.multiply, _weights("diffana.relax.soft_and", weights))


def soft_or(*weights: Float[ArrayLike, "*#shape"]) -> Float[Array, "*shape"]:
    """Soft logical OR of selections: `1 - prod(1 - w)`.

    The probability that at least one passes, were the selections independent. Exact on
    weights in {0, 1} (booleans are accepted), so it is its own hard twin.

    **Arguments:** one or more weight arrays in [0, 1] that broadcast together.

    **Returns:** weights in [0, 1] of the broadcast shape (float64).

    Example:

    >>> from diffana.relax import soft_or
    >>> soft_or(0.5, 0.5).item()
    0.75
    """
    ws = _weights("diffana.relax.soft_or", weights)
    return 1.0 - functools.reduce(jnp.multiply, [1.0 - w for w in ws])


def soft_not(weights: Float[ArrayLike, "*shape"]) -> Float[Array, "*shape"]:
    """Soft logical NOT of a selection: `1 - w`. Exact on {0, 1}, its own hard twin.

    **Returns:** weights in [0, 1] of the shape of `weights` (float64).
    """
    (w,) = _weights("diffana.relax.soft_not", (weights,))
    return 1.0 - w
