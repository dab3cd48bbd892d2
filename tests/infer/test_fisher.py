"""Fisher information, Cramér-Rao sigma(POI), closed-form Asimov significance; public API."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import diffana.hf as hf
import diffana.infer as infer
from diffana.testing import assert_grad_matches_fd


@pytest.fixture(scope="module")
def model():
    return hf.Model.from_pyhf(
        {
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
                            "modifiers": [
                                {"name": "bkg_unc", "type": "shapesys", "data": [5.0, 9.0, 4.0]}
                            ],
                        },
                    ],
                }
            ]
        }
    )


def test_public_names():
    for name in infer.__all__:
        assert hasattr(infer, name), name


def test_expected_fisher_matches_analytic_form(model):
    """For Poisson terms, I = J^T diag(1/lambda) J (+ constraint terms) on Asimov data."""
    pars = model.init
    fisher = infer.fisher_information(model, pars)
    jac_main = jax.jacfwd(model.expected_actualdata)(pars)
    lam = model.expected_actualdata(pars)
    jac_aux = jax.jacfwd(model.expected_auxdata)(pars)
    aux = model.expected_auxdata(pars)
    expected = jac_main.T @ (jac_main / lam[:, None]) + jac_aux.T @ (jac_aux / aux[:, None])
    np.testing.assert_allclose(fisher, expected, rtol=1e-10)
    # observed information on Asimov data equals the expected one
    data = model.expected_data(pars)
    np.testing.assert_allclose(infer.fisher_information(model, pars, data), fisher, rtol=1e-10)


def test_poi_uncertainty_equals_asimov_fit_uncertainty(model):
    data = model.expected_data(model.init)
    res = infer.fit(data, model, return_uncertainties=True)
    sigma = infer.poi_uncertainty(model)
    np.testing.assert_allclose(sigma, res.uncertainties[model.poi_index], rtol=1e-8)
    # profiling nuisance parameters can only increase the uncertainty
    f = infer.fisher_information(model, model.init)
    assert float(sigma) >= float(1 / jnp.sqrt(f[model.poi_index, model.poi_index]))


def test_poi_uncertainty_gradient(model):
    sig = model.nominal[model.samples.index("signal")]
    assert_grad_matches_fd(
        lambda s: infer.poi_uncertainty(model.with_yields({("SR", "signal"): s})), sig
    )


def _cowan(s, b, sigma=None):
    if sigma is None:
        return np.sqrt(2 * ((s + b) * np.log1p(s / b) - s))
    s2 = sigma**2
    return np.sqrt(
        2
        * (
            (s + b) * np.log((s + b) * (b + s2) / (b * b + (s + b) * s2))
            - b * b / s2 * np.log1p(s2 * s / (b * (b + s2)))
        )
    )


@settings(max_examples=40, deadline=None)
@given(
    frac=st.floats(0.01, 5.0),
    b=st.floats(1.0, 1e4),
    rel=st.one_of(st.none(), st.floats(0.01, 0.5)),
)
def test_asimov_significance_closed_forms(frac, b, rel):
    # s/b >= 1e-2, where the textbook form is accurate (smaller s: see the next test)
    s = frac * b
    sigma = None if rel is None else rel * b
    ours = float(infer.asimov_significance(s, b, sigma))
    # the textbook form loses digits to cancellation for s << b; ours does not
    np.testing.assert_allclose(ours, _cowan(s, b, sigma), rtol=1e-7, atol=1e-9)


def test_asimov_significance_limits_and_gradients():
    # small s: Z -> s / sqrt(b + sigma^2); sigma -> 0: the formula without uncertainty
    assert float(infer.asimov_significance(1e-9, 100.0, 10.0)) == pytest.approx(
        1e-9 / np.sqrt(200.0), rel=1e-9
    )
    assert float(infer.asimov_significance(5.0, 100.0, 1e-9)) == pytest.approx(
        float(infer.asimov_significance(5.0, 100.0)), rel=1e-9
    )
    for s in (0.0, 1e-6, 3.0, 300.0):
        g = jax.grad(infer.asimov_significance, argnums=(0, 1, 2))(s, 100.0, 10.0)
        assert all(np.isfinite(np.asarray(x)) for x in g)
    assert_grad_matches_fd(
        lambda v: infer.asimov_significance(v[0], v[1], v[2]), jnp.asarray([3.0, 40.0, 6.0])
    )
    # bins add in quadrature
    z = infer.asimov_significance(jnp.asarray([3.0, 4.0]), jnp.asarray([10.0, 20.0]))
    z1 = infer.asimov_significance(3.0, 10.0)
    z2 = infer.asimov_significance(4.0, 20.0)
    np.testing.assert_allclose(z, np.hypot(z1, z2), rtol=1e-12)
    with pytest.raises(ValueError, match="must match"):
        infer.asimov_significance(jnp.ones(2), jnp.ones(3))
