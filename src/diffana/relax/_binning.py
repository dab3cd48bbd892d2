"""Trainable bin edges that stay ordered: a monotone parameterisation and its inverse."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from diffana.relax._checks import as_float, check_increasing, check_ndim, concrete_value

__all__ = ["ordered_edges", "ordered_edges_inverse"]


def ordered_edges(
    params: Float[ArrayLike, " bins"],
    lo: Float[ArrayLike, ""],
    hi: Float[ArrayLike, ""],
) -> Float[Array, " bins+1"]:
    """Bin edges from unconstrained parameters: always increasing, from `lo` to `hi`.

    The bin widths are `(hi - lo) * softmax(params)`, so every width is positive and
    they add up to `hi - lo`; the edges are `lo` followed by the cumulative sum of the
    widths (the last edge is exactly `hi`). Any real `params` give valid edges, so an
    optimiser can move them freely; adding a constant to all `params` changes nothing.
    Initialise with [`ordered_edges_inverse`][diffana.relax.ordered_edges_inverse].

    **Arguments:**

    - `params`: one unconstrained real per bin, shape `(bins,)`.
    - `lo`, `hi`: the outer edges, scalars with `lo < hi` (checked when concrete).

    **Returns:** the edges, shape `(bins + 1,)`, float64, non-decreasing in floating point
    (strictly increasing unless a width underflows, at params differing by > ~700).

    Example:

    >>> import jax.numpy as jnp
    >>> from diffana.relax import ordered_edges
    >>> ordered_edges(jnp.zeros(4), 0.0, 1.0).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    where = "diffana.relax.ordered_edges"
    check_ndim(params, 1, "params", where, "(bins,)")
    if jnp.shape(params)[0] < 1:
        raise ValueError(f"{where}: 'params' needs at least one bin, got shape (0,)")
    for name, v in (("lo", lo), ("hi", hi)):
        check_ndim(v, 0, name, where, "() (a scalar)")
    lo_v, hi_v = concrete_value(lo), concrete_value(hi)
    known = lo_v is not None and hi_v is not None
    if known and not (np.isfinite(lo_v) and np.isfinite(hi_v) and lo_v < hi_v):
        raise ValueError(f"{where}: need finite 'lo' < 'hi', got lo={lo_v}, hi={hi_v}")
    params = as_float(params, "params", where)
    lo, hi = as_float(lo, "lo", where), as_float(hi, "hi", where)
    fractions = jnp.cumsum(jax.nn.softmax(params))[:-1]
    inner = lo + (hi - lo) * fractions
    # Rounding could push an inner edge past hi; clip keeps the edges ordered.
    inner = jnp.minimum(inner, hi)
    return jnp.concatenate([lo[None], inner, hi[None]])


def ordered_edges_inverse(edges: Float[ArrayLike, " bins+1"]) -> Float[Array, " bins"]:
    """Parameters that [`ordered_edges`][diffana.relax.ordered_edges] maps back to `edges`.

    `ordered_edges(ordered_edges_inverse(edges), edges[0], edges[-1]) == edges` up to
    rounding. The parameters are the log bin widths, centred on zero.

    **Arguments:**

    - `edges`: strictly increasing, finite bin edges, shape `(bins + 1,)` (checked when
      concrete).

    **Returns:** parameters, shape `(bins,)`, float64.

    Example:

    >>> import jax.numpy as jnp
    >>> from diffana.relax import ordered_edges, ordered_edges_inverse
    >>> edges = jnp.array([0.0, 0.1, 0.5, 1.0])
    >>> bool(jnp.allclose(ordered_edges(ordered_edges_inverse(edges), 0.0, 1.0), edges))
    True
    """
    where = "diffana.relax.ordered_edges_inverse"
    check_increasing(edges, "edges", where)
    log_widths = jnp.log(jnp.diff(as_float(edges, "edges", where)))
    return log_widths - jnp.mean(log_widths)
