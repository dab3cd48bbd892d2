"""Annealing schedules: values, jit with traced steps, composition with optax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffana.relax import anneal_exponential, anneal_geometric, anneal_linear


def test_geometric_values():
    s = anneal_geometric(2.0, 0.02, 10, transition_begin=5)
    steps = np.arange(0, 30)
    values = np.array([float(s(i)) for i in steps])
    assert np.all(values[:6] == 2.0) and np.allclose(values[15:], 0.02)
    ratios = values[6:16] / values[5:15]
    np.testing.assert_allclose(ratios, 0.01**0.1, rtol=1e-12)  # constant factor per step


def test_linear_and_exponential_values():
    lin = anneal_linear(1.0, 0.0, 4)
    assert [float(lin(i)) for i in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    exp = anneal_exponential(1.0, 0.2, half_life=3.0)
    np.testing.assert_allclose([exp(0), exp(3), exp(6)], [1.0, 0.6, 0.4], rtol=1e-12)
    assert float(exp(10_000)) == pytest.approx(0.2)
    assert np.all(np.diff([float(exp(i)) for i in range(50)]) < 0)


def test_traced_steps_and_optax_composition():
    s = anneal_geometric(1.0, 0.1, 100)
    traced = jax.jit(jax.vmap(s))(jnp.arange(0, 200, 50))
    np.testing.assert_allclose(traced, [1.0, 0.1**0.5, 0.1, 0.1], rtol=1e-12)
    joined = optax.join_schedules([anneal_linear(1.0, 0.5, 10), s], boundaries=[10])
    assert float(joined(5)) == 0.75 and float(joined(10)) == 1.0
    assert s(jnp.int32(3)).dtype == jnp.float64


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: anneal_geometric(0.0, 1.0, 10), "'init_value' must be finite and > 0"),
        (lambda: anneal_geometric(1.0, -1.0, 10), "'end_value' must be finite and > 0"),
        (lambda: anneal_geometric(1.0, 0.1, 0), "'transition_steps' must be a positive"),
        (lambda: anneal_geometric(1.0, 0.1, 2.5), "'transition_steps' must be a positive"),
        (lambda: anneal_linear(1.0, np.nan, 10), "'end_value' must be finite and >= 0"),
        (lambda: anneal_linear(1.0, 0.0, 10, -1), "'transition_begin' must be an integer >= 0"),
        (lambda: anneal_geometric(1.0, 0.1, 10, None), "'transition_begin' must be an integer"),
        (lambda: anneal_linear(None, 0.0, 10), "'init_value' must be a number >= 0, got None"),
        (lambda: anneal_exponential(1.0, 2.0, 5), "'floor' must be <= 'init_value'"),
        (lambda: anneal_exponential(1.0, 0.1, 0), "'half_life' must be finite and > 0"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
