"""Soft object selection on padded arrays against brute-force enumeration and hard twins."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from diffana.relax import (
    count_at_least,
    hard_count_at_least,
    hard_leading_weights,
    hard_object_cut,
    hard_object_window,
    leading_weights,
    object_cut,
    object_window,
)
from diffana.testing import assert_grad_matches_fd


@pytest.fixture(scope="module")
def muons(rng):
    """Padded muon pT: 30 events, up to 4 muons, NaN padding, no pT within 0.5 of 20."""
    n = rng.integers(0, 5, size=30)
    pt = rng.exponential(25.0, size=(30, 4)) + 1.0
    pt = np.where(np.abs(pt - 20.0) < 0.5, pt + 1.0, pt)
    mask = np.arange(4)[None, :] < n[:, None]
    return np.where(mask, pt, np.nan), mask


def _enumerate(p):
    """All pass/fail outcomes of independent objects: (outcomes, probabilities)."""
    outcomes = np.array(list(itertools.product([0, 1], repeat=p.shape[-1])), dtype=bool)
    prob = np.prod(np.where(outcomes[None], p[:, None, :], 1 - p[:, None, :]), axis=-1)
    return outcomes, prob  # (2^k, k), (events, 2^k)


def test_object_cut_honours_mask(muons):
    pt, mask = muons
    p = object_cut(pt, mask, 20.0, 2.0)
    assert np.all(np.asarray(p)[~mask] == 0.0)
    np.testing.assert_allclose(np.asarray(p)[mask], jax.nn.sigmoid((pt[mask] - 20.0) / 2.0))
    np.testing.assert_array_equal(hard_object_cut(pt, mask, 20.0), (pt > 20.0) & mask)
    np.testing.assert_array_equal(
        hard_object_window(pt, mask, 10.0, 30.0), (pt >= 10) & (pt < 30) & mask
    )
    w = object_window(pt, mask, 10.0, 30.0, 1e-4)
    np.testing.assert_allclose(w, hard_object_window(pt, mask, 10.0, 30.0), atol=1e-12)
    # gradients through NaN padding are finite (zero for the padding)
    g_pt, g_t = jax.grad(lambda x, t: jnp.sum(object_cut(x, mask, t, 2.0)), argnums=(0, 1))(
        jnp.asarray(pt), 20.0
    )
    assert np.isfinite(g_t) and np.all(np.isfinite(g_pt)) and np.all(np.asarray(g_pt)[~mask] == 0)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5])
def test_count_at_least_is_the_poisson_binomial_tail(rng, n):
    p = rng.uniform(size=(7, 4))
    outcomes, prob = _enumerate(p)
    expected = prob @ (outcomes.sum(axis=1) >= n)
    np.testing.assert_allclose(count_at_least(p, n), expected, rtol=1e-12, atol=1e-15)


def test_count_hard_limit_and_masked_objects_never_count(muons):
    pt, mask = muons
    for n in (1, 2, 3):
        hard = hard_count_at_least(hard_object_cut(pt, mask, 20.0), n)
        np.testing.assert_array_equal(hard, np.sum((pt > 20) & mask, axis=1) >= n)
        for slope, tol in ((1e-3, 1e-12), (1e-6, 1e-15)):
            soft = count_at_least(object_cut(pt, mask, 20.0, slope), n)
            np.testing.assert_allclose(soft, hard, atol=tol)
        # exact on hard flags, and hard=True gives the twin
        np.testing.assert_array_equal(count_at_least(hard_object_cut(pt, mask, 20.0), n), hard)
        np.testing.assert_array_equal(
            count_at_least(object_cut(pt, mask, 20.0, 1.0), n, hard=True), hard
        )
    ones = jnp.ones((2, 3))
    valid = jnp.array([[True, False, False], [True, True, True]])
    np.testing.assert_array_equal(count_at_least(ones, 2, valid), [0.0, 1.0])
    np.testing.assert_array_equal(hard_count_at_least(ones, 2, valid), [0.0, 1.0])


def test_two_muons_above_theta_gradients(muons):
    pt, mask = muons
    w_evt = jnp.linspace(0.5, 1.5, pt.shape[0])

    def yield_(theta, slope=3.0):
        return jnp.sum(w_evt * count_at_least(object_cut(pt, mask, theta, slope), 2))

    assert_grad_matches_fd(yield_, jnp.array(20.0))
    assert_grad_matches_fd(lambda s: yield_(20.0, s), jnp.array(3.0))
    assert float(jax.grad(yield_)(20.0)) < 0  # a harder cut keeps fewer events
    p = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 4)))
    check_grads(jax.jit(lambda p: count_at_least(p, 2)), (p,), order=1)
    g = jax.grad(lambda t: jnp.sum(count_at_least(object_cut(pt, mask, t, 1e-9), 2)))(20.0)
    assert np.isfinite(g)


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_leading_weights_against_enumeration(rng, rank):
    key = rng.normal(size=(6, 4))
    p = rng.uniform(size=(6, 4))
    outcomes, prob = _enumerate(p)
    expected = np.zeros_like(p)
    for e in range(6):
        order = np.argsort(-key[e], kind="stable")
        for o, pr in zip(outcomes, prob[e], strict=True):
            passing = [j for j in order if o[j]]
            if len(passing) > rank:
                expected[e, passing[rank]] += pr
    np.testing.assert_allclose(leading_weights(key, p, rank=rank), expected, atol=1e-15)
    np.testing.assert_allclose(
        jnp.sum(leading_weights(key, p, rank=rank), axis=-1), count_at_least(p, rank + 1)
    )


def test_leading_weights_hard_limit_and_padding(muons):
    pt, mask = muons
    for rank in (0, 1):
        hard = np.asarray(hard_leading_weights(pt, hard_object_cut(pt, mask, 20.0), mask, rank))
        passing = np.where((pt > 20) & mask, pt, -np.inf)
        order = np.argsort(-passing, axis=1, kind="stable")
        n_pass = np.sum((pt > 20) & mask, axis=1)
        ref = np.zeros_like(hard)
        rows = np.nonzero(n_pass > rank)[0]
        ref[rows, order[rows, rank]] = 1.0
        np.testing.assert_array_equal(hard, ref)
        soft = leading_weights(pt, object_cut(pt, mask, 20.0, 1e-4), mask, rank)
        np.testing.assert_allclose(soft, hard, atol=1e-12)
        assert np.all(np.asarray(soft)[~mask] == 0.0)
    # padding is never chosen even when its p and key say otherwise
    key = jnp.array([[1.0, 9.0]])
    w = leading_weights(key, jnp.array([[0.5, 1.0]]), jnp.array([[True, False]]))
    np.testing.assert_array_equal(w, [[0.5, 0.0]])


def test_leading_weights_ties_keep_object_order():
    w = hard_leading_weights(jnp.array([[5.0, 5.0, 1.0]]), jnp.ones((1, 3)))
    np.testing.assert_array_equal(w, [[1.0, 0.0, 0.0]])


def test_leading_object_observable_gradient(muons):
    # Soft histogram-free summary: mean pT of the leading muon above theta.
    pt, mask = muons
    eta = jnp.asarray(np.linspace(-2, 2, pt.size).reshape(pt.shape))

    def leading_eta_sum(theta):
        w = leading_weights(pt, object_cut(pt, mask, theta, 2.0), mask)
        return jnp.sum(w * jnp.where(mask, eta, 0.0))

    assert_grad_matches_fd(leading_eta_sum, jnp.array(20.0))
    p = jnp.asarray(np.random.default_rng(2).uniform(size=(3, 4)))
    key = jnp.tile(jnp.array([2.0, 0.0, 3.0, 1.0]), (3, 1))
    check_grads(jax.jit(lambda p: leading_weights(key, p)), (p,), order=1)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: object_cut(np.ones((3, 2)), np.ones((3, 3), bool), 1.0, 1.0), "'mask' must have"),
        (lambda: object_cut(np.ones((3, 2)), np.ones((3, 2)), 1.0, 1.0), "'mask' must be bool"),
        (lambda: object_cut(np.ones((3, 2)), np.ones((3, 2), bool), 1.0, 0.0), "'slope' must be"),
        (lambda: object_cut(1.0, True, 1.0, 1.0), "'x' must have shape \\(..., objects\\)"),
        (lambda: count_at_least(np.ones((3, 2)), 2, np.ones(3, bool)), "'mask' must have"),
        (lambda: count_at_least(np.ones((3, 2)), -1), "'n' must be >= 0"),
        (lambda: count_at_least(np.ones((3, 2)), 1.5), "'n' must be a non-negative Python int"),
        (lambda: leading_weights(np.ones((3, 2)), np.ones((3, 3))), "'key' must have the shape"),
        (lambda: leading_weights(np.ones((3, 2)), np.ones((3, 2)), rank=-1), "'rank' must be"),
        (
            lambda: hard_leading_weights(np.ones((3, 2)), np.ones((3, 2)), np.ones((2, 2), bool)),
            "'mask' must have",
        ),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_mask_shape_checked_at_trace_time():
    with pytest.raises(ValueError, match="'mask' must have the shape of 'x'"):
        jax.jit(lambda x, m: object_cut(x, m, 1.0, 1.0)).lower(
            jnp.ones((3, 2)), jnp.ones((3, 1), bool)
        )
