"""`diffana.testing.synthetic_workspace`: valid pyhf workspaces of a predictable size."""

from __future__ import annotations

import json

import numpy as np
import pyhf
import pytest

import diffana.hf as hf
from diffana.testing import synthetic_workspace

# (n_channels, n_bins, n_normsys, n_histosys, n_normfactors) -> about 30 parameters
SMALL = (3, 3, 10, 6, 3)


def expected_npars(n_channels, n_bins, n_normsys, n_histosys, n_normfactors, **kw):
    staterror, signal, lumi = (kw.get(k, True) for k in ("staterror", "signal", "lumi"))
    return signal + lumi + n_normfactors + n_normsys + n_histosys + staterror * n_channels * n_bins


@pytest.fixture
def numpy_backend():
    """pyhf's numpy backend in float64 for the test, the previous backend restored after."""
    previous = pyhf.get_backend()
    pyhf.set_backend("numpy", precision="64b")
    yield
    pyhf.set_backend(*previous)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (SMALL, {}),
        ((1, 2, 3, 2, 1), {}),
        ((2, 4, 5, 0, 2), {"staterror": False, "lumi": False}),
        ((2, 1, 0, 3, 1), {"signal": False}),
    ],
)
def test_valid_and_npars_agree_with_pyhf(args, kwargs):
    ws = synthetic_workspace(*args, **kwargs)
    pmodel = pyhf.Workspace(ws).model()  # validates against pyhf's schema
    assert pmodel.config.npars == expected_npars(*args, **kwargs)
    assert hf.Model.from_pyhf(ws).npars == pmodel.config.npars
    json.dumps(ws)  # plain Python numbers


def test_analysis_sized_configuration():
    """The 236-parameter configuration: 24 channels of 3 bins, 90 normsys, 60 histosys."""
    ws = synthetic_workspace(24, 3, 90, 60, 12)
    assert pyhf.Workspace(ws).model().config.npars == 236
    types = {m["type"] for c in ws["channels"] for s in c["samples"] for m in s["modifiers"]}
    assert types == {"normfactor", "normsys", "histosys", "staterror", "lumi"}


def test_deterministic_per_seed():
    a, b = synthetic_workspace(*SMALL, seed=3), synthetic_workspace(*SMALL, seed=3)
    assert json.dumps(a) == json.dumps(b)
    assert json.dumps(a) != json.dumps(synthetic_workspace(*SMALL, seed=4))


def test_logpdf_matches_pyhf_numpy(numpy_backend):
    ws = synthetic_workspace(*SMALL, seed=1)
    pws = pyhf.Workspace(ws)
    pmodel = pws.model()
    pdata = np.asarray(pws.data(pmodel), dtype=np.float64)
    model = hf.Model.from_pyhf(ws)
    data = hf.workspace_data(ws, model)
    np.testing.assert_allclose(np.asarray(data), pdata, rtol=0, atol=0)
    init = np.asarray(pmodel.config.suggested_init(), dtype=np.float64)
    np.testing.assert_allclose(np.asarray(model.init), init, rtol=0, atol=0)
    expected = float(pmodel.logpdf(init, pdata)[0])
    np.testing.assert_allclose(float(model.logpdf(init, data)), expected, rtol=1e-10)
    # away from the nominal point too (the interpolations enter)
    pars = init + np.random.default_rng(0).normal(0.0, 0.3, init.size) * (init != 0)
    expected = float(pmodel.logpdf(pars, pdata)[0])
    np.testing.assert_allclose(float(model.logpdf(pars, data)), expected, rtol=1e-10)


def test_sizes_out_of_range():
    with pytest.raises(ValueError, match="n_normfactors"):
        synthetic_workspace(1, 2, 0, 0, 5)
    with pytest.raises(ValueError, match="POI"):
        synthetic_workspace(1, 2, 0, 0, 0, signal=False)
