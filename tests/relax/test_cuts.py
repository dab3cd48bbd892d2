"""Sigmoid cuts, windows and soft logic: hard limits, bias, gradients, bad input."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate, stats

from diffana.relax import cut, hard_cut, hard_window, soft_and, soft_not, soft_or, window
from diffana.testing import assert_grad_matches_fd

DIRECTIONS = [">", ">=", "<", "<="]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_converges_to_hard_twin(events, direction):
    x, _ = events
    hard = np.asarray(hard_cut(x, 0.25, None, direction))
    errors = [np.max(np.abs(cut(x, 0.25, s, direction) - hard)) for s in (1.0, 1e-2, 1e-4)]
    assert errors[0] > 0.1
    assert errors[-1] < 1e-8
    assert all(b < a for a, b in itertools.pairwise(errors))


def test_hard_cut_comparisons_at_ties():
    x = np.array([0.0, 1.0, 2.0])
    assert hard_cut(x, 1.0, None, ">").tolist() == [0.0, 0.0, 1.0]
    assert hard_cut(x, 1.0, None, ">=").tolist() == [0.0, 1.0, 1.0]
    assert hard_cut(x, 1.0, None, "<").tolist() == [1.0, 0.0, 0.0]
    assert hard_cut(x, 1.0, None, "<=").tolist() == [1.0, 1.0, 0.0]
    assert hard_cut(np.array([np.nan]), 1.0).tolist() == [0.0]
    assert float(cut(1.0, 1.0, 0.3)) == 0.5  # the soft cut halves an event on the threshold


def test_symmetry_and_slope_units():
    x = jnp.linspace(-3.0, 3.0, 13)
    np.testing.assert_allclose(cut(x, 0.5, 0.7, "<"), 1.0 - cut(x, 0.5, 0.7, ">"), atol=1e-15)
    # slope is in the units of x: rescaling x, threshold and slope together changes nothing
    np.testing.assert_allclose(cut(1e3 * x, 500.0, 700.0), cut(x, 0.5, 0.7), rtol=1e-14)
    # 10% -> 90% over 2 ln 9 slopes
    lo, hi = 0.5 - np.log(9) * 0.7, 0.5 + np.log(9) * 0.7
    np.testing.assert_allclose(cut(jnp.array([lo, hi]), 0.5, 0.7), [0.1, 0.9], rtol=1e-12)


@pytest.mark.parametrize(("direction", "sign"), [(">", -1.0), ("<", 1.0)])
def test_documented_bias_of_soft_yield(direction, sign):
    # soft yield - hard yield ≈ ∓ (π²/6) slope² f'(threshold) for a density f
    f, t, s = stats.norm(0.0, 1.0), 0.8, 0.05
    soft = integrate.quad(lambda v: f.pdf(v) * float(cut(v, t, s, direction)), -10, 10,
                          points=[t], limit=200, epsabs=1e-13)[0]  # fmt: skip
    hard = f.sf(t) if direction == ">" else f.cdf(t)
    fprime = -t * f.pdf(t)
    predicted = sign * np.pi**2 / 6 * s**2 * fprime
    assert soft - hard == pytest.approx(predicted, rel=2e-2)


def test_broadcasting_per_object_thresholds():
    x = jnp.ones((4, 3))
    out = cut(x, jnp.array([0.0, 1.0, 2.0]), 0.1)
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out[0], [1.0, 0.5, 0.0], atol=1e-4)


def test_cut_gradients():
    x = jnp.array([-0.4, 0.1, 0.3, 1.2])
    check_grads(jax.jit(cut), (x, 0.2, 0.3), order=1)
    check_grads(jax.jit(lambda x, t, s: cut(x, t, s, "<")), (x, 0.2, 0.3), order=1)
    w = jnp.array([1.0, 2.0, 0.5, 1.5])

    def yield_(x, t, s):
        return jnp.sum(w * cut(x, t, s))

    assert_grad_matches_fd(lambda v: yield_(v, 0.2, 0.3), x)
    assert_grad_matches_fd(lambda v: yield_(x, v, 0.3), jnp.array(0.2))
    assert_grad_matches_fd(lambda v: yield_(x, 0.2, v), jnp.array(0.3))


def test_no_nan_gradients_near_the_hard_limit():
    x = jnp.array([-50.0, 0.2, 0.2 + 1e-9, 50.0])  # one event exactly on the threshold
    for s in (1e-6, 1e-12, 1e-150):
        g = jax.grad(lambda x, t, s: jnp.sum(cut(x, t, s)), argnums=(0, 1, 2))(x, 0.2, s)
        assert all(np.all(np.isfinite(np.asarray(a))) for a in g), (s, g)
        g = jax.grad(lambda x, t, s: jnp.sum(window(x, t, t + 1, s)), argnums=(0, 1, 2))(x, 0.2, s)
        assert all(np.all(np.isfinite(np.asarray(a))) for a in g), (s, g)


def test_window_hard_limit_and_gradients(events):
    x, _ = events
    hard = np.asarray(hard_window(x, -0.5, 0.75))
    np.testing.assert_array_equal(hard, ((x >= -0.5) & (x < 0.75)).astype(float))
    assert np.max(np.abs(window(x, -0.5, 0.75, 1e-5) - hard)) < 1e-8
    assert window(x, -0.5, 0.75, 1e-5, hard=True).tolist() == hard.tolist()
    xs = jnp.array([-0.6, -0.4, 0.0, 0.7, 0.9])
    check_grads(jax.jit(window), (xs, -0.5, 0.75, 0.1), order=1)
    for i in range(3):

        def f(v, i=i):
            args = [-0.5, 0.75, 0.1]
            args[i] = v
            return jnp.sum(window(xs, *args) ** 2)

        assert_grad_matches_fd(f, jnp.array([-0.5, 0.75, 0.1][i]))


def test_soft_logic_is_exact_on_booleans():
    a, b, c = np.array(list(itertools.product([False, True], repeat=3))).T
    np.testing.assert_array_equal(soft_and(a, b, c), a & b & c)
    np.testing.assert_array_equal(soft_or(a, b, c), a | b | c)
    np.testing.assert_array_equal(soft_not(a), ~a)
    assert soft_and(a).tolist() == a.astype(float).tolist()


def test_soft_logic_probabilities_and_de_morgan(rng):
    a, b = rng.uniform(size=(2, 20))
    np.testing.assert_allclose(soft_and(a, b), a * b, rtol=1e-15)
    np.testing.assert_allclose(soft_or(a, b), a + b - a * b, rtol=1e-14)
    np.testing.assert_allclose(soft_or(a, b), soft_not(soft_and(soft_not(a), soft_not(b))))
    check_grads(jax.jit(lambda a, b: soft_or(a, soft_and(a, b))), (a, b), order=1)
    out = soft_and(jnp.ones((5, 1)), jnp.ones((1, 4)))  # broadcasts without rank promotion
    assert out.shape == (5, 4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: cut(np.ones(3), 0.0, 0.0), "'slope' must be > 0"),
        (lambda: cut(np.ones(3), 0.0, -1.0), "'slope' must be > 0"),
        (lambda: cut(np.ones(3), 0.0, np.array([1.0, 0.0, 1.0])), "'slope' must be > 0"),
        (lambda: cut(np.ones(3), 0.0, 1.0, "above"), "'direction' must be one of"),
        (lambda: cut(np.ones(3), np.ones(2), 1.0), "'x' \\(3,\\), 'threshold' \\(2,\\)"),
        (lambda: cut(np.ones(3), 0.0, np.ones(4)), "'slope' \\(4,\\)"),
        (lambda: cut(np.array(["a"]), 0.0, 1.0), "'x' must be a real numeric"),
        (lambda: window(np.ones(3), 1.0, 1.0, 1.0), "'lo' must be < 'hi'"),
        (lambda: window(np.ones(3), 0.0, 1.0, 0.0), "'slope' must be > 0"),
        (lambda: hard_window(np.ones(3), 2.0, 1.0), "'lo' must be < 'hi'"),
        (lambda: soft_and(), "at least one"),
        (lambda: soft_or(np.ones(3), np.ones(2)), "'weights\\[0\\]' \\(3,\\), 'weights\\[1\\]'"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_input_at_trace_time_and_traced_values_unchecked():
    with pytest.raises(ValueError, match="'threshold' \\(2,\\)"):
        jax.jit(lambda x, t: cut(x, t, 1.0)).lower(jnp.ones(3), jnp.ones(2))
    # a traced slope cannot be checked; a positive one works under jit
    out = jax.jit(lambda s: cut(jnp.array([0.0, 2.0]), 1.0, s))(0.5)
    np.testing.assert_allclose(out, jax.nn.sigmoid(jnp.array([-2.0, 2.0])))
