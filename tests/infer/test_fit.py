"""The bounded Newton fit: robustness, batching, implicit gradients, bounds, failures."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import diffana
import diffana.hf as hf
import diffana.infer as infer
from diffana.testing import assert_grad_matches_fd


@pytest.fixture(scope="module")
def ws_model(random_workspace_factory):
    ws = random_workspace_factory(7)
    model = hf.Model.from_pyhf(ws)
    return ws, model, hf.workspace_data(ws, model)


def _scipy_fit(model, data, fixed=None, init=None):
    """Independent reference: L-BFGS-B on the same NLL, tight tolerances."""
    fixed = model.fixed if fixed is None else np.asarray(fixed)
    init = np.array(model.init if init is None else init)
    free = ~fixed
    nll = jax.jit(jax.value_and_grad(lambda p: model.nll(p, data)))

    def fun(v):
        p = init.copy()
        p[free] = v
        f, g = nll(jnp.asarray(p))
        return float(f), np.asarray(g)[free]

    bounds = np.asarray(model.bounds)[free]
    res = scipy.optimize.minimize(
        fun,
        init[free],
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000},
    )
    p = init.copy()
    p[free] = res.x
    return p, res.fun


def test_vmapped_pseudo_experiments_converge_and_match_reference(ws_model):
    _, model, _ = ws_model
    key = jax.random.PRNGKey(0)
    lam = model.expected_actualdata(model.init)
    toys = jax.random.poisson(key, lam, shape=(200, model.nbins)).astype(jnp.float64)
    aux = jnp.broadcast_to(model.auxdata, (200, model.auxdata.shape[0]))
    batch = jnp.concatenate([toys, aux], axis=1)
    res = jax.jit(jax.vmap(lambda d: infer.fit(d, model)))(batch)
    assert res.pars.shape == (200, model.npars)
    assert bool(jnp.all(res.converged))
    assert int(jnp.max(res.n_iter)) < 30
    lo, hi = model.bounds[None, :, 0], model.bounds[None, :, 1]
    assert bool(jnp.all((res.pars >= lo) & (res.pars <= hi)))
    for i in range(4):
        single = infer.fit(batch[i], model)
        np.testing.assert_allclose(res.pars[i], single.pars, atol=1e-10)
        ref, ref_nll = _scipy_fit(model, batch[i])
        assert float(single.nll) <= ref_nll + 1e-9
        np.testing.assert_allclose(single.pars, ref, atol=1e-4)


def test_fixed_parameters_keep_their_values(ws_model, fd_check):
    _, model, data = ws_model
    fixed = model.fixed.copy()
    idx = model.par_names.index("bkg_norm")
    fixed[idx] = True
    init = model.init.at[idx].set(0.7)
    res = infer.fit(data, model, init=init, fixed=fixed)
    assert float(res.pars[idx]) == 0.7
    ref, _ = _scipy_fit(model, data, fixed=fixed, init=init)
    np.testing.assert_allclose(res.pars, ref, atol=1e-4)
    # d pars / d (fixed value) by implicit differentiation matches finite differences
    fd_check(
        lambda v: infer.fit(data, model, init=model.init.at[idx].set(v[0]), fixed=fixed).pars[
            model.poi_index
        ],
        jnp.asarray([0.7]),
    )


def test_implicit_gradient_of_best_fit_wrt_yields_and_data(ws_model, fd_check):
    _, model, data = ws_model

    def mu_hat(signal):
        return infer.fit(data, model.with_yields({("SR", "signal"): signal})).pars[model.poi_index]

    signal = model.nominal[model.samples.index("signal")]
    fd_check(mu_hat, signal)
    # gradient with respect to the observed data
    fd_check(lambda d: infer.fit(d, model).pars[model.poi_index], data)


def test_parameter_pinned_at_bound(ws_model):
    _, model, data = ws_model
    poi = model.poi_index
    # a deficit pushes mu_hat to its lower bound 0
    low = data.at[: model.nbins].set(jnp.floor(0.7 * data[: model.nbins]))
    res = infer.fit(low, model)
    assert float(res.pars[poi]) == 0.0
    signal = model.nominal[model.samples.index("signal")]
    g = jax.grad(lambda s: infer.fit(low, model.with_yields({("SR", "signal"): s})).pars[poi])(
        signal
    )
    np.testing.assert_array_equal(g, 0.0)
    # pinned parameters follow their bound
    gb = jax.grad(lambda b: infer.fit(low, model, bounds=b).pars[poi])(model.bounds)
    expected = np.zeros_like(np.asarray(model.bounds))
    expected[poi, 0] = 1.0
    np.testing.assert_allclose(gb, expected, atol=1e-12)


def test_uncertainties_from_inverse_hessian(ws_model):
    _, model, data = ws_model
    res = infer.fit(data, model, return_uncertainties=True)
    h = jax.hessian(lambda p: model.nll(p, data))(res.pars)
    free = ~model.fixed
    cov = np.linalg.inv(np.asarray(h)[np.ix_(free, free)])
    np.testing.assert_allclose(res.uncertainties[free], np.sqrt(np.diag(cov)), rtol=1e-8)
    np.testing.assert_array_equal(res.uncertainties[~free], 0.0)
    # not requested: None (not zeros), also through jit and vmap
    assert infer.fit(data, model).uncertainties is None
    assert jax.jit(lambda d: infer.fit(d, model))(data).uncertainties is None
    batch = jnp.stack([data, data])
    assert jax.vmap(lambda d: infer.fit(d, model))(batch).uncertainties is None
    batched = jax.vmap(lambda d: infer.fit(d, model, return_uncertainties=True))(batch)
    np.testing.assert_allclose(batched.uncertainties[0], res.uncertainties, rtol=1e-10)
    assert jax.jit(lambda d: infer.fixed_poi_fit(1.0, d, model))(data).uncertainties is None


def test_non_convergence_is_flagged_and_warned(ws_model):
    _, model, data = ws_model
    with pytest.warns(diffana.ConvergenceWarning, match=r"Model\(channels=\['SR'\]"):
        res = infer.fit(data, model, maxiter=2)
    assert not bool(res.converged)
    with pytest.warns(diffana.ConvergenceWarning, match="fixed_poi_fit"):
        infer.fixed_poi_fit(1.0, data, model, maxiter=2)


def test_non_convergence_under_jit_and_vmap(toy):
    model, data = toy
    f = jax.jit(lambda d: infer.fit(d, model, maxiter=2))
    with pytest.warns(diffana.ConvergenceWarning, match="did not converge"):
        res = jax.block_until_ready(f(data))
    assert not bool(res.converged)
    g = jax.jit(jax.vmap(lambda d: infer.fit(d, model, maxiter=2)))
    with pytest.warns(diffana.ConvergenceWarning, match="did not converge"):
        jax.block_until_ready(g(jnp.stack([data, data, data])))
    # converged fits stay silent under jit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jax.block_until_ready(jax.jit(lambda d: infer.fit(d, model))(data))


def test_non_finite_likelihood_is_not_converged(toy):
    model, data = toy
    bad = data.at[0].set(jnp.nan)
    with pytest.raises(diffana.DataError, match=r"data\[0\] \(main bin 0\) is nan"):
        infer.fit(bad, model)  # concrete data are checked up front
    with pytest.warns(diffana.ConvergenceWarning):  # traced data cannot be
        res = jax.jit(lambda d: infer.fit(d, model))(bad)
    assert not bool(res.converged)


def test_bad_data_bounds_and_poi_values_are_named(toy):
    model, data = toy
    with pytest.raises(diffana.DataError, match=r"data\[1\] \(main bin 1\) is -0.5"):
        infer.fit(data.at[1].set(-0.5), model)
    n = data.shape[0]
    with pytest.raises(diffana.DataError, match=rf"data\[{n - 1}\] \(auxdata\) is inf"):
        infer.fit(data.at[n - 1].set(jnp.inf), model)
    bounds = np.asarray(model.bounds).copy()
    bounds[0] = [1.0, -1.0]
    with pytest.raises(ValueError, match=r"bounds\[0\].*expected \[low, high\] with low <= high"):
        infer.fit(data, model, bounds=bounds)
    with pytest.raises(ValueError, match="'poi_value' must be a scalar; got shape \\(1,\\)"):
        infer.fixed_poi_fit(jnp.array([1.0]), data, model)
    with pytest.raises(ValueError, match="'poi_value' must be a scalar"):
        infer.hypotest([1.0, 2.0], data, model)
    with pytest.raises(ValueError, match="'mu' is nan"):
        infer.qmu_tilde(jnp.nan, data, model)


def test_any_model_with_the_interface(toy, pyhf_numpy):
    """The fit only needs the documented model interface (here a hand-written model)."""
    model, data = toy
    res = infer.fit(data, model)
    ref = pyhf_numpy.infer.mle.fit(np.asarray(data), pyhf_numpy.Model(model.spec()))
    np.testing.assert_allclose(res.pars, ref, atol=1e-4)

    def mu_hat(s):
        return infer.fit(data, model.with_yields({("ch", "signal"): s})).pars[1]

    rev = assert_grad_matches_fd(mu_hat, model.signal)
    # forward mode (the custom JVP) agrees with reverse mode
    np.testing.assert_allclose(jax.jacfwd(mu_hat)(model.signal), rev, rtol=1e-10)


def test_input_errors(ws_model):
    _, model, data = ws_model
    with pytest.raises(ValueError, match="'data' has"):
        infer.fit(data[:-1], model)
    with pytest.raises(ValueError, match="1-d"):
        infer.fit(data[None], model)
    with pytest.raises(ValueError, match="'init' must have shape"):
        infer.fit(data, model, init=jnp.zeros(2))
    with pytest.raises(ValueError, match="'fixed' must be"):
        infer.fit(data, model, fixed=[True])
    with pytest.raises(ValueError, match="'bounds' must have shape"):
        infer.fit(data, model, bounds=jnp.zeros((2, 2)))
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda f: infer.fit(data, model, fixed=f))(jnp.asarray(model.fixed))
    with pytest.raises(TypeError, match=r"diffana\.hf\.Model"):
        infer.fit(data, object())
    # data before the model, as pyhf: the old order is named as the cause
    for call in (
        lambda: infer.fit(model, data),
        lambda: infer.fixed_poi_fit(1.0, model, data),
        lambda: infer.hypotest(1.0, model, data),
        lambda: infer.upper_limit(model, data),
    ):
        with pytest.raises(TypeError, match="data before the"):
            call()
    fixed = model.fixed.copy()
    fixed[model.poi_index] = True
    with pytest.raises(ValueError, match="parameter of interest"):
        infer.hypotest(1.0, data, model, fixed=fixed)
    with pytest.raises(ValueError, match="test_stat"):
        infer.hypotest(1.0, data, model, test_stat="t")
    with pytest.warns(diffana.PrecisionWarning, match="'data'"):
        infer.fit(data.astype(jnp.float32), model)


def test_negative_curvature_converges_quickly(pyhf_numpy):
    # Both histosys templates below the nominal in the first bins: the likelihood is
    # concave in alpha around 0, where the conditional fit starts. The solver must leave
    # that region in a few steps (not creep with growing damping) and match pyhf.
    h = np.array(
        [
            [2.30303766, 4.31841814, 7.72923594, 4.03312544],
            [45.83455434, 31.69051107, 10.8212111, 4.65094992],
            [40.78078079, 29.21436852, 10.48048897, 4.80403465],
            [40.11613521, 31.87059447, 9.79038229, 4.82578586],
        ]
    )
    model = hf.correlated_background(*h)
    data = model.expected_data(jnp.array([0.0, 0.0]))
    res = infer.fixed_poi_fit(1.0, data, model)
    assert bool(res.converged) and int(res.n_iter) <= 30
    pmodel = pyhf_numpy.Workspace(model.to_pyhf()).model()
    ref = pyhf_numpy.infer.mle.fixed_poi_fit(1.0, np.asarray(data), pmodel)
    np.testing.assert_allclose(res.pars, ref, atol=1e-4)
