"""Warnings that name the real cause of a failure: a negative expected rate, a limit
that cannot be bracketed, a bin with signal and no background."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffana
import diffana.hf as hf
import diffana.infer as infer
import diffana.losses as losses

SIGNAL, BACKGROUND = [5.0, 10.0], [50.0, 60.0]
KEY = ("singlechannel", "signal")


@pytest.fixture(scope="module")
def model():
    return hf.simple_model(SIGNAL, BACKGROUND)


def _data(model):
    return jnp.asarray([55.0, 70.0, *np.asarray(model.auxdata)])


def test_negative_rate_inside_grad_is_named(model):
    data = _data(model)

    def mu_hat(signal):
        return infer.fit(data, model.with_yields({KEY: signal})).pars[model.poi_index]

    negative = jnp.asarray([5.0, -100.0])  # bin 1: 60 - 100 events
    cause = r"not positive in channel 'singlechannel' bin 1 \(-40\).*negative"
    # outside jit: at call time, pointing at the caller; inside jit: at run time
    for fn in (jax.grad(mu_hat), jax.jit(jax.grad(mu_hat))):
        with pytest.warns(diffana.ConvergenceWarning, match=cause):
            jax.block_until_ready(fn(negative))
    # vmapped: the batch is checked at once, the bad item's bin named
    batch = jnp.stack([jnp.asarray(SIGNAL), negative])
    with pytest.warns(diffana.ConvergenceWarning, match=r"\(1 of 2\).*bin 1"):
        jax.block_until_ready(jax.jit(jax.vmap(jax.grad(mu_hat)))(batch))


def test_upper_limit_of_a_zero_signal_says_why(model):
    zero = model.with_yields({KEY: jnp.zeros(2)})
    with pytest.warns(diffana.ConvergenceWarning) as record:
        limit = infer.upper_limit(_data(model), zero)
    assert np.isnan(float(limit.observed))
    (message,) = [str(w.message) for w in record]
    assert "cannot be bracketed" in message
    assert "do not depend on the parameter of interest" in message
    assert "from the POI's lower bound 0 to its upper bound 10 doubled 30 times" in message
    assert record[0].filename == __file__


def test_discovery_loss_with_a_background_free_bin_has_a_finite_gradient(model):
    def loss(background, floor=losses.BACKGROUND_FLOOR):
        m = model.with_yields({("singlechannel", "background"): background})
        return losses.discovery_loss(m, background_floor=floor)

    # the floor leaves bins with more background untouched
    full = jnp.asarray(BACKGROUND)
    np.testing.assert_allclose(loss(full), loss(full, 0.0), rtol=1e-12)
    empty = jnp.asarray([50.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grad = jax.value_and_grad(loss)(empty)
        g_signal = jax.grad(
            lambda s: losses.discovery_loss(
                model.with_yields({KEY: s, ("singlechannel", "background"): empty})
            )
        )(jnp.asarray(SIGNAL))
    assert np.isfinite(float(value)) and float(value) < loss(full)
    assert np.all(np.isfinite(grad)) and np.all(np.isfinite(g_signal))
    assert float(g_signal[1]) < 0  # more signal in the empty bin: larger Z0
    with pytest.warns(diffana.ConvergenceWarning):
        assert float(loss(empty, 0.0)) == -np.inf  # without the floor
