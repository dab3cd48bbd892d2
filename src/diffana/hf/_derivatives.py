"""The fit objective of a HistFactory model and its exact gradient and Hessian.

Fits minimise the *relative* NLL: each Poisson term (main bins and shapesys
constraints) measured from its value at ``rate = count`` (the saturated model), each
Gaussian constraint without its ``log sqrt(2 pi)``. The two differ by a constant of the
data, `nll_offset`, which can be huge: a shapesys constraint with ``tau = 1.9e11`` has
``lgamma(tau + 1) ~ 4.7e12``, and float64 resolves an NLL of that size only in steps of
``2^-10``. The relative NLL is a sum of small terms, each computed as
``n (r - log1p(r))`` with ``r = (rate - n) / n``, exact to round-off at any scale.

Its derivatives with respect to the data are defined as the NLL's (a custom JVP), so
that implicit gradients of fitted minima, and differences of minima on the same data
(test statistics), are those of pyhf's likelihood.

The Hessian is assembled in closed form from the model's structure instead of by
forward-over-reverse differentiation (one gradient per parameter). Every sample's
rate in every bin is ``A * M``, an additive part (nominal plus histosys deltas, each
a function of one parameter) times a product of factors (normfactor, lumi, normsys,
staterror, shapesys, shapefactor), each a function of one parameter, no parameter
twice in one product. With ``u = d log M / d theta`` (sparse: a row per sample and bin)
and ``dA = d A / d theta``, the rate's Hessian is
``M d2A + M (dA u^T + u dA^T) + A M (u u^T - diag(u^2) + diag(f'' / f))``, so the
Hessian of the NLL is a handful of matrix products whose number does not grow with the
number of modifiers, and whose cost is ``parameters^2 x samples x bins``. Where each row
holds few factors among many parameters (3L resonance: about 6 of 625), the two largest
products, ``u^T diag(a) u`` and ``dA diag(b) u``, are summed instead over the pairs of
entries that share a row (a static list in the :class:`Layout`), whose number is the
cost. Where both products are dense, they run over (sample, channel) pairs instead of
rows (:class:`Grouped`): the channel-wide factors (normfactor, lumi, normsys) are the
same in every bin of a channel, so their part of ``u`` has one row per (sample,
channel), the weights are summed over each channel's bins first, and the few per-bin
factors (staterror, shapesys, shapefactor) are added entry by entry (sbottom: 27 rows
instead of 81; 1Lbb: 80 instead of 140, whose 7346 gathered entries become 4250 in
order). A factor that
is exactly zero (a normfactor at 0) is replaced by a tiny number in ``u`` and in the
product it multiplies: the products ``M u`` and ``M u u^T`` (off the diagonal) are then
exact, and the diagonal is assembled separately.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln
from jaxtyping import Array, Float

from diffana.hf._interp import histosys_coefficients

__all__ = [
    "Layout",
    "layout",
    "poisson_relative_nll",
    "poisson_saturated_nll",
    "value_grad_hess",
]

# Stand-in for a factor that is exactly zero in the products of the Hessian (see the
# module docstring): small enough never to be confused with a real factor's effect,
# large enough that a product of ten of them does not underflow.
_TINY = 1e-30
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


# ----------------------------------------------------------------------------------------
# the Poisson term relative to the saturated model
# ----------------------------------------------------------------------------------------
def _poisson_rel_value(n: Array, lam: Array) -> Array:
    positive_n = n > 0
    n_safe = jnp.where(positive_n, n, 1.0)
    r = (lam - n) / n_safe
    # r - log1p(r) >= 0, exact to round-off for small |r|; +inf at lam <= 0 (r <= -1)
    inside = r > -1.0
    term = n * (r - jnp.log1p(jnp.where(inside, r, 0.0)))
    with_counts = jnp.where(inside, term, jnp.inf)
    return jnp.where(positive_n, with_counts, lam)


@jax.custom_jvp
def poisson_relative_nll(n: Array, lam: Array) -> Array:
    """``-log Poisson(n | lam)`` minus its value at ``lam = n``, element-wise.

    ``lam - n - n log(lam / n)``, written as ``n (r - log1p(r))`` with
    ``r = (lam - n) / n``: exact to round-off however large `n` is. ``lam`` for
    ``n = 0`` (as pyhf's, also below zero); ``+inf`` where ``lam <= 0 < n``.

    Its derivatives are those of ``-log Poisson(n | lam)`` (``lgamma(n + 1)`` included):
    ``1 - n / lam`` in `lam` and ``digamma(n + 1) - log(lam)`` in `n`. The saturated
    value it omits depends on `n` alone, so differences of these terms at equal `n`,
    and all derivatives, are the NLL's.
    """
    return _poisson_rel_value(n, lam)


@poisson_relative_nll.defjvp
def _poisson_relative_nll_jvp(primals, tangents):
    n, lam = primals
    dn, dlam = tangents
    value = poisson_relative_nll(n, lam)
    positive = lam > 0
    lam_safe = jnp.where(positive, lam, 1.0)
    d_lam = jnp.where(n > 0, 1.0 - n / lam_safe, 1.0)
    d_n = digamma(n + 1.0) - jnp.log(lam_safe)
    return value, d_lam * dlam + d_n * dn


def poisson_saturated_nll(n: Array) -> Array:
    """``-log Poisson(n | n)`` (``0 log 0 = 0``): the constant `poisson_relative_nll`
    omits."""
    positive = n > 0
    n_log_n = jnp.where(positive, n * jnp.log(jnp.where(positive, n, 1.0)), 0.0)
    return n - n_log_n + gammaln(n + 1.0)


# ----------------------------------------------------------------------------------------
# the static layout of the multiplicative factors
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Layout:
    """Where each factor of each sample's rate in each bin comes from (static).

    Rows are ``sample * nbins + bin``. Factor `e` of row ``rows[e]`` is entry
    ``sources[e]`` of ``[pars, normsys factors, 1]`` and depends on parameter
    ``pars_of[e]`` alone.
    """

    rows: np.ndarray
    sources: np.ndarray
    pars_of: np.ndarray
    # False where a parameter appears twice in one product (the closed form then does
    # not apply and the Hessian is computed by automatic differentiation)
    closed_form: bool
    # histosys parameters are 0 .. n_histosys - 1 in order (pyhf's order puts them first)
    hs_leading: bool
    # Sparse forms of the Hessian's two largest products, where they are cheaper than the
    # dense ones (None otherwise; see :func:`_sparse_pairs`):
    # ``u^T diag(a) u`` off the diagonal: pairs of entries `(e1, e2)` of one row, with
    # that row and their flat destination ``pars_of[e1] * npars + pars_of[e2]``;
    uu_pairs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None
    # ``dA diag(b) u``: pairs of a histosys `h` and an entry `e` of a row the histosys
    # changes, with that row, the flat index ``h * rows + row`` of `dA` and their
    # destination ``hs_par[h] * npars + pars_of[e]``.
    cross_pairs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None
    # flat index ``bin * npars + parameter`` of each entry in the Jacobian of the rates
    jac_dest: np.ndarray
    # The products by (sample, channel) (see :class:`Grouped`), where both products of
    # the Hessian are dense; None otherwise.
    grouped: Grouped | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Grouped:
    """The factors of a model's rates by (sample, channel) (static).

    A channel-wide factor (normfactor, lumi, normsys) is the same in every bin of its
    channel, so the products of the Hessian that run over rows (sample, bin) can run
    over the fewer (sample, channel) pairs `sc = sample * channels + channel` with
    per-bin weights summed over each channel's bins, and the per-bin factors
    (staterror, shapesys, shapefactor) added entry by entry. Entries of channel-wide
    factors are ordered so that their values are `u[params]` (a small gather) followed
    by the normsys factors in their own order where each normsys entry is used once
    (`ns_slice`), which saves gathering thousands of entries.
    """

    nsc: int
    # (bins, channels) one-hot: the channel of each bin
    channel_of_bin: np.ndarray
    # channel-wide entries: their (sample, channel), parameter and source
    ch_sc: np.ndarray
    ch_par: np.ndarray
    ch_src: np.ndarray
    # (start, stop) of the normsys sources when `ch_src` ends with all of them in order,
    # each once; `ch_src[:-(stop - start)]` are then the other sources
    ns_slice: tuple[int, int] | None
    # per-bin entries: their row (sample * bins + bin), (sample, channel), parameter and
    # source
    bin_row: np.ndarray
    bin_sc: np.ndarray
    bin_par: np.ndarray
    bin_src: np.ndarray
    # sums of per-bin entries by parameter: the (distinct parameters, entries) one-hot
    # matrix, and for each parameter its row among them (or the count: none)
    bin_onehot: np.ndarray
    bin_place: np.ndarray
    # pairs of distinct per-bin entries of one row (rows with several per-bin factors):
    # their entries and flat destination ``par1 * npars + par2``
    bin_pairs: tuple[np.ndarray, np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=256)
def layout(st: Any) -> Layout:
    """The :class:`Layout` of a model's `Structure` (cached per structure)."""
    nbins, npars = st.nbins, st.npars
    one = npars + st.ns_par.size
    par_of_source = np.concatenate([np.arange(npars), st.ns_par, [-1]]).astype(np.int64)
    # channel-wide factors: one entry per bin of the channel (channels hold consecutive
    # bins), built without a Python loop over (modifier, sample, channel)
    chan_nbins = np.asarray(st.channel_nbins, dtype=np.int64)
    chan_start = np.concatenate([[0], np.cumsum(chan_nbins)[:-1]]).astype(np.int64)
    ck, cs, cc = np.nonzero(st.channel_fac_idx != one)
    counts = chan_nbins[cc]
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    chan_rows = np.repeat(cs * nbins + chan_start[cc], counts) + within
    chan_src = np.repeat(st.channel_fac_idx[ck, cs, cc], counts)
    bk, bs, bb = np.nonzero(st.bin_fac_idx != one)
    rows_a = np.concatenate([chan_rows, bs * nbins + bb]).astype(np.int64)
    src_a = np.concatenate([chan_src, st.bin_fac_idx[bk, bs, bb]]).astype(np.int64)
    order = np.lexsort((src_a, rows_a))
    rows_a, src_a = rows_a[order], src_a[order]
    pars_a = par_of_source[src_a]
    pairs = rows_a * (npars + 1) + pars_a
    closed_form = np.unique(pairs).size == pairs.size
    n_hs = st.hs_par.size
    hs_leading = bool(np.array_equal(st.hs_par, np.arange(n_hs)))
    nrows = len(st.samples) * nbins
    uu_pairs = cross_pairs = None
    if closed_form:
        uu_pairs = _sparse_pairs(rows_a, pars_a, nrows, npars)
        if n_hs:
            support = st.hs_hi_gather.reshape(n_hs, nrows) != st.nraw
            support |= st.hs_lo_gather.reshape(n_hs, nrows) != st.nraw
            cross_pairs = _sparse_cross(support, st.hs_par, rows_a, pars_a, npars)
    jac_dest = (rows_a % nbins) * npars + pars_a
    grouped = None
    if closed_form and uu_pairs is None and cross_pairs is None:
        grouped = _grouped(st, par_of_source, one)
        if grouped.bin_onehot.size > _ONEHOT_MAX:
            grouped = None  # a constant too large for the program: the rows' products
    return Layout(
        rows_a,
        src_a,
        pars_a,
        bool(closed_form),
        hs_leading,
        uu_pairs,
        cross_pairs,
        jac_dest,
        grouped,
    )


# Largest one-hot matrix of per-bin entries (distinct parameters x entries) that the
# grouped products embed in a compiled program (4M doubles: 32 MiB).
_ONEHOT_MAX = 2**22


def _grouped(st: Any, par_of_source: np.ndarray, one: int) -> Grouped:
    """The :class:`Grouped` layout of a structure whose products are closed-form."""
    nbins, npars, nchan = st.nbins, st.npars, len(st.channel_nbins)
    chan = np.repeat(np.arange(nchan), np.asarray(st.channel_nbins, dtype=np.int64))
    channel_of_bin = (chan[:, None] == np.arange(nchan)[None, :]).astype(np.float64)
    ck, cs, cc = np.nonzero(st.channel_fac_idx != one)
    ch_src = st.channel_fac_idx[ck, cs, cc].astype(np.int64)
    ch_sc = (cs * nchan + cc).astype(np.int64)
    # by source: parameters (0 .. npars - 1) first, then the normsys factors in order
    order = np.lexsort((ch_sc, ch_src))
    ch_src, ch_sc = ch_src[order], ch_sc[order]
    n_ns = one - npars
    ns_slice = None
    if n_ns and np.array_equal(ch_src[ch_src >= npars], np.arange(npars, one)):
        ns_slice = (npars, one)
    bk, bs, bb = np.nonzero(st.bin_fac_idx != one)
    bin_src = st.bin_fac_idx[bk, bs, bb].astype(np.int64)
    bin_row = (bs * nbins + bb).astype(np.int64)
    order = np.lexsort((bin_src, bin_row))
    bin_src, bin_row = bin_src[order], bin_row[order]
    bin_par = par_of_source[bin_src]
    bin_sc = (bin_row // nbins) * nchan + chan[bin_row % nbins]
    counts = np.bincount(bin_row, minlength=len(st.samples) * nbins)
    starts = np.concatenate([[0], np.cumsum(counts)])
    e1, e2 = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for r in np.flatnonzero(counts > 1):
        a, b = np.meshgrid(*[np.arange(starts[r], starts[r + 1])] * 2, indexing="ij")
        e1.append(a[a != b])
        e2.append(b[a != b])
    e1, e2 = np.concatenate(e1), np.concatenate(e2)
    distinct, which = np.unique(bin_par, return_inverse=True)
    bin_onehot = (np.arange(distinct.size)[:, None] == which[None, :]).astype(np.float64)
    bin_place = np.full(npars, distinct.size, dtype=np.int64)
    bin_place[distinct] = np.arange(distinct.size)
    return Grouped(
        nsc=len(st.samples) * nchan,
        channel_of_bin=channel_of_bin,
        ch_sc=ch_sc,
        ch_par=par_of_source[ch_src],
        ch_src=ch_src,
        ns_slice=ns_slice,
        bin_row=bin_row,
        bin_sc=bin_sc.astype(np.int64),
        bin_par=bin_par,
        bin_src=bin_src,
        bin_onehot=bin_onehot,
        bin_place=bin_place,
        bin_pairs=(e1, e2, bin_par[e1] * npars + bin_par[e2]),
    )


# A sparse product replaces a dense one when its pairs number less than the dense
# product's multiply-adds divided by this. Measured on a 2-core CPU (`nll_derivatives`
# timed in a jitted loop, each form forced), per evaluation, sparse against dense: 3L resonance (31k
# pairs against 160M multiply-adds) 1.5-2.0 against 6.3-9.8 ms, compressed
# electroweakinos (131k against 20M) 1.0-1.5 against 1.1-1.6 ms, 1Lbb (444k against
# 2.2M) 6.0-7.2 against 0.5-0.7 ms, sbottom (9k against 0.36M) 0.22 against 0.07 ms:
# a scattered pair, its gathers included, costs about as much as 50-150 multiply-adds
# of a dense product. The first two take the sparse products, the others the dense.
_SPARSE_COST = 50


def _sparse_pairs(rows: np.ndarray, pars_of: np.ndarray, nrows: int, npars: int):
    """Pairs of distinct entries of one row (both orders), sorted by destination, or
    None where the dense product ``u^T diag(a) u`` (`nrows x npars^2`) is cheaper."""
    counts = np.bincount(rows, minlength=nrows)
    if int(np.sum(counts * (counts - 1))) * _SPARSE_COST >= nrows * npars * npars:
        return None
    starts = np.concatenate([[0], np.cumsum(counts)])
    e1, e2 = [], []
    for r in np.flatnonzero(counts > 1):
        idx = np.arange(starts[r], starts[r + 1])
        a, b = np.meshgrid(idx, idx, indexing="ij")
        off = a != b
        e1.append(a[off])
        e2.append(b[off])
    if not e1:
        return None
    e1_a, e2_a = np.concatenate(e1), np.concatenate(e2)
    dest = pars_of[e1_a] * npars + pars_of[e2_a]
    order = np.argsort(dest, kind="stable")
    e1_a, e2_a, dest = e1_a[order], e2_a[order], dest[order]
    return rows[e1_a], e1_a, e2_a, dest


def _sparse_cross(support: np.ndarray, hs_par: np.ndarray, rows, pars_of, npars: int):
    """Pairs of a histosys and an entry of a row it changes, sorted by destination, or
    None where the dense product ``dA diag(b) u`` (`n_hs x nrows x npars`) is cheaper."""
    n_hs, nrows = support.shape
    h, e = np.nonzero(support[:, rows])
    if h.size * _SPARSE_COST >= n_hs * nrows * npars:
        return None
    dest = hs_par[h] * npars + pars_of[e]
    order = np.argsort(dest, kind="stable")
    h, e, dest = h[order], e[order], dest[order]
    return rows[e], h * nrows + rows[e], e, dest


# ----------------------------------------------------------------------------------------
# value, gradient and Hessian
# ----------------------------------------------------------------------------------------
def _elementwise_derivatives(fun, x: Array):
    """`fun(x)`, its first and its second derivative, for an element-wise `fun`
    (a tuple of arrays or an array)."""
    ones = jnp.ones_like(x)

    def first(x_):
        return jax.jvp(fun, (x_,), (ones,))

    def second(x_):
        return jax.jvp(lambda y: first(y)[1], (x_,), (ones,))

    value, d1 = first(x)
    _, d2 = second(x)
    return value, d1, d2


def _hessian_rows(block: Array, leading: bool, index: np.ndarray, npars: int) -> Array:
    """A `(k, m)` block placed at rows `index` of an `(npars, m)` matrix."""
    k, m = block.shape
    if leading:
        return jnp.concatenate([block, jnp.zeros((npars - k, m), block.dtype)], axis=0)
    return jnp.zeros((npars, m), block.dtype).at[index].set(block)


def _columns(block: Array, leading: bool, index: np.ndarray, npars: int) -> Array:
    """A `(rows, k)` block placed at columns `index` of a `(rows, npars)` matrix."""
    k = block.shape[1]
    if leading:
        pad = jnp.zeros((block.shape[0], npars - k), block.dtype)
        return jnp.concatenate([block, pad], axis=1)
    return jnp.zeros((block.shape[0], npars), block.dtype).at[:, index].set(block)


def _scatter_square(values: Array, dest: np.ndarray, n: int) -> Array:
    """The `(n, n)` matrix of the sums of `values` at their flat (sorted) `dest`."""
    flat = jnp.zeros(n * n, values.dtype).at[dest].add(values, indices_are_sorted=True)
    return flat.reshape(n, n)


def _hs_entries(values: Array, leading: bool, index: np.ndarray, npars: int) -> Array:
    """A vector of the histosys parameters' `values` placed at `index` of `(npars,)`."""
    if leading:
        return jnp.concatenate([values, jnp.zeros(npars - values.shape[0], values.dtype)])
    return jnp.zeros(npars, values.dtype).at[index].set(values)


def _grouped_derivatives(
    g: Grouped, st: Any, leading: bool, add, mult, mult_safe, d_add, u_src, r_src, w, v
):  # fmt: skip
    """The gradient `(npars,)`, the Hessian without its diagonal terms and without the
    histosys second derivatives `(npars, npars)`, and those diagonal terms `(npars,)`,
    from the products by (sample, channel) of :class:`Grouped` (the constraints are
    added by the caller).

    `leading`: the histosys parameters come first (:attr:`Layout.hs_leading`); `add`,
    `mult`, `mult_safe`: the additive part and the products of the factors,
    exact and with zero factors replaced, `(samples, bins)`; `d_add`: `dA`
    `(histosys, samples * bins)` or None; `u_src`, `r_src`: each source's first and
    second derivative over its (safe) value; `w`, `v`: the Poisson terms' first and
    second derivatives in each bin's rate.
    """
    npars, nbins = st.npars, st.nbins
    nsamp, nsc = add.shape[0], g.nsc
    dtype = add.dtype
    onehot = jnp.asarray(g.channel_of_bin, dtype)  # (bins, channels)
    am = add * mult_safe  # A M, zero factors replaced (exact in A M u)
    a = w[None, :] * am
    a_sc = _sum_channels(a, st.channel_nbins, onehot).reshape(nsc)  # over a channel's bins
    # the channel-wide entries' log-derivatives, dense by (sample, channel)
    if g.ns_slice is not None:
        lo, hi = g.ns_slice
        n_par = g.ch_src.size - (hi - lo)
        u_ch = jnp.concatenate([u_src[g.ch_src[:n_par]], u_src[lo:hi]])
        r_ch = jnp.concatenate([r_src[g.ch_src[:n_par]], r_src[lo:hi]])
    else:
        u_ch, r_ch = u_src[g.ch_src], r_src[g.ch_src]
    where = (g.ch_sc, g.ch_par)
    u = jnp.zeros((nsc, npars), dtype).at[where].set(u_ch, unique_indices=True)
    # its transpose, built as such: products of untransposed operands are faster on a CPU
    u_t = jnp.zeros((npars, nsc), dtype).at[where[::-1]].set(u_ch, unique_indices=True)
    r = jnp.zeros((nsc, npars), dtype).at[where].set(r_ch, unique_indices=True)
    # the per-bin entries
    u_b = u_src[g.bin_src]
    am_b = am.reshape(-1)[g.bin_row]
    a_b = w[g.bin_row % nbins] * am_b
    # Jacobian of the rates (bins, npars): sum over samples of A M u, then M dA
    weights_t = (am[:, None, :] * onehot.T[None, :, :]).reshape(nsc, nbins)
    jac_t = (u_t @ weights_t).at[g.bin_par, g.bin_row % nbins].add(am_b * u_b)
    if d_add is not None:
        n_hs = d_add.shape[0]
        jac_hs = _sum_samples(d_add.reshape(n_hs, nsamp, nbins) * mult[None])
        jac_t = jac_t + _hessian_rows(jac_hs, leading, st.hs_par, npars)
    grad = jac_t @ w
    hess = jac_t @ (v[:, None] * jac_t.T)
    # A M (u u^T - diag(u^2)): channel-wide pairs by (sample, channel); a per-bin entry
    # with the channel-wide ones of its row (both orders); per-bin pairs of one row
    uu = u_t @ (a_sc[:, None] * u)
    hess = hess + jnp.where(jnp.eye(npars, dtype=bool), 0.0, uu)
    half = _by_parameter(g, (a_b * u_b)[:, None] * u[g.bin_sc])
    hess = hess + half + half.T
    e1, e2, dest = g.bin_pairs
    if e1.size:
        pairs = jnp.zeros(npars * npars, dtype).at[dest].add(a_b[e1] * u_b[e1] * u_b[e2])
        hess = hess + pairs.reshape(npars, npars)
    diag = a_sc @ r + jnp.zeros(npars, dtype).at[g.bin_par].add(a_b * r_src[g.bin_src])
    if d_add is not None:
        # M (dA u^T + u dA^T): dA summed over each channel's bins with the weights
        b = w[None, :] * mult_safe
        d_sc = _sum_channels(d_add.reshape(n_hs, nsamp, nbins) * b[None], st.channel_nbins, onehot)
        cross = _hessian_rows(d_sc.reshape(n_hs, nsc) @ u, leading, st.hs_par, npars)
        # the per-bin entries' part, transposed: a row per parameter, a column per histosys
        b_b = b.reshape(-1)[g.bin_row]
        cross_bin = _by_parameter(g, d_add.T[g.bin_row] * (b_b * u_b)[:, None])
        cross = cross + _hessian_rows(cross_bin.T, leading, st.hs_par, npars)
        hess = hess + cross + cross.T
    return grad, hess, diag


# Largest number of terms summed by element-wise additions of slices (see
# :func:`_sum_samples`); more go through a reduction or a product.
_UNROLLED_SUM_MAX = 32


def _sum_samples(x: Array) -> Array:
    """`x` `(k, samples, bins)` summed over samples: a few slices added element-wise, which
    fuse into one loop (a reduction over the middle axis of so small an array, or a
    product with a one-hot matrix, takes several times longer on a CPU)."""
    if x.shape[1] > _UNROLLED_SUM_MAX:
        return jnp.sum(x, axis=1)
    out = x[:, 0]
    for s_ in range(1, x.shape[1]):
        out = out + x[:, s_]
    return out


def _sum_channels(x: Array, channel_nbins: tuple[int, ...], onehot: Array) -> Array:
    """`x` `(..., bins)` summed over each channel's bins (channels hold consecutive bins),
    `(..., channels)`: by slices added element-wise where there are few bins, else as a
    product with the `(bins, channels)` one-hot matrix `onehot`."""
    if x.shape[-1] > _UNROLLED_SUM_MAX:
        return x @ onehot
    cols, start = [], 0
    for n in channel_nbins:
        col = x[..., start]
        for b in range(start + 1, start + n):
            col = col + x[..., b]
        cols.append(col)
        start += n
    return jnp.stack(cols, axis=-1)


def _by_parameter(g: Grouped, x: Array) -> Array:
    """`x`, one row per per-bin entry, summed into one row per parameter, `(npars, ...)`:
    a product with the static one-hot matrix of the entries' distinct parameters, then
    a gather that places them. (Scattering the entries' rows instead compiles to a loop
    over the entries under XLA's classic CPU emitters, which fits use.)"""
    summed = jnp.asarray(g.bin_onehot, x.dtype) @ x
    zero = jnp.zeros((1, *x.shape[1:]), x.dtype)
    return jnp.concatenate([summed, zero])[g.bin_place]


def value_grad_hess(
    model: Any, pars: Float[Array, " npars"], data: Float[Array, " data"]
) -> tuple[Float[Array, ""], Float[Array, " npars"], Float[Array, "npars npars"]]:
    """The relative NLL (see the module docstring), its gradient `(npars,)` and its
    Hessian `(npars, npars)` at `pars`, in closed form, for a `diffana.hf.Model` whose
    `layout` allows it (`Model.nll_derivatives` checks)."""
    st = model.structure
    lay = layout(st)
    npars, nbins, nsamp = st.npars, st.nbins, len(st.samples)
    nrows = nsamp * nbins
    main, aux = data[:nbins], data[nbins:]

    # the additive part A and its derivatives in the histosys parameters
    n_hs = st.hs_par.size
    add = model.nominal
    if n_hs:
        alpha = pars[:n_hs] if lay.hs_leading else pars[st.hs_par]
        code = st.histosys_code
        (c_up, c_dn), (d1_up, d1_dn), (d2_up, d2_dn) = _elementwise_derivatives(
            lambda a: histosys_coefficients(code, a), alpha
        )
        up = model.hs_deltas[:n_hs].reshape(n_hs, nrows)
        dn = model.hs_deltas[n_hs:].reshape(n_hs, nrows)
        add = add + (c_up @ up + c_dn @ dn).reshape(nsamp, nbins)
        d_add = d1_up[:, None] * up + d1_dn[:, None] * dn  # (n_hs, rows)
        d2_add = d2_up[:, None] * up + d2_dn[:, None] * dn

    # the factors, their first and second derivatives in their parameter
    src, d1_src, d2_src = model._factor_sources(pars, derivatives=True)
    safe = jnp.where(src == 0, _TINY, src)
    mult = model._factor_product(src)  # (S, B)
    mult_safe = model._factor_product(safe)
    a_flat, m_flat, ms_flat = add.ravel(), mult.ravel(), mult_safe.ravel()
    rate_sb = add * mult
    rate = jnp.sum(rate_sb, axis=0)

    # the value
    value = jnp.sum(poisson_relative_nll(main, rate))
    value = value + model._constraint_relative_nll(pars, aux)

    # per-bin weights of the Poisson terms: d term / d rate and d2 term / d rate2
    positive = rate > 0
    rate_safe = jnp.where(positive, rate, 1.0)
    w = jnp.where(main > 0, 1.0 - main / rate_safe, 1.0)
    v = main / rate_safe**2
    w_rows = jnp.tile(w, nsamp)

    if lay.grouped is not None:
        grad, hess, diag = _grouped_derivatives(
            lay.grouped, st, lay.hs_leading, add, mult, mult_safe, d_add if n_hs else None,
            d1_src / safe, d2_src / safe, w, v,
        )  # fmt: skip
        if n_hs:
            d2 = d2_add @ (w_rows * m_flat)
            diag = diag + _hs_entries(d2, lay.hs_leading, st.hs_par, npars)
        g_c, h_c = model._constraint_derivatives(pars, aux)
        return value, grad + g_c, hess + jnp.diag(diag + h_c)

    # sparse log-derivatives u of the products, one entry per factor of a row
    f_e = safe[lay.sources]
    u_e = d1_src[lay.sources] / f_e
    rate_safe_rows = a_flat * ms_flat  # A M, with zero factors replaced (exact in A M u)
    # d rate_b / d pars: the factors' part entry by entry (A M u summed over samples),
    # the histosys part from dA (M dA summed over samples, as a product)
    jac = (
        jnp.zeros(nbins * npars, pars.dtype)
        .at[lay.jac_dest]
        .add(rate_safe_rows[lay.rows] * u_e)
        .reshape(nbins, npars)
    )
    if n_hs:
        jac_hs = jnp.einsum(
            "hsb,sb->hb", d_add.reshape(n_hs, nsamp, nbins), m_flat.reshape(nsamp, nbins)
        )
        jac = jac + _columns(jac_hs.T, lay.hs_leading, st.hs_par, npars)
    if lay.uu_pairs is None or lay.cross_pairs is None:
        u = (
            jnp.zeros((nrows, npars), pars.dtype)
            .at[lay.rows, lay.pars_of]
            .set(u_e, unique_indices=True)
        )

    grad = jac.T @ w
    hess = jac.T @ (v[:, None] * jac)
    a_rows = w_rows * rate_safe_rows
    if lay.uu_pairs is None:
        uu = u.T @ (a_rows[:, None] * u)
        hess = hess + jnp.where(jnp.eye(npars, dtype=bool), 0.0, uu)
    else:
        # distinct entries of a row belong to distinct parameters: off the diagonal
        row, e1, e2, dest = lay.uu_pairs
        hess = hess + _scatter_square(a_rows[row] * u_e[e1] * u_e[e2], dest, npars)
    diag = (
        jnp.zeros(npars, pars.dtype)
        .at[lay.pars_of]
        .add(a_rows[lay.rows] * d2_src[lay.sources] / f_e)
    )
    if n_hs:
        b_rows = w_rows * ms_flat
        if lay.cross_pairs is None:
            cross = d_add @ (b_rows[:, None] * u)  # (n_hs, npars)
            cross = _hessian_rows(cross, lay.hs_leading, st.hs_par, npars)
        else:
            row, at, e, dest = lay.cross_pairs
            cross = _scatter_square(jnp.ravel(d_add)[at] * b_rows[row] * u_e[e], dest, npars)
        hess = hess + cross + cross.T
        d2 = d2_add @ (w_rows * m_flat)
        diag = diag + _hs_entries(d2, lay.hs_leading, st.hs_par, npars)
    g_c, h_c = model._constraint_derivatives(pars, aux)
    grad = grad + g_c
    hess = hess + jnp.diag(diag + h_c)
    return value, grad, hess
