"""Gradients of CLs, Z0, sigma(POI) and limits with respect to sample yields, against
central finite differences (float64, relative 1e-4), including edge cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffana.hf as hf
import diffana.infer as infer
from diffana.testing import assert_grad_matches_fd

SIGNAL = [4.0, 9.0, 2.5]
BACKGROUND = [50.0, 60.0, 40.0]


def _spec(signal, background, hi=None, lo=None, stat=None):
    hi = [1.08 * b for b in background] if hi is None else hi
    lo = [0.94 * b for b in background] if lo is None else lo
    stat = [float(np.sqrt(b)) for b in background] if stat is None else stat
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": signal,
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": background,
                        "modifiers": [
                            {
                                "name": "bkg_shape",
                                "type": "histosys",
                                "data": {"hi_data": hi, "lo_data": lo},
                            },
                            {"name": "staterror_SR", "type": "staterror", "data": stat},
                        ],
                    },
                ],
            }
        ]
    }


@pytest.fixture(scope="module")
def model():
    return hf.Model.from_pyhf(_spec(SIGNAL, BACKGROUND))


def _with_signal(model, s):
    return model.with_yields({("SR", "signal"): s})


def _data(model, main):
    return jnp.concatenate([jnp.asarray(main, dtype=jnp.float64), model.auxdata])


def test_cls_gradient_through_from_pyhf_with_traced_yields(fd_check):
    """`Model.from_pyhf` on a spec whose yields are tracers, differentiated end to end."""
    data = jnp.asarray([56.0, 66.0, 41.0])

    def cls(signal):
        m = hf.Model.from_pyhf(_spec(signal, BACKGROUND))
        return infer.hypotest(1.0, _data(m, data), m)

    assert_grad_matches_fd(cls, jnp.asarray(SIGNAL))


@pytest.mark.parametrize(
    ("case", "mu", "main"),
    [
        ("typical", 1.0, [56.0, 66.0, 41.0]),
        ("mu_test_near_zero", 0.05, [56.0, 66.0, 41.0]),
        ("deficit_mu_hat_at_zero", 1.0, [44.0, 52.0, 35.0]),
        ("excess_mu_hat_above_mu", 0.5, [70.0, 85.0, 48.0]),
    ],
)
def test_cls_gradient(model, fd_check, case, mu, main):
    data = _data(model, main)

    def cls(signal):
        return infer.hypotest(mu, data, _with_signal(model, signal))

    # a larger step keeps the difference of nearly equal CLs values above round-off
    grad = fd_check(cls, jnp.asarray(SIGNAL), eps=1e-4)
    if case == "excess_mu_hat_above_mu":
        # q~_mu = 0 there: CLs = 0.5 / 0.5 * ... is flat in the observed part
        assert np.all(np.isfinite(grad))


def test_expected_band_and_tail_gradients(model, fd_check):
    data = _data(model, [56.0, 66.0, 41.0])
    for k in (0, 2, 4):
        fd_check(
            lambda s, k=k: infer.hypotest(
                1.0, data, _with_signal(model, s), return_expected_set=True
            )[1][k],
            jnp.asarray(SIGNAL),
        )


def test_gradient_wrt_background_and_data(model, fd_check):
    data = _data(model, [56.0, 66.0, 41.0])
    fd_check(
        lambda b: infer.hypotest(1.0, data, model.with_yields({("SR", "background"): b})),
        jnp.asarray(BACKGROUND),
    )
    fd_check(lambda d: infer.hypotest(1.0, d, model), data)


def test_z0_gradient(model, fd_check):
    data = _data(model, [62.0, 75.0, 44.0])
    fd_check(lambda s: infer.discovery(data, _with_signal(model, s)).z0, jnp.asarray(SIGNAL))
    fd_check(
        lambda s: infer.discovery(data, _with_signal(model, s)).z0_expected, jnp.asarray(SIGNAL)
    )


def test_zero_signal_bin(model, fd_check):
    """A bin without signal: finite gradients, equal to finite differences."""
    data = _data(model, [56.0, 66.0, 41.0])
    signal = jnp.asarray([4.0, 9.0, 0.0])
    fd_check(lambda s: infer.hypotest(1.0, data, _with_signal(model, s)), signal, atol=1e-9)
    fd_check(lambda s: infer.discovery(data, _with_signal(model, s)).z0, signal, atol=1e-9)
    fd_check(lambda s: infer.poi_uncertainty(_with_signal(model, s)), signal, atol=1e-9)


@pytest.mark.parametrize("scale", [1e-6, 1e7])
def test_extreme_yields(scale, fd_check):
    """Background yields ~1e-6 and ~1e7 per bin: finite, FD-consistent gradients.

    The signal is a few sqrt(b) and the tested mu is chosen for a CLs of a few percent,
    so that CLs is neither 0 nor 1 in floating point.
    """
    background = jnp.asarray(BACKGROUND) / 50 * scale
    signal = jnp.asarray(SIGNAL) * jnp.sqrt(scale / 50) * 0.3
    mu_test = float(1.5 / jnp.sqrt(jnp.sum(signal**2 / background)))
    m = hf.Model.from_pyhf(_spec(signal.tolist(), background.tolist()))
    data = _data(m, background)
    sig0 = m.nominal[m.samples.index("signal")]
    floor = float(jnp.min(sig0))

    def cls(s):
        return infer.hypotest(mu_test, data, _with_signal(m, s))

    assert 1e-3 < float(cls(sig0)) < 0.99
    # ~1e7 counts leave ~1e-8 of round-off in the NLL: a large relative step keeps finite
    # differences above it, with the fourth-order stencil keeping truncation negligible
    eps = 1e-2 if scale > 1 else 1e-4
    kw = {"atol": 0.0, "floor": floor, "eps": eps, "five_point": scale > 1}
    fd_check(cls, sig0, **kw)
    fd_check(lambda s: infer.poi_uncertainty(_with_signal(m, s)), sig0, **kw)


def test_nuisance_parameter_near_its_bound(model, fd_check):
    """The histosys parameter's fitted value sits just inside a tightened bound, and on it."""
    idx = model.par_names.index("bkg_shape")
    # a strong deficit pulls bkg_shape low
    data = _data(model, [44.0, 50.0, 33.0])
    free = infer.fit(data, model)
    alpha_hat = float(free.pars[idx])
    assert alpha_hat < -0.5
    for lower in (alpha_hat - 0.02, alpha_hat + 0.1):  # just inside / pinned at the bound
        bounds = model.bounds.at[idx, 0].set(lower)
        res = infer.fit(data, model, bounds=bounds)
        pinned = float(res.pars[idx]) == lower
        assert pinned == (lower > alpha_hat)
        fd_check(
            lambda s, b=bounds: infer.hypotest(1.0, data, _with_signal(model, s), bounds=b),
            jnp.asarray(SIGNAL),
        )


def test_poi_uncertainty_gradient(model):
    assert_grad_matches_fd(
        lambda s: infer.poi_uncertainty(_with_signal(model, s)), jnp.asarray(SIGNAL)
    )


def test_upper_limit_gradient(model, fd_check):
    data = _data(model, [56.0, 66.0, 41.0])
    fd_check(
        lambda s: infer.upper_limit(data, _with_signal(model, s)).observed,
        jnp.asarray(SIGNAL),
        rtol=1e-4,
    )


def test_gradients_under_jit_and_vmap(model):
    data = _data(model, [56.0, 66.0, 41.0])
    f = jax.jit(
        jax.vmap(jax.value_and_grad(lambda s: infer.hypotest(1.0, data, _with_signal(model, s))))
    )
    batch = jnp.asarray(SIGNAL)[None, :] * jnp.asarray([[0.5], [1.0], [2.0]])
    values, grads = f(batch)
    for i in range(3):
        v, g = jax.value_and_grad(lambda s: infer.hypotest(1.0, data, _with_signal(model, s)))(
            batch[i]
        )
        np.testing.assert_allclose(values[i], v, rtol=1e-9)
        np.testing.assert_allclose(grads[i], g, rtol=1e-7)
