"""diffana.infer reproduces pyhf (numpy backend, scipy optimiser, float64) on random
workspaces of a fixed structure (normfactor, normsys, histosys, staterror)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import diffana.hf as hf
import diffana.infer as infer

SEEDS = [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def cases(random_workspace_factory, pyhf_model_data_factory):
    out = []
    for seed in SEEDS:
        ws = random_workspace_factory(seed)
        model = hf.Model.from_pyhf(ws)
        data = hf.workspace_data(ws, model)
        pmodel, pdata = pyhf_model_data_factory(ws)
        assert model.par_names == tuple(pmodel.config.par_names)
        out.append((model, data, pmodel, pdata))
    return out


def test_best_fit_parameters(cases, pyhf_numpy):
    for model, data, pmodel, pdata in cases:
        res = infer.fit(data, model)
        ref, ref_twice_nll = pyhf_numpy.infer.mle.fit(pdata, pmodel, return_fitted_val=True)
        assert bool(res.converged)
        np.testing.assert_allclose(res.pars, ref, atol=1e-4, rtol=0)
        np.testing.assert_allclose(2 * res.nll, ref_twice_nll, atol=1e-8, rtol=0)
        # our optimum is at least as good as pyhf's
        assert float(res.nll) <= float(model.nll(jnp.asarray(ref), data)) + 1e-12


def test_fixed_poi_fit(cases, pyhf_numpy):
    for model, data, pmodel, pdata in cases[:3]:
        for mu in (0.0, 1.7):
            res = infer.fixed_poi_fit(mu, data, model)
            ref = pyhf_numpy.infer.mle.fixed_poi_fit(mu, pdata, pmodel)
            np.testing.assert_allclose(res.pars, ref, atol=1e-4, rtol=0)
            assert float(res.pars[model.poi_index]) == mu


def test_hypotest_cls_and_band(cases, pyhf_numpy):
    for model, data, pmodel, pdata in cases:
        for mu in (0.5, 2.5):
            cls, tails, band = infer.hypotest(
                mu, data, model, return_tail_probs=True, return_expected_set=True
            )
            r_cls, r_tails, r_band = pyhf_numpy.infer.hypotest(
                mu, pdata, pmodel, return_tail_probs=True, return_expected_set=True
            )
            assert abs(float(cls) - float(r_cls)) < 1e-5
            np.testing.assert_allclose(tails, np.ravel(r_tails), atol=1e-5, rtol=0)
            np.testing.assert_allclose(band, np.ravel(r_band), atol=1e-5, rtol=0)


def test_hypotest_return_layout(cases, pyhf_numpy):
    model, data, pmodel, pdata = cases[0]
    out = infer.hypotest(1.0, data, model, "q", True, True, True)
    ref = pyhf_numpy.infer.hypotest(
        1.0,
        pdata,
        pmodel,
        test_stat="q",
        return_tail_probs=True,
        return_expected=True,
        return_expected_set=True,
    )
    assert len(out) == len(ref) == 4
    assert jnp.shape(out[0]) == () and jnp.shape(out[1]) == (2,)
    assert jnp.shape(out[2]) == () and jnp.shape(out[3]) == (5,)
    for ours, theirs in zip(out, ref, strict=True):
        np.testing.assert_allclose(np.ravel(ours), np.ravel(theirs), atol=1e-5, rtol=0)
    # q0: p0 and CLb tail, expected p0
    p0, tails, p0_exp = infer.hypotest(0.0, data, model, "q0", True, True)
    r_p0, r_tails, r_exp = pyhf_numpy.infer.hypotest(
        0.0, pdata, pmodel, test_stat="q0", return_tail_probs=True, return_expected=True
    )
    np.testing.assert_allclose([p0, tails[0], p0_exp], [r_p0, r_tails[0], r_exp], atol=1e-5)


def test_discovery(cases, pyhf_numpy):
    from scipy.stats import norm

    for model, data, pmodel, _ in cases[:3]:
        # add signal so that p0 is small and significant
        sig = np.asarray(model.expected_actualdata(model.init)) - np.asarray(
            model.expected_actualdata(model.init.at[model.poi_index].set(0.0))
        )
        d = jnp.asarray(data).at[: model.nbins].add(jnp.round(jnp.asarray(sig)))
        pd = np.asarray(d)
        res = infer.discovery(d, model)
        r_p0, r_exp = pyhf_numpy.infer.hypotest(
            0.0, pd, pmodel, test_stat="q0", return_expected=True
        )
        assert abs(float(res.p0) - float(r_p0)) < 1e-5
        assert abs(float(res.p0_expected) - float(r_exp)) < 1e-5
        assert abs(float(res.z0) - norm.isf(float(r_p0))) < 1e-4
        assert abs(float(res.z0_expected) - norm.isf(float(r_exp))) < 1e-4


def test_test_statistics(cases, pyhf_numpy):
    ts = pyhf_numpy.infer.test_statistics
    for model, data, pmodel, pdata in cases[:2]:
        init = pmodel.config.suggested_init()
        bounds = pmodel.config.suggested_bounds()
        fixed = pmodel.config.suggested_fixed()
        wide = [list(b) for b in bounds]
        wide[pmodel.config.poi_index] = [-10.0, 10.0]
        for mu in (0.3, 1.5)[: 2 if model is cases[0][0] else 1]:
            pairs = [
                (
                    infer.qmu_tilde(mu, data, model),
                    ts.qmu_tilde(mu, pdata, pmodel, init, bounds, fixed),
                ),
                (
                    infer.tmu_tilde(mu, data, model),
                    ts.tmu_tilde(mu, pdata, pmodel, init, bounds, fixed),
                ),
                (
                    infer.qmu(mu, data, model, bounds=wide),
                    ts.qmu(mu, pdata, pmodel, init, wide, fixed),
                ),
                (
                    infer.tmu(mu, data, model, bounds=wide),
                    ts.tmu(mu, pdata, pmodel, init, wide, fixed),
                ),
            ]
            for ours, theirs in pairs:
                assert abs(float(ours) - float(theirs)) < 2e-5 * max(1.0, float(theirs))
        q0, (cond, free) = infer.q0(data, model, return_fitted_pars=True)
        r_q0, (r_cond, r_free) = ts.q0(
            0.0, pdata, pmodel, init, bounds, fixed, return_fitted_pars=True
        )
        assert abs(float(q0) - float(r_q0)) < 2e-5 * max(1.0, float(r_q0))
        np.testing.assert_allclose(cond, r_cond, atol=1e-4)
        np.testing.assert_allclose(free, r_free, atol=1e-4)


def test_asimov_data(cases, pyhf_numpy):
    model, data, pmodel, pdata = cases[1]
    for mu in (0.0, 1.0):
        ours = infer.asimov_data(model, mu, data)
        ref = pyhf_numpy.infer.calculators.generate_asimov_data(mu, pdata, pmodel, None, None, None)
        # The auxiliary part is the best-fit nuisance parameters, known to scipy's
        # tolerance (~1e-6 here, varying with the scipy release): compare at 1e-5.
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    nominal = infer.asimov_data(model, 0.0)
    pars = np.asarray(pmodel.config.suggested_init())
    pars[pmodel.config.poi_index] = 0.0
    np.testing.assert_allclose(nominal, pmodel.expected_data(pars), rtol=1e-12)
    main = infer.asimov_data(model, 0.0, include_auxdata=False)
    assert main.shape == (model.nbins,)


def test_upper_limit(cases, pyhf_numpy):
    for model, data, pmodel, pdata in cases[:1]:
        res = infer.upper_limit(data, model)
        r_obs, r_exp = pyhf_numpy.infer.intervals.upper_limits.upper_limit(pdata, pmodel, rtol=1e-7)
        np.testing.assert_allclose(res.observed, r_obs, rtol=1e-5)
        np.testing.assert_allclose(res.expected, np.ravel(r_exp), rtol=1e-5)
        # the limits solve CLs = 0.05
        cls = infer.hypotest(res.observed, data, model)
        assert abs(float(cls) - 0.05) < 1e-7
        band_at = [
            infer.hypotest(lim, data, model, return_expected_set=True)[1][i]
            for i, lim in enumerate(np.asarray(res.expected))
        ]
        np.testing.assert_allclose(band_at, 0.05, atol=1e-7)


def test_hypotest_where_the_asimov_fit_is_needed(pyhf_numpy, empty_bin_workspace):
    """The Asimov data at mu = 0 hold an empty bin (no background there) and the POI may
    go below 0: that bin's NLL term keeps falling, so the generating point is not the
    minimum and the free fit must run."""
    spec = empty_bin_workspace
    model = hf.Model.from_pyhf(spec)
    data = hf.workspace_data(spec, model)
    ws = pyhf_numpy.Workspace(spec)
    pmodel = ws.model()
    _, band = infer.hypotest(1.0, data, model, test_stat="q", return_expected_set=True)
    _, r_band = pyhf_numpy.infer.hypotest(
        1.0, ws.data(pmodel), pmodel, test_stat="q", return_expected_set=True
    )
    np.testing.assert_allclose(band, np.ravel(r_band), rtol=1e-4, atol=1e-9)
    # the closed form would have been far off
    gen = infer.fixed_poi_fit(0.0, data, model)
    asimov = model.expected_data(gen.pars)
    free = infer.fit(asimov, model, init=gen.pars)
    assert float(model.nll(gen.pars, asimov) - free.nll) > 0.1
