"""The model's small-array kernels: static index lookups taken as slices and histosys
templates summed term by term give what a gather and a dot give, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffana.hf import _model

X = jnp.linspace(-1.0, 2.0, 40)

INDEX_ARRAYS = {
    "consecutive": np.arange(3, 9),
    "scattered": np.array([4, 0, 4, 7]),
    "three-d": np.array([[[0, 5], [2, 2]], [[39, 1], [7, 3]]]),
    "large": np.arange(39, -1, -1),  # beyond the element-by-element limit: a gather
}


@pytest.mark.parametrize("name", INDEX_ARRAYS)
def test_take_is_indexing(name):
    idx = INDEX_ARRAYS[name]
    weights = jnp.cos(jnp.arange(idx.size, dtype=float)).reshape(idx.shape)

    def loss(take):
        return lambda x: jnp.sum(weights * jnp.sin(take(x)))

    np.testing.assert_array_equal(_model._take(X, idx), X[idx])
    np.testing.assert_allclose(
        jax.grad(loss(lambda x: _model._take(x, idx)))(X),
        jax.grad(loss(lambda x: x[idx]))(X),
        rtol=1e-15,
        atol=1e-15,
    )


def test_take_uses_slices_below_its_limit():
    jaxpr = str(jax.make_jaxpr(lambda x: _model._take(x, INDEX_ARRAYS["three-d"]))(X))
    assert "gather" not in jaxpr
    jaxpr = str(jax.make_jaxpr(lambda x: _model._take(x, INDEX_ARRAYS["large"]))(X))
    assert "gather" in jaxpr


@pytest.mark.parametrize("shape", [(2, 2, 4), (4, 2, 10), (6, 3, 20)])
def test_contract_is_the_dot(shape):
    rng = np.random.default_rng(0)
    deltas = jnp.asarray(rng.normal(size=shape))
    coeff = jnp.asarray(rng.normal(size=shape[0]))
    small = deltas.size <= _model._ELEMENTWISE_CONTRACTION_MAX
    assert small == (shape != (6, 3, 20))
    np.testing.assert_allclose(
        _model._contract(coeff, deltas), jnp.tensordot(coeff, deltas, axes=1), rtol=1e-14
    )

    def loss(contract):
        return lambda c, d: jnp.sum(jnp.tanh(contract(c, d)))

    got = jax.grad(loss(_model._contract), argnums=(0, 1))(coeff, deltas)
    want = jax.grad(loss(lambda c, d: jnp.tensordot(c, d, axes=1)), argnums=(0, 1))(coeff, deltas)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-15)
