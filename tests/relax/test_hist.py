"""Kernel-density and softmax histograms against their hard twins, gradients, bad input."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from jax.test_util import check_grads

from diffana.relax import hard_hist, hard_softmax_hist, hist, softmax_hist
from diffana.testing import assert_grad_matches_fd

EDGES = np.linspace(-2.0, 2.0, 9)  # width 0.5, on the grid the events fixture avoids


@pytest.mark.parametrize("overflow", ["drop", "fold"])
def test_hard_twin_is_numpy_histogram(events, overflow):
    x, w = events
    ref = np.histogram(
        np.clip(x, EDGES[0], EDGES[-1] - 1e-9) if overflow == "fold" else x, EDGES, weights=w
    )[0]
    np.testing.assert_allclose(hard_hist(x, EDGES, None, w, overflow), ref, rtol=1e-12)


@pytest.mark.parametrize("overflow", ["drop", "fold"])
def test_converges_to_hard_twin(events, overflow):
    x, w = events
    hard = np.asarray(hard_hist(x, EDGES, None, w, overflow))
    errors = [
        np.max(np.abs(hist(x, EDGES, h, w, overflow) - hard)) for h in (1e-1, 1e-2, 1e-3, 1e-4)
    ]
    assert errors[-1] < 1e-9 * w.sum()
    assert all(b <= a for a, b in itertools.pairwise(errors)), errors
    assert errors[0] > 1e-3  # the soft histogram really is soft at a large bandwidth


def test_fold_conserves_mass_and_drop_loses_tails(events):
    x, w = events
    for h in (1e-3, 0.3, 3.0, 30.0):
        folded = hist(x, EDGES, h, w, "fold")
        assert float(jnp.sum(folded)) == pytest.approx(w.sum(), rel=1e-13)
        assert float(jnp.sum(hist(x, EDGES, h, w, "drop"))) < w.sum()
        assert np.all(np.asarray(folded) >= 0)


def test_events_within_underflow_of_an_edge():
    # (e - x) / h underflows to 0 here; the step must still follow x < e like hard_hist.
    x = np.array([-3.2e-307, 0.0, 5e-324, 1.0 - 2**-53])
    for h in (15.0, 1e-3):
        counts = hist(x, EDGES, h)
        assert np.all(np.asarray(counts) >= 0), counts
        assert float(jnp.sum(hist(x, EDGES, h, overflow="fold"))) == pytest.approx(4.0)
    # three events (numerically) on the edge 0 and one on the edge 1: half to each side
    expected = [0.0, 0.0, 0.0, 1.5, 1.5, 0.5, 0.5, 0.0]
    np.testing.assert_allclose(hist(x, EDGES, 1e-3), expected, atol=1e-9)


def test_negative_weights_give_negative_counts():
    # NLO samples carry negative weights; the soft and hard counts keep their sign.
    x, w = np.array([0.1, 0.2, 1.1]), np.array([1.0, -3.0, 0.5])
    np.testing.assert_allclose(hist(x, EDGES, 1e-4, w), hard_hist(x, EDGES, None, w), atol=1e-12)
    assert float(hist(x, EDGES, 1e-4, w)[4]) == pytest.approx(-2.0)


def test_weights_respected(events):
    x, w = events
    counts = hist(x, EDGES, 0.2, w)
    per_event = jax.vmap(lambda xi: hist(xi[None], EDGES, 0.2))(jnp.asarray(x))
    np.testing.assert_allclose(counts, w @ per_event, rtol=1e-12)
    # integer weights are repeated events; a scalar weight scales
    xi = np.array([0.1, -0.7, 1.3])
    np.testing.assert_allclose(
        hist(xi, EDGES, 0.2, np.array([2.0, 1.0, 3.0])),
        hist(np.repeat(xi, [2, 1, 3]), EDGES, 0.2),
        rtol=1e-12,
    )
    np.testing.assert_allclose(hist(x, EDGES, 0.2, 2.5), 2.5 * hist(x, EDGES, 0.2), rtol=1e-12)


def test_kernel_integral_by_quadrature():
    # One event: the bin content is the Gaussian's integral over the bin.
    from scipy.stats import norm

    x0, h = 0.37, 0.4
    ref = norm.cdf(EDGES[1:], x0, h) - norm.cdf(EDGES[:-1], x0, h)
    np.testing.assert_allclose(hist(np.array([x0]), EDGES, h), ref, rtol=1e-12, atol=1e-15)


def test_tail_bins_keep_relative_precision():
    # Bins far in either tail of the kernel: no 1 - 1 cancellation, no negative counts.
    from scipy.stats import norm

    edges = np.array([-38.0, -30.0, -20.0, -10.0, -5.0, -1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 38.0])
    x0, h = 0.25, 1.0
    lower = norm.cdf(edges[1:], x0, h) - norm.cdf(edges[:-1], x0, h)
    upper = norm.sf(edges[:-1], x0, h) - norm.sf(edges[1:], x0, h)
    ref = np.where(edges[1:] <= x0, lower, np.where(edges[:-1] >= x0, upper, lower))
    for overflow in ("drop", "fold"):
        got = np.asarray(hist(np.array([x0]), edges, h, overflow=overflow))
        expected = ref.copy()
        if overflow == "fold":
            expected[0] += norm.cdf(edges[0], x0, h)
            expected[-1] += norm.sf(edges[-1], x0, h)
        assert np.all(got > 0)
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=0)


@settings(max_examples=30, deadline=None)
@given(
    x=arrays(np.float64, 7, elements=st.floats(-1e3, 1e3)),
    h=st.floats(1e-6, 1e3),
    overflow=st.sampled_from(["drop", "fold"]),
)
def test_counts_are_never_negative(x, h, overflow):
    edges = np.array([-300.0, -20.0, -1.0, 0.0, 0.5, 3.0, 50.0, 400.0])
    counts = np.asarray(_jit_hist(x, edges, h, overflow=overflow))
    assert np.all(counts >= -1e-15 * x.size), counts
    if overflow == "fold":
        assert counts.sum() == pytest.approx(7.0, rel=1e-13)


_jit_hist = jax.jit(hist, static_argnames="overflow")


def test_chunked_path_matches_dense(events, monkeypatch):
    import diffana.relax._hist as impl

    x, w = events
    dense = hist(x, EDGES, 0.3, w)
    grad = jax.grad(lambda e: jnp.sum(hist(x, e, 0.3, w) ** 2))(jnp.asarray(EDGES))
    monkeypatch.setattr(impl, "_CHUNK_ELEMENTS", 7 * EDGES.size)  # 7 events per chunk
    np.testing.assert_allclose(hist(x, EDGES, 0.3, w), dense, rtol=1e-12)
    grad_chunked = jax.grad(lambda e: jnp.sum(hist(x, e, 0.3, w) ** 2))(jnp.asarray(EDGES))
    np.testing.assert_allclose(grad_chunked, grad, rtol=1e-10)


def test_memory_is_linear_in_events(monkeypatch):
    # Compiled forward+backward never holds events x edges arrays: its scratch memory
    # stays far below one such array and does not grow with the number of chunks.
    import diffana.relax._hist as impl

    monkeypatch.setattr(impl, "_CHUNK_ELEMENTS", 2**15)
    edges = jnp.linspace(-1.0, 1.0, 101)

    def scratch_bytes(n):
        f = jax.value_and_grad(lambda x, w: jnp.sum(hist(x, edges, 0.1, w) ** 2), (0, 1))
        compiled = jax.jit(f).lower(jnp.zeros(n), jnp.ones(n)).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    small, large = scratch_bytes(2**14), scratch_bytes(2**17)
    assert large < 0.25 * 2**17 * 101 * 8  # a quarter of one events x edges array
    assert large - small < 40 * (2**17 - 2**14) * 8  # O(events) growth: per-event vectors


def test_float64_output_from_float32_input(events):
    x, w = events
    out = hist(x.astype(np.float32), EDGES.astype(np.float32), np.float32(0.2), w)
    assert out.dtype == jnp.float64


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("overflow", ["drop", "fold"])
def test_check_grads_all_arguments(overflow):
    # Second order too (fwd-over-rev, as jax.hessian): Fisher matrices may go through hist.
    x = jnp.array([-1.3, -0.2, 0.4, 0.45, 1.9, 2.6])
    w = jnp.array([1.0, 0.5, 2.0, 1.5, 0.7, 1.1])
    e = jnp.asarray(EDGES)
    f = jax.jit(lambda x, e, h, w: hist(x, e, h, w, overflow))
    check_grads(f, (x, e, 0.3, w), order=1, modes=("fwd", "rev"))
    hessian = jax.hessian(lambda h: jnp.sum(f(x, e, h, w) ** 2))(0.3)
    d = 1e-4
    fd = (
        jax.grad(lambda h: jnp.sum(f(x, e, h, w) ** 2))(0.3 + d)
        - jax.grad(lambda h: jnp.sum(f(x, e, h, w) ** 2))(0.3 - d)
    ) / (2 * d)
    np.testing.assert_allclose(hessian, fd, rtol=1e-6)


@pytest.mark.parametrize("overflow", ["drop", "fold"])
def test_gradients_match_finite_differences(overflow):
    x = jnp.array([-1.3, -0.2, 0.4, 0.45, 1.9, 2.6])
    w = jnp.array([1.0, 0.5, 2.0, 1.5, 0.7, 1.1])
    e = jnp.asarray(EDGES)
    target = jnp.arange(1.0, 9.0)

    def loss(counts):
        return jnp.sum((counts - 0.1 * target) ** 2 * target)

    assert_grad_matches_fd(lambda v: loss(hist(v, e, 0.3, w, overflow)), x)
    assert_grad_matches_fd(lambda v: loss(hist(x, v, 0.3, w, overflow)), e)
    assert_grad_matches_fd(lambda v: loss(hist(x, e, v, w, overflow)), jnp.array(0.3))
    assert_grad_matches_fd(lambda v: loss(hist(x, e, v, w, overflow)), jnp.full(6, 0.3))
    assert_grad_matches_fd(lambda v: loss(hist(x, e, 0.3, v, overflow)), w)
    on_edge = jnp.asarray(EDGES[[1, 4, 7]])  # events exactly on edges
    assert_grad_matches_fd(lambda v: loss(hist(v, e, 0.3, None, overflow)), on_edge)
    assert_grad_matches_fd(lambda v: loss(hist(on_edge, v, 0.3, None, overflow)), e)


def test_no_nan_gradient_in_degenerate_cases():
    e = jnp.asarray(EDGES)

    def grads(x, h, w):
        g = jax.grad(lambda x, e, h, w: jnp.sum(hist(x, e, h, w) ** 2), argnums=(0, 1, 2, 3))(
            x, e, h, w
        )
        return [np.asarray(a) for a in g]

    on_edges = jnp.asarray(EDGES[[0, 3, 8]])
    far = jnp.array([-50.0, 50.0])  # every bin empty
    cases = [
        (on_edges, 1e-3, jnp.ones(3)),  # events exactly on edges, narrow kernel
        (on_edges, 1e-150, jnp.ones(3)),  # far into the hard limit
        (far, 0.1, jnp.ones(2)),  # empty bins
        (jnp.array([0.1, 0.3]), 0.2, jnp.zeros(2)),  # all-zero weights
        (jnp.array([jnp.nan, 0.3]), 0.2, jnp.array([0.0, 1.0])),  # NaN padding, weight 0
    ]
    for x, h, w in cases:
        for g in grads(x, jnp.asarray(h), w):
            assert np.all(np.isfinite(g)), (x, h, w, g)


def test_gradient_at_all_zero_weights_is_the_kernel_mass():
    x = jnp.array([-0.3, 0.2, 1.1])
    target = jnp.arange(1.0, 9.0)
    g = assert_grad_matches_fd(lambda v: jnp.sum(hist(x, EDGES, 0.3, v) * target), jnp.zeros(3))
    np.testing.assert_allclose(g, jax.vmap(lambda xi: hist(xi[None], EDGES, 0.3))(x) @ target)


def test_events_far_outside_have_zero_gradient():
    g = jax.grad(lambda x: jnp.sum(hist(x, EDGES, 0.1)))(jnp.array([-30.0, 30.0]))
    np.testing.assert_array_equal(g, 0.0)


# ---------------------------------------------------------------- softmax histogram


def test_softmax_hist_limits_and_mass(rng):
    logits = rng.normal(size=(200, 4)) * 3
    w = rng.uniform(0.5, 2.0, size=200)
    hard = hard_softmax_hist(logits, None, w)
    np.testing.assert_allclose(hard, np.bincount(logits.argmax(1), w, minlength=4), rtol=1e-12)
    errs = [np.max(np.abs(softmax_hist(logits, t, w) - hard)) for t in (1.0, 1e-2, 1e-4)]
    assert errs[-1] < 1e-9 and errs[0] > 1.0
    for t in (1e-3, 1.0, 1e3):
        assert float(jnp.sum(softmax_hist(logits, t, w))) == pytest.approx(w.sum(), rel=1e-13)
    np.testing.assert_allclose(softmax_hist(logits, 1e3, w), np.full(4, w.sum() / 4), rtol=1e-2)


def test_softmax_hist_gradients(rng):
    logits = jnp.asarray(rng.normal(size=(5, 3)))
    w = jnp.asarray(rng.uniform(0.5, 2.0, size=5))
    target = jnp.array([1.0, 2.0, 3.0])

    def loss(counts):
        return jnp.sum(counts * target) + jnp.sum(counts**2)

    check_grads(jax.jit(softmax_hist), (logits, 0.7, w), order=1)
    assert_grad_matches_fd(lambda v: loss(softmax_hist(v, 0.7, w)), logits)
    assert_grad_matches_fd(lambda v: loss(softmax_hist(logits, v, w)), jnp.array(0.7))
    assert_grad_matches_fd(lambda v: loss(softmax_hist(logits, 0.7, v)), w)
    g = jax.grad(lambda t: jnp.sum(softmax_hist(logits, t, jnp.zeros(5)) ** 2))(1e-8)
    assert np.isfinite(g)


def test_hard_switch():
    x = np.array([0.1, 0.6, 1.7])
    np.testing.assert_array_equal(hist(x, EDGES, 0.3, hard=True), hard_hist(x, EDGES))
    logits = np.array([[0.0, 1.0], [2.0, 1.0]])
    np.testing.assert_array_equal(
        softmax_hist(logits, 0.3, hard=True), hard_softmax_hist(logits, 0.3)
    )


def test_jit_and_vmap_with_traced_edges(events):
    x, w = events
    f = jax.jit(lambda e, h: hist(x, e, h, w, "fold"))
    np.testing.assert_allclose(f(EDGES, 0.2), hist(x, EDGES, 0.2, w, "fold"), rtol=1e-12)
    batch = jax.vmap(lambda e: hist(x, e, 0.2, w))(jnp.stack([EDGES, EDGES + 0.1]))
    np.testing.assert_allclose(batch[1], hist(x, EDGES + 0.1, 0.2, w), rtol=1e-12)
    hard = jax.jit(lambda e: hard_hist(x, e, None, w))(EDGES)
    np.testing.assert_allclose(hard, hard_hist(x, EDGES, None, w), rtol=1e-12)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"edges": np.array([0.0, 1.0, 1.0])}, "'edges' must be strictly increasing"),
        ({"edges": np.array([0.0, 2.0, 1.0])}, "'edges' must be strictly increasing"),
        ({"edges": np.array([0.0, np.nan])}, "'edges' must be finite"),
        ({"edges": np.array([1.0])}, "'edges' must be a 1-D array of at least 2"),
        ({"edges": np.ones((2, 3))}, "'edges' must be a 1-D array"),
        ({"bandwidth": 0.0}, "'bandwidth' must be > 0"),
        ({"bandwidth": -1.0}, "'bandwidth' must be > 0"),
        ({"bandwidth": None}, "'bandwidth' must be > 0"),
        ({"bandwidth": np.ones(4)}, "shapes do not broadcast.*'bandwidth'"),
        ({"weights": np.ones(4)}, "'weights'"),
        ({"weights": np.ones((3, 3))}, "'weights' must broadcast"),
        ({"x": np.ones((3, 2))}, "'x' must have shape"),
        ({"overflow": "reflect"}, "'overflow' must be one of"),
        ({"x": np.array([1 + 1j, 2, 3])}, "'x' must be a real"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    args = {"x": np.array([0.1, 0.2, 0.3]), "edges": EDGES, "bandwidth": 0.1, "weights": None}
    args.update(kwargs)
    overflow = args.pop("overflow", "drop")
    with pytest.raises(ValueError, match=match):
        hist(**args, overflow=overflow)


def test_bad_input_raises_at_trace_time():
    x = jnp.array([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"'weights' must broadcast .* got \(3, 2\)"):
        jax.jit(lambda x, w: hist(x, EDGES, 0.1, w)).lower(x, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="'edges' must be strictly increasing"):
        jax.jit(lambda x: hist(x, EDGES[::-1], 0.1))(x)  # concrete edges inside jit
    with pytest.raises(ValueError, match="'edges' must be a 1-D"):
        jax.jit(lambda x, e: hist(x, e, 0.1)).lower(x, jnp.ones((1,)))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.ones(3), 1.0), "'logits' must have shape"),
        ((np.ones((3, 0)), 1.0), "'logits' needs at least one bin"),
        ((np.ones((3, 2)), 0.0), "'temperature' must be > 0"),
        ((np.ones((3, 2)), np.ones(3)), "'temperature' must be a scalar"),
        ((np.ones((3, 2)), 1.0, np.ones(2)), "'weights' must broadcast"),
    ],
)
def test_softmax_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        softmax_hist(*args)
