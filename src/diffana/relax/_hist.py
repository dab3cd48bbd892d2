"""Kernel-density and softmax histograms, with their hard twins."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from diffana.relax._checks import (
    as_float,
    broadcast_shape,
    check_increasing,
    check_ndim,
    check_overflow,
    check_positive,
    float_dtype,
)

__all__ = ["hard_hist", "hard_softmax_hist", "hist", "softmax_hist"]

# Events are processed in chunks of about this many (event, edge) pairs, so that memory
# stays linear in the number of events whatever the number of edges; reverse mode
# recomputes each chunk (jax.checkpoint) instead of storing events x edges residuals.
_CHUNK_ELEMENTS = 2**21

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


@jax.custom_jvp
def _smooth_cdf(z, sign):
    """Φ(z) - [x < e] for z = (e - x)/h, given `sign` = -1 where x < e and +1 elsewhere.

    The step is decided by comparing x with e, exactly as the hard histogram bins x, not
    by the sign of z (which underflows to 0 for x within ~1e-308 * h of e). The result is
    `sign * erfc(|z|/√2)/2`, the smaller tail, so it keeps full relative precision far
    in both tails (where Φ itself would round to 0 or 1). Its derivative in z is φ(z).
    """
    return sign * (0.5 * jax.scipy.special.erfc(jnp.abs(z) * _INV_SQRT_2))


@_smooth_cdf.defjvp
def _smooth_cdf_jvp(primals, tangents):
    (z, sign), (dz, _) = primals, tangents  # `sign` is piecewise constant
    # One exp; clipping keeps higher derivatives finite at |z| = inf (phi(40) is 0 anyway).
    zc = jnp.clip(z, -40.0, 40.0)
    return _smooth_cdf(z, sign), _INV_SQRT_2PI * jnp.exp(-0.5 * zc * zc) * dz


def _smooth_sums_dense(x, w, inv_h, edges):
    """sum_i w_i (Φ((e_j - x_i)/h_i) - [x_i < e_j]) for every edge j: (edges,)."""
    diff = edges[None, :] - x[:, None]  # events-major: fastest on CPU
    sign = jnp.where(x[:, None] < edges[None, :], -1.0, 1.0)
    return jnp.sum(_smooth_cdf(diff * inv_h[:, None], sign) * w[:, None], axis=0)


def _smooth_sums(x, w, inv_h, edges, chunk_elements):
    """As `_smooth_sums_dense`, in chunks of events so that memory is O(events + edges)."""
    n, m = x.shape[0], edges.shape[0]
    if m == 0:
        return jnp.zeros((0,), dtype=x.dtype)
    chunk = max(1, chunk_elements // m)
    if n <= chunk:
        return _smooth_sums_dense(x, w, inv_h, edges)
    nchunks = -(-n // chunk)
    pad = nchunks * chunk - n
    # Padded events carry weight 0 (and a harmless position and bandwidth).
    xs = jnp.pad(x, (0, pad)).reshape(nchunks, chunk)
    ws = jnp.pad(w, (0, pad)).reshape(nchunks, chunk)
    hs = jnp.pad(inv_h, (0, pad), constant_values=1.0).reshape(nchunks, chunk)

    @jax.checkpoint
    def body(total, chunk_args):
        return total + _smooth_sums_dense(*chunk_args, edges), None

    total, _ = lax.scan(body, jnp.zeros(m, dtype=x.dtype), (xs, ws, hs))
    return total


def _event_weights(where, weights, n):
    """Per-event weights as a float array of shape (n,): default 1, else broadcast."""
    if weights is None:
        return jnp.ones((n,), dtype=float_dtype())
    shape = tuple(jnp.shape(weights))
    try:
        ok = np.broadcast_shapes(shape, (n,)) == (n,)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{where}: 'weights' must broadcast to (events,) = ({n},), got {shape}")
    return jnp.broadcast_to(as_float(weights, "weights", where), (n,))


def _hist_operands(where, x, edges, bandwidth, weights):
    check_ndim(x, 1, "x", where, "(events,)")
    check_increasing(edges, "edges", where)
    (n,) = jnp.shape(x)
    x = as_float(x, "x", where)
    edges = as_float(edges, "edges", where)
    w = _event_weights(where, weights, n)
    h = None
    if bandwidth is not None:
        if broadcast_shape(where, x=x, bandwidth=bandwidth) != (n,):
            raise ValueError(
                f"{where}: 'bandwidth' must be a scalar or broadcast to the shape of 'x' "
                f"({n},), got shape {jnp.shape(bandwidth)}"
            )
        h = jnp.broadcast_to(as_float(bandwidth, "bandwidth", where), (n,))
    return x, edges, h, w


def hist(
    x: Float[ArrayLike, " events"],
    edges: Float[ArrayLike, " edges"],
    bandwidth: Float[ArrayLike, ""] | Float[ArrayLike, " events"],
    weights: Float[ArrayLike, " events"] | None = None,
    overflow: str = "drop",
    *,
    hard: bool = False,
) -> Float[Array, " edges-1"]:
    """Kernel-density histogram: each event is a Gaussian of width `bandwidth`, binned.

    Bin `k` receives `sum_i w_i [Φ((e_{k+1} - x_i)/h) - Φ((e_k - x_i)/h)]`, with `Φ` the
    standard normal CDF: the exact integral of the Gaussian kernel density estimate over
    the bin, computed from CDF differences at the edges in O(events x edges) time and
    O(events + edges) memory. As `bandwidth -> 0` it tends to the ordinary histogram
    [`hard_hist`][diffana.relax.hard_hist] (an event exactly on an edge counts 1/2 to each
    side). The same definition as `relaxed.hist` (without weights).

    **Precision.** The counts are computed as the hard histogram plus the differences of
    `sum_i w_i (Φ(z_ij) - [z_ij > 0])`, whose terms come from the smaller Gaussian tail
    (`erfc`): bins far in the tails keep full relative precision (~1e-12) where
    `Φ(b) - Φ(a)` would cancel to 0. Rounding errors are ~1e-16 of the weight of the
    events near a bin, so counts are not negative beyond that with non-negative weights
    (negative weights, as from NLO generators, are allowed); with `"fold"` they sum to
    `sum(weights)` up to rounding.

    **Bias.** For events of density `f`, the expected count in `[a, b)` is
    `∫_a^b f + (h²/2) (f'(b) - f'(a)) + O(h⁴)`: the kernel smooths the density, leaking
    mass from peaks into their neighbours. `bandwidth` is in the units of `x`; a value
    well below the bin width keeps the bias small, a larger one smooths the gradients.

    **Arguments:**

    - `x`: the observable, shape `(events,)`. NaN entries with weight exactly 0 (padding)
      are ignored; NaN entries with non-zero weight make the counts NaN.
    - `edges`: bin edges, shape `(bins + 1,)`, strictly increasing and finite (checked
      when concrete; traced edges, e.g. from
      [`ordered_edges`][diffana.relax.ordered_edges], are checked for shape only).
    - `bandwidth`: kernel standard deviation `h` in the units of `x`, > 0 (checked when
      concrete); a scalar or one per event (adaptive KDE).
    - `weights`: per-event weights (MC weights times soft-selection weights), shape
      `(events,)` or broadcastable to it; default 1.
    - `overflow`: `"drop"` loses the kernel mass outside `[edges[0], edges[-1]]`;
      `"fold"` adds it to the first and last bin, so that the counts sum to `sum(weights)`
      exactly (the outer edges then do not matter).
    - `hard`: evaluate the hard twin instead (static Python bool).

    **Returns:** the counts, shape `(bins,)`, float64.

    Example:

    >>> import jax.numpy as jnp
    >>> from diffana.relax import hist
    >>> x = jnp.array([0.5, 1.5, 1.6, 3.5])
    >>> hist(x, jnp.array([0.0, 1.0, 2.0, 3.0]), 0.01).round(6).tolist()
    [1.0, 2.0, 0.0]
    >>> hist(x, jnp.array([0.0, 1.0, 2.0, 3.0]), 0.01, overflow="fold").round(6).tolist()
    [1.0, 2.0, 1.0]
    """
    where = "diffana.relax.hist"
    check_overflow(overflow, where)
    if hard:
        return hard_hist(x, edges, bandwidth, weights, overflow)
    if bandwidth is None:
        raise ValueError(f"{where}: 'bandwidth' must be > 0, got None")
    x, edges, h, w = _hist_operands(where, x, edges, bandwidth, weights)
    check_positive(bandwidth, "bandwidth", where)
    return _kde_hist(x, edges, h, w, overflow, _CHUNK_ELEMENTS)


@functools.partial(jax.jit, static_argnames=("overflow", "chunk_elements"))
def _kde_hist(x, edges, h, w, overflow, chunk_elements):
    # Φ = [z > 0] + (Φ - [z > 0]): the counts are the hard histogram (exact weighted sums)
    # plus differences of smooth sums that are small wherever the bins are far from the
    # events, so that no bin loses precision to the others' contents.
    x = jnp.where(jnp.isnan(x) & (w == 0), 0.0, x)
    hard = _hard_hist(x, edges, w, overflow)
    if overflow == "fold":  # outer edges at -inf and +inf, where the smooth part is 0
        zero = jnp.zeros((1,), dtype=x.dtype)
        inner = _smooth_sums(x, w, 1.0 / h, edges[1:-1], chunk_elements)
        smooth = jnp.concatenate([zero, inner, zero])
    else:
        smooth = _smooth_sums(x, w, 1.0 / h, edges, chunk_elements)
    return hard + jnp.diff(smooth)


def hard_hist(
    x: Float[ArrayLike, " events"],
    edges: Float[ArrayLike, " edges"],
    bandwidth: Float[ArrayLike, ""] | Float[ArrayLike, " events"] | None = None,
    weights: Float[ArrayLike, " events"] | None = None,
    overflow: str = "drop",
) -> Float[Array, " edges-1"]:
    """Hard twin of [`hist`][diffana.relax.hist]: an ordinary weighted histogram.

    Bin `k` counts the events with `edges[k] <= x < edges[k+1]` (half-open bins, the
    convention of boost-histogram and ROOT; an event exactly on the last edge is overflow).
    `bandwidth` is accepted and ignored. With `overflow="fold"` the events below the first
    edge go to the first bin and those at or above the last edge to the last bin. NaN
    entries with weight 0 are ignored; with non-zero weight they make bin 0 NaN. Cost
    O(events log edges).

    **Returns:** the counts, shape `(bins,)`, float64 (differentiable in `weights` only).

    Example:

    >>> import jax.numpy as jnp
    >>> from diffana.relax import hard_hist
    >>> hard_hist(jnp.array([0.5, 1.0, 1.6, 3.0]), jnp.array([0.0, 1.0, 2.0, 3.0])).tolist()
    [1.0, 2.0, 0.0]
    """
    where = "diffana.relax.hard_hist"
    check_overflow(overflow, where)
    x, edges, _, w = _hist_operands(where, x, edges, None, weights)
    if bandwidth is not None:
        broadcast_shape(where, x=x, bandwidth=bandwidth)
    return _hard_hist(x, edges, w, overflow)


@functools.partial(jax.jit, static_argnames=("overflow",))
def _hard_hist(x, edges, w, overflow):
    nbins = edges.shape[0] - 1
    idx = jnp.searchsorted(edges, x, side="right") - 1
    if overflow == "fold":
        idx = jnp.clip(idx, 0, nbins - 1)
    nan = jnp.isnan(x)
    idx = jnp.where(nan, 0, jnp.where((idx < 0) | (idx >= nbins), nbins, idx))
    w = jnp.where(nan, jnp.where(w == 0, 0.0, jnp.nan), w)
    return jnp.zeros(nbins, dtype=x.dtype).at[idx].add(w, mode="drop")


def _softmax_operands(where, logits, temperature, weights):
    check_ndim(logits, 2, "logits", where, "(events, bins)")
    n, nbins = jnp.shape(logits)
    if nbins < 1:
        raise ValueError(f"{where}: 'logits' needs at least one bin, got shape {(n, nbins)}")
    logits = as_float(logits, "logits", where)
    w = _event_weights(where, weights, n)
    if temperature is not None and jnp.shape(temperature) != ():
        raise ValueError(
            f"{where}: 'temperature' must be a scalar, got shape {jnp.shape(temperature)}"
        )
    return logits, w


def softmax_hist(
    logits: Float[ArrayLike, "events bins"],
    temperature: Float[ArrayLike, ""],
    weights: Float[ArrayLike, " events"] | None = None,
    *,
    hard: bool = False,
) -> Float[Array, " bins"]:
    """Soft assignment of events to bins: `sum_i w_i softmax(logits_i / temperature)`.

    The INFERNO-style histogram of a network with one output per bin. Each event's
    weight is shared among the bins, so the counts always sum to `sum(weights)`. As
    `temperature -> 0` it tends to [`hard_softmax_hist`][diffana.relax.hard_softmax_hist]
    (each event in its arg-max bin) for events without ties among their largest logits.

    **Arguments:**

    - `logits`: shape `(events, bins)`, e.g. a network's outputs (float32 is fine: the
      histogram is computed in float64).
    - `temperature`: scalar > 0 (checked when concrete).
    - `weights`: per-event weights, shape `(events,)` or broadcastable to it; default 1.
    - `hard`: evaluate the hard twin instead (static Python bool).

    **Returns:** the counts, shape `(bins,)`, float64.

    Example:

    >>> import jax.numpy as jnp
    >>> from diffana.relax import softmax_hist
    >>> softmax_hist(jnp.array([[0.0, 0.0], [5.0, -5.0]]), 1.0).round(4).tolist()
    [1.5, 0.5]
    """
    where = "diffana.relax.softmax_hist"
    if hard:
        return hard_softmax_hist(logits, temperature, weights)
    if temperature is None:
        raise ValueError(f"{where}: 'temperature' must be > 0, got None")
    logits, w = _softmax_operands(where, logits, temperature, weights)
    check_positive(temperature, "temperature", where)
    t = as_float(temperature, "temperature", where)
    p = jax.nn.softmax(logits / t, axis=-1)
    return jnp.sum(p * w[:, None], axis=0)


def hard_softmax_hist(
    logits: Float[ArrayLike, "events bins"],
    temperature: Float[ArrayLike, ""] | None = None,
    weights: Float[ArrayLike, " events"] | None = None,
) -> Float[Array, " bins"]:
    """Hard twin of [`softmax_hist`][diffana.relax.softmax_hist]: arg-max binning.

    Each event's weight goes to the bin of its largest logit (the first such bin on a
    tie). `temperature` is accepted and ignored.

    **Returns:** the counts, shape `(bins,)`, float64 (differentiable in `weights` only).
    """
    where = "diffana.relax.hard_softmax_hist"
    logits, w = _softmax_operands(where, logits, temperature, weights)
    idx = jnp.argmax(logits, axis=-1)
    return jnp.zeros(logits.shape[1], dtype=logits.dtype).at[idx].add(w)
