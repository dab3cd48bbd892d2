"""Edge cases that must not turn into silently wrong numbers: degenerate information,
empty background bins, a limit at the POI's lower bound, NaN from a failed computation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffana import hf, infer
from diffana.infer._intervals import _limit
from diffana.infer._teststat import safe_sqrt


def test_safe_sqrt_keeps_nan_and_has_zero_gradient_at_zero():
    assert np.isnan(safe_sqrt(jnp.nan))
    assert float(safe_sqrt(-1.0)) == 0.0 and float(safe_sqrt(4.0)) == 2.0
    assert float(jax.grad(safe_sqrt)(0.0)) == 0.0
    assert float(jax.grad(safe_sqrt)(-3.0)) == 0.0


def test_poi_uncertainty_is_nan_without_signal():
    # No signal anywhere: the POI is not constrained, the information matrix singular.
    sigma = infer.poi_uncertainty(hf.simple_model([0.0, 0.0], [50.0, 60.0]))
    assert np.isnan(sigma)
    assert np.isfinite(infer.poi_uncertainty(hf.simple_model([5.0, 0.0], [50.0, 60.0])))


def test_asimov_significance_with_empty_background_bins():
    z = infer.asimov_significance
    s, b = jnp.array([5.0, 0.0]), jnp.array([10.0, 0.0])
    assert float(z(s, b)) == pytest.approx(float(z(5.0, 10.0)), rel=1e-14)
    assert float(z(s, b, jnp.array([1.0, 0.0]))) == pytest.approx(
        float(z(5.0, 10.0, 1.0)), rel=1e-14
    )
    for grad in (
        jax.grad(lambda s: z(s, b))(s),
        jax.grad(lambda b: z(s, b))(b),
        jax.grad(lambda u: z(s, b, u))(jnp.array([1.0, 0.0])),
    ):
        assert np.all(np.isfinite(grad)) and float(grad[1]) == 0.0
    assert np.isinf(z(jnp.array([5.0, 1.0]), b))  # signal without background


def _root(lo: float):
    theta = {"poi_lo": jnp.asarray(lo), "poi_hi": jnp.asarray(10.0)}
    line = lambda mu, th: (1.0 - mu, jnp.asarray(True))  # noqa: E731  (root at mu = 1)
    return _limit(theta, fn=line, rtol=1e-10, atol=1e-12, maxiter=100, max_expand=30)


def test_limit_below_the_lower_bound_is_the_bound():
    root, ok = _root(2.0)
    assert bool(ok) and float(root) == 2.0
    root, ok = _root(0.0)
    assert bool(ok) and float(root) == pytest.approx(1.0, abs=1e-10)
    # The limit moves with the bound there, and not with it otherwise.
    assert float(jax.grad(lambda lo: _root(lo)[0])(jnp.asarray(2.0))) == 1.0
    assert float(jax.grad(lambda lo: _root(lo)[0])(jnp.asarray(0.0))) == 0.0
