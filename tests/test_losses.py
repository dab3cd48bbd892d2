"""diffana.losses: values agree with pyhf / diffana.infer, gradients with finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

import diffana.hf as hf
import diffana.infer as infer
import diffana.losses as losses
from diffana.testing import assert_grad_matches_fd

SPEC = {
    "channels": [
        {
            "name": "SR",
            "samples": [
                {
                    "name": "signal",
                    "data": [5.0, 10.0, 3.0],
                    "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                },
                {
                    "name": "background",
                    "data": [50.0, 60.0, 40.0],
                    "modifiers": [{"name": "bkg_unc", "type": "shapesys", "data": [5.0, 9.0, 4.0]}],
                },
            ],
        }
    ]
}


@pytest.fixture(scope="module")
def model():
    return hf.Model.from_pyhf(SPEC)


def _signal(model):
    return model.nominal[model.samples.index("signal")]


def _with(model, s):
    return model.with_yields({("SR", "signal"): s})


def test_cls_loss_matches_pyhf_expected_cls(model):
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    try:
        pmodel = pyhf.Model(SPEC)
        pars = pmodel.config.suggested_init()
        pars[pmodel.config.poi_index] = 0.0
        asimov_b = pmodel.expected_data(pars)
        for mu in (0.5, 1.0, 2.0):
            obs, exp = pyhf.infer.hypotest(mu, asimov_b, pmodel, return_expected=True)
            value = float(losses.cls_loss(model, mu))
            assert abs(value - float(exp)) < 1e-6
            assert abs(value - float(obs)) < 1e-6
    finally:
        pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())


def test_discovery_loss_is_minus_expected_z0(model):
    pars = model.init.at[model.poi_index].set(1.0)
    asimov_sb = model.expected_data(pars)
    res = infer.discovery(asimov_sb, model)
    np.testing.assert_allclose(losses.discovery_loss(model), -res.z0, rtol=1e-7)
    np.testing.assert_allclose(losses.discovery_loss(model), -res.z0_expected, rtol=1e-7)


def test_poi_uncertainty_loss(model):
    np.testing.assert_allclose(
        losses.poi_uncertainty_loss(model), infer.poi_uncertainty(model, model.init), rtol=1e-12
    )


def test_loss_gradients_match_finite_differences(model):
    s = _signal(model)
    assert_grad_matches_fd(lambda v: losses.cls_loss(_with(model, v)), s)
    assert_grad_matches_fd(lambda v: losses.discovery_loss(_with(model, v)), s)
    assert_grad_matches_fd(lambda v: losses.poi_uncertainty_loss(_with(model, v)), s)


def test_losses_under_jit_value_and_grad_from_traced_spec():
    """The pattern of a training step: spec built from traced yields inside the loss."""

    def loss(signal):
        spec = {"channels": [{**SPEC["channels"][0]}]}
        spec["channels"][0]["samples"] = [
            {**SPEC["channels"][0]["samples"][0], "data": signal},
            SPEC["channels"][0]["samples"][1],
        ]
        return losses.cls_loss(hf.Model.from_pyhf(spec))

    value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray([5.0, 10.0, 3.0]))
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grad) < 0)  # more signal, stronger exclusion


def test_bce_loss():
    logits = jnp.asarray([2.0, -1.0, 0.5, -3.0])
    labels = jnp.asarray([1.0, 0.0, 1.0, 1.0])
    p = 1 / (1 + np.exp(-np.asarray(logits)))
    ref = -np.mean(np.asarray(labels) * np.log(p) + (1 - np.asarray(labels)) * np.log(1 - p))
    np.testing.assert_allclose(losses.bce_loss(logits, labels), ref, rtol=1e-12)
    w = jnp.asarray([1.0, 2.0, 0.5, 1.0])
    per = -(np.asarray(labels) * np.log(p) + (1 - np.asarray(labels)) * np.log(1 - p))
    np.testing.assert_allclose(
        losses.bce_loss(logits, labels, w), np.sum(w * per) / np.sum(w), rtol=1e-12
    )
    # extreme logits stay finite
    assert np.isfinite(float(losses.bce_loss(jnp.asarray([1e4, -1e4]), jnp.asarray([0.0, 1.0]))))
    assert_grad_matches_fd(lambda v: losses.bce_loss(v, labels, w), logits)
    with pytest.raises(ValueError, match="must match"):
        losses.bce_loss(logits, labels[:2])


@pytest.mark.parametrize("loss", [losses.cls_loss, losses.discovery_loss])
def test_closed_form_asimov_fit_equals_the_fit(model, loss):
    """Where it applies, the free fit of Asimov data is the point they were generated at
    (shapesys: a Poisson constraint; histosys: a Gaussian one); compared with the fits
    run by hand, and the gradient with finite differences."""
    other = hf.correlated_background(
        jnp.asarray([4.0, 8.0, 2.0]),
        jnp.asarray([40.0, 50.0, 30.0]),
        jnp.asarray([44.0, 52.0, 31.0]),
        jnp.asarray([37.0, 47.0, 30.5]),
    )
    generate, test = (0.0, 1.0) if loss is losses.cls_loss else (1.0, 0.0)
    for m in (model, other):
        pars = m.init.at[m.poi_index].set(generate)
        asimov = m.expected_data(pars)
        free = infer.fit(asimov, m)  # from the model's init, not from `pars`
        cond = infer.fixed_poi_fit(test, asimov, m)
        np.testing.assert_allclose(free.pars, pars, atol=1e-7)
        q = max(2.0 * float(cond.nll - free.nll), 0.0)
        if loss is losses.cls_loss:
            expected = 2.0 * float(jax.scipy.stats.norm.cdf(-np.sqrt(q)))
        else:
            expected = -np.sqrt(q)
        np.testing.assert_allclose(loss(m), expected, rtol=1e-7)
    channel = other.channels[0]
    signal = other.nominal[other.samples.index("signal")]
    assert_grad_matches_fd(lambda s: loss(other.with_yields({(channel, "signal"): s})), signal)


def test_cls_loss_fits_when_the_asimov_point_is_out_of_bounds():
    """With the POI bounded away from the background-only point the closed form does not
    apply: the loss must equal the bounded fits done by hand."""
    spec = {
        **SPEC,
        "observations": [{"name": "SR", "data": [55.0, 70.0, 43.0]}],
        "version": "1.0.0",
        "measurements": [
            {
                "name": "m",
                "config": {"poi": "mu", "parameters": [{"name": "mu", "bounds": [[0.5, 10.0]]}]},
            }
        ],
    }
    m = hf.Model.from_pyhf(spec)
    asimov = m.expected_data(m.init.at[m.poi_index].set(0.0))
    mu = 2.0
    cond = infer.fixed_poi_fit(mu, asimov, m)
    free = infer.fit(asimov, m)
    q = max(2.0 * float(cond.nll - free.nll), 0.0)
    expected = 2.0 * float(jax.scipy.stats.norm.cdf(-np.sqrt(q)))
    np.testing.assert_allclose(losses.cls_loss(m, mu), expected, rtol=1e-7)
    # the unbounded minimum (the closed form) would give a visibly different CLs
    q_wrong = 2.0 * float(cond.nll - m.nll(m.init.at[m.poi_index].set(0.0), asimov))
    assert abs(2.0 * float(jax.scipy.stats.norm.cdf(-np.sqrt(q_wrong))) - expected) > 1e-3
    # The fit branch's derivatives (taken at its result, not through the branch), first
    # and second order.
    signal = m.nominal[m.samples.index("signal")]

    def loss(s):
        return losses.cls_loss(m.with_yields({("SR", "signal"): s}), mu)

    assert_grad_matches_fd(loss, signal, rtol=1e-6)
    assert_hessian_matches_fd(loss, signal)


def assert_hessian_matches_fd(loss, x, eps=1e-4):
    """`jax.hessian(loss)` against central differences of `jax.grad(loss)`."""
    hessian = np.asarray(jax.hessian(loss)(x))
    grad = jax.jit(jax.grad(loss))
    steps = eps * np.abs(np.asarray(x))
    rows = [(grad(x.at[i].add(h)) - grad(x.at[i].add(-h))) / (2 * h) for i, h in enumerate(steps)]
    np.testing.assert_allclose(hessian, np.stack(rows), rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("loss", [losses.cls_loss, losses.discovery_loss])
def test_second_derivatives_of_the_losses(model, loss):
    """The envelope theorem gives the losses' gradients at the fits' minima; their
    second derivatives then follow the minima themselves (forward mode through the
    fits), and match finite differences of the gradient."""
    signal = model.nominal[model.samples.index("signal")]
    assert_hessian_matches_fd(lambda s: loss(model.with_yields({("SR", "signal"): s})), signal)


def test_cls_loss_with_an_empty_bin_and_a_negative_poi_bound(empty_bin_workspace):
    """No background in a bin: the Asimov data at mu = 0 are empty there, and with the POI
    free below 0 the bin's NLL term keeps falling, so the free fit must run (pyhf is the
    referee)."""
    spec = empty_bin_workspace
    m = hf.Model.from_pyhf(spec)
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    try:
        pmodel = pyhf.Workspace(spec).model()
        pars = pmodel.config.suggested_init()
        pars[pmodel.config.poi_index] = 0.0
        asimov_b = pmodel.expected_data(pars)
        _, expected = pyhf.infer.hypotest(
            1.0, asimov_b, pmodel, test_stat="q", return_expected=True
        )
    finally:
        pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer())
    np.testing.assert_allclose(losses.cls_loss(m, 1.0), float(expected), rtol=1e-4)
