"""Trainable, always-ordered bin edges."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.test_util import check_grads

from diffana.relax import hist, ordered_edges, ordered_edges_inverse
from diffana.testing import assert_grad_matches_fd

_edges = jax.jit(ordered_edges)


@settings(max_examples=40, deadline=None)
@given(
    params=arrays(np.float64, 6, elements=st.floats(-30, 30)),
    lo=st.floats(-1e3, 1e3),
    width=st.floats(1e-3, 1e3),
)
@example(params=np.array([-24.0, 0, 0, 0, 0, 0]), lo=512.0, width=0.00390625)  # ties at lo
def test_edges_always_ordered_from_lo_to_hi(params, lo, width):
    hi = lo + width
    e = np.asarray(_edges(params, lo, hi))
    assert e.shape == (7,)
    assert e[0] == lo and e[-1] == hi
    assert np.all(np.diff(e) >= 0)
    # only widths below float64's resolution at the edges may tie (tiny softmax weights,
    # or a narrow range far from zero)
    frac = np.exp(params - params.max())
    frac /= frac.sum()
    resolvable = width * frac > 4 * np.spacing(max(abs(lo), abs(hi)))
    assert np.all(np.diff(e)[resolvable] > 0)


@settings(max_examples=25, deadline=None)
@given(widths=arrays(np.float64, 5, elements=st.floats(1e-3, 10.0)), lo=st.floats(-10, 10))
def test_inverse_round_trip(widths, lo):
    edges = lo + np.concatenate([[0.0], np.cumsum(widths)])
    back = ordered_edges(ordered_edges_inverse(edges), edges[0], edges[-1])
    np.testing.assert_allclose(back, edges, rtol=1e-12, atol=1e-12 * np.abs(edges).max())
    params = ordered_edges_inverse(edges)
    assert abs(float(jnp.mean(params))) < 1e-12  # centred: the shift gauge is fixed


def test_shift_invariance_and_gradients():
    p = jnp.array([0.3, -0.2, 1.1, 0.0])
    np.testing.assert_allclose(ordered_edges(p + 5.0, 0.0, 1.0), ordered_edges(p, 0.0, 1.0))
    check_grads(jax.jit(ordered_edges), (p, -1.0, 2.0), order=1)
    weights = jnp.arange(5.0)
    assert_grad_matches_fd(lambda v: jnp.sum(weights * ordered_edges(v, -1.0, 2.0) ** 2), p)
    g = jax.grad(lambda v: jnp.sum(ordered_edges(v, -1.0, 2.0)))(p)
    np.testing.assert_allclose(jnp.sum(g), 0.0, atol=1e-12)  # shift gauge: no gradient


def test_trainable_binning_end_to_end(events):
    # Gradient of a figure of merit of a KDE histogram with respect to the edge parameters.
    x, w = events
    target = jnp.array([2.0, 1.0, 1.0, 2.0])

    def loss(params):
        counts = hist(x, ordered_edges(params, -2.0, 2.0), 0.2, w, overflow="fold")
        return jnp.sum(counts / jnp.sum(counts) * target)

    p0 = ordered_edges_inverse(jnp.array([-2.0, -0.5, 0.0, 0.5, 2.0]))
    assert_grad_matches_fd(loss, p0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ordered_edges(np.zeros(3), 1.0, 1.0), "need finite 'lo' < 'hi'"),
        (lambda: ordered_edges(np.zeros(3), 0.0, np.inf), "need finite 'lo' < 'hi'"),
        (lambda: ordered_edges(np.zeros((3, 2)), 0.0, 1.0), "'params' must have shape"),
        (lambda: ordered_edges(np.zeros(0), 0.0, 1.0), "'params' needs at least one bin"),
        (lambda: ordered_edges(np.zeros(3), np.zeros(2), 1.0), "'lo' must have shape"),
        (lambda: ordered_edges_inverse(np.array([0.0, 1.0, 1.0])), "strictly increasing"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
