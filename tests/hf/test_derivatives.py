"""The fit objective (`Model.relative_nll`) and its closed-form derivatives.

The relative NLL must differ from the NLL by a constant of the data, have the NLL's
derivatives with respect to parameters, data and yields, and be exact where the NLL
carries huge constants; the closed-form Hessian must equal automatic differentiation's,
with every modifier type, both interpolation codes of each kind, a parameter shared
between a histosys and a normsys, and factors that are exactly zero.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffana.hf as hf
from diffana.hf import _derivatives
from diffana.hf._derivatives import layout, poisson_relative_nll


def _workspace() -> dict:
    """Two channels, every modifier type, a parameter ('jes') that is both a histosys
    and a normsys of one sample, a shapefactor shared across channels."""

    def sample(name, data, modifiers):
        return {"name": name, "data": data, "modifiers": modifiers}

    norm = {"name": "mu", "type": "normfactor", "data": None}
    lumi = {"name": "lumi", "type": "lumi", "data": None}
    sr = [
        sample("signal", [3.0, 6.0, 2.0], [norm, lumi,
               {"name": "sig_theory", "type": "normsys", "data": {"hi": 1.08, "lo": 0.95}}]),
        sample("ttbar", [40.0, 25.0, 10.0], [
            {"name": "jes", "type": "histosys",
             "data": {"hi_data": [43.0, 26.0, 10.5], "lo_data": [38.0, 24.5, 9.0]}},
            {"name": "jes", "type": "normsys", "data": {"hi": 1.04, "lo": 0.93}},
            {"name": "staterror_SR", "type": "staterror", "data": [2.0, 1.5, 1.0]},
            {"name": "k_tt", "type": "normfactor", "data": None}, lumi]),
        sample("wjets", [20.0, 12.0, 8.0], [
            {"name": "wj_shape", "type": "shapesys", "data": [2.0, 1.0, 1.5]},
            {"name": "xsec", "type": "normsys", "data": {"hi": 1.1, "lo": 0.85}},
            {"name": "sf", "type": "shapefactor", "data": None}]),
    ]  # fmt: skip
    cr = [
        sample("ttbar", [200.0, 150.0, 90.0], [
            {"name": "jes", "type": "histosys",
             "data": {"hi_data": [210.0, 152.0, 93.0], "lo_data": [195.0, 149.0, 88.0]}},
            {"name": "k_tt", "type": "normfactor", "data": None},
            {"name": "sf", "type": "shapefactor", "data": None}]),
        sample("wjets", [80.0, 60.0, 30.0], [
            {"name": "xsec", "type": "normsys", "data": {"hi": 1.12, "lo": 0.9}}]),
    ]  # fmt: skip
    config = {
        "poi": "mu",
        "parameters": [
            {
                "name": "lumi",
                "auxdata": [1.0],
                "sigmas": [0.02],
                "inits": [1.0],
                "bounds": [[0.5, 1.5]],
            }
        ],
    }
    return {
        "channels": [{"name": "CR", "samples": cr}, {"name": "SR", "samples": sr}],
        "observations": [
            {"name": "CR", "data": [215.0, 198.0, 130.0]},
            {"name": "SR", "data": [70.0, 40.0, 25.0]},
        ],
        "measurements": [{"name": "m", "config": config}],
        "version": "1.0.0",
    }


SETTINGS = {
    "code4/code4p": None,
    "code1/code0": {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}},
}


def _points(model, seed: int) -> list[np.ndarray]:
    """The initial point, random points inside the bounds (across the interpolation
    regions), and one with the POI and a shapefactor at exactly zero."""
    rng = np.random.default_rng(seed)
    init = np.asarray(model.init)
    points = [init]
    for scale in (0.4, 1.6):
        p = init + rng.normal(0.0, scale, init.shape) * np.where(init == 0.0, 1.0, 0.1)
        points.append(np.clip(p, *np.asarray(model.bounds).T))
    zero = points[1].copy()
    zero[model.poi_index] = 0.0
    zero[model.par_names.index("sf[0]")] = 0.0
    points.append(zero)
    return points


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_closed_form_derivatives_equal_automatic_differentiation(settings):
    ws = _workspace()
    model = hf.Model.from_pyhf(ws, modifier_settings=settings)
    data = hf.workspace_data(ws, model)
    assert layout(model.structure).closed_form
    derivatives = jax.jit(lambda m, p, d: m.nll_derivatives(p, d))
    for pars in _points(model, seed=len(str(settings))):
        value, grad, hess = derivatives(model, jnp.asarray(pars), data)
        np.testing.assert_allclose(value, model.relative_nll(pars, data), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            value + model.nll_offset(data), model.nll(pars, data), rtol=1e-12
        )
        np.testing.assert_allclose(grad, jax.grad(model.nll)(pars, data), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(hess, jax.hessian(model.nll)(pars, data), rtol=1e-10, atol=1e-10)


@pytest.fixture
def sparse_layouts(monkeypatch):
    """Every layout built while it is active takes the sparse products of the Hessian."""
    monkeypatch.setattr(_derivatives, "_SPARSE_COST", 0)
    layout.cache_clear()
    yield
    layout.cache_clear()


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
def test_sparse_hessian_products_equal_automatic_differentiation(settings, sparse_layouts):
    # the large published workspaces take the sparse products; this model is forced to
    ws = _workspace()
    model = hf.Model.from_pyhf(ws, modifier_settings=settings)
    data = hf.workspace_data(ws, model)
    lay = layout(model.structure)
    assert lay.uu_pairs is not None and lay.cross_pairs is not None
    derivatives = jax.jit(lambda m, p, d: m.nll_derivatives(p, d))
    for pars in _points(model, seed=7):
        _, grad, hess = derivatives(model, jnp.asarray(pars), data)
        np.testing.assert_allclose(grad, jax.grad(model.nll)(pars, data), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(hess, jax.hessian(model.nll)(pars, data), rtol=1e-10, atol=1e-10)


@pytest.fixture
def dense_layouts(monkeypatch):
    """Every layout built while it is active takes the dense products of the Hessian,
    grouped by (sample, channel)."""
    monkeypatch.setattr(_derivatives, "_SPARSE_COST", 10**9)
    layout.cache_clear()
    yield
    layout.cache_clear()


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize("gather_normsys", [False, True], ids=["sliced", "gathered"])
def test_grouped_hessian_products_equal_automatic_differentiation(
    settings, gather_normsys, dense_layouts, monkeypatch
):
    # the published workspaces up to 1Lbb take the products by (sample, channel); this
    # model has two per-bin factors in some rows (shapesys and shapefactor) and a
    # shapefactor shared across channels
    ws = _workspace()
    model = hf.Model.from_pyhf(ws, modifier_settings=settings)
    data = hf.workspace_data(ws, model)
    lay = layout(model.structure)
    grouped = lay.grouped
    assert grouped is not None and grouped.bin_pairs[0].size and grouped.ns_slice is not None
    if gather_normsys:  # the general gather of the channel-wide entries
        lay = dataclasses.replace(lay, grouped=dataclasses.replace(grouped, ns_slice=None))
        monkeypatch.setattr(_derivatives, "layout", lambda st: lay)
    derivatives = jax.jit(lambda m, p, d: m.nll_derivatives(p, d))
    for pars in _points(model, seed=11):
        value, grad, hess = derivatives(model, jnp.asarray(pars), data)
        np.testing.assert_allclose(value, model.relative_nll(pars, data), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grad, jax.grad(model.nll)(pars, data), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(hess, jax.hessian(model.nll)(pars, data), rtol=1e-10, atol=1e-10)


def test_relative_nll_has_the_nll_derivatives_in_data_and_yields():
    ws = _workspace()
    model = hf.Model.from_pyhf(ws)
    data = hf.workspace_data(ws, model)
    pars = jnp.asarray(_points(model, seed=3)[1])
    for fn in (lambda d: model.relative_nll(pars, d), lambda d: model.nll(pars, d)):
        assert np.isfinite(jax.grad(fn)(data)).all()
    np.testing.assert_allclose(
        jax.grad(lambda d: model.relative_nll(pars, d))(data),
        jax.grad(lambda d: model.nll(pars, d))(data),
        rtol=1e-12,
        atol=1e-12,
    )
    key = ("SR", "ttbar")

    def by_yields(fn):
        nominal = model.nominal[model.samples.index("ttbar"), model.channel_slices["SR"]]
        return jax.grad(lambda y: fn(model.with_yields({key: y})))(nominal)

    np.testing.assert_allclose(
        by_yields(lambda m: m.relative_nll(pars, data)),
        by_yields(lambda m: m.nll(pars, data)),
        rtol=1e-12,
    )


def test_poisson_term_is_exact_for_huge_counts():
    """A shapesys constraint of tau = 1.9e11 (a published workspace has one): the NLL
    term's size is 4.7e12, resolved in steps of 2^-10; the relative term keeps full
    precision."""
    n = 1.9e11
    for r in (1e-7, -3e-6, 2e-5):
        lam = n * (1.0 + r)
        series = n * (r * r / 2 - r**3 / 3 + r**4 / 4)  # n (r - log1p(r))
        got = float(poisson_relative_nll(jnp.asarray(n), jnp.asarray(lam)))
        assert got == pytest.approx(series, rel=1e-8)
    # and its gradient at an empty bin and a zero rate is finite
    g = jax.grad(lambda lam: poisson_relative_nll(jnp.asarray(0.0), lam))(0.0)
    assert float(g) == 1.0
