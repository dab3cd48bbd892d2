"""Shared fixtures of the HistFactory tests: pyhf as referee, pyhf's validation specs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np
import pyhf
import pytest

import diffana.hf as hf

RTOL = 1e-9


def _pyhf_model(spec: dict, modifier_settings: dict | None, poi_name: Any) -> pyhf.Model:
    pyhf.set_backend("numpy", precision="64b")
    kwargs: dict[str, Any] = {}
    if modifier_settings is not None:
        kwargs["modifier_settings"] = modifier_settings
    if "measurements" in spec:
        workspace = pyhf.Workspace(spec)
        if poi_name is not None:
            kwargs["poi_name"] = poi_name
        return workspace.model(**kwargs)
    return pyhf.Model(spec, poi_name=poi_name, **kwargs)


def _assert_logpdf_close(ours: float, ref: float, what: str) -> None:
    if np.isfinite(ref):
        np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=0, err_msg=what)
    else:
        # outside the physical region (negative rates): pyhf gives NaN/-inf, diffana -inf
        assert not np.isfinite(ours) or ours == ref, (what, ours, ref)


@eqx.filter_jit
def _evaluate(model: hf.Model, batch: jax.Array, data: jax.Array) -> tuple[jax.Array, ...]:
    """Expected data and logpdf at all points in one compiled call (one per model)."""
    return (
        jax.vmap(model.expected_data)(batch),
        jax.vmap(model.logpdf, in_axes=(0, None))(batch, data),
    )


def compare_with_pyhf(
    spec: dict,
    *,
    modifier_settings: dict | None = None,
    poi_name: Any = "mu",
    points: list[np.ndarray] | None = None,
    data: np.ndarray | None = None,
    model: hf.Model | None = None,
) -> tuple[pyhf.Model, hf.Model]:
    """Assert that diffana and pyhf (numpy, float64) agree on `spec` to 1e-9 relative.

    Checks the static configuration (names, order, init, bounds, fixed, auxdata) and
    expected data (main and auxiliary) and logpdf at `points` (default: init and two
    shifted points).
    """
    ref = _pyhf_model(copy.deepcopy(spec), modifier_settings, poi_name)
    if model is None:
        kwargs = {} if poi_name is None or "measurements" in spec else {"poi_name": poi_name}
        model = hf.Model.from_pyhf(spec, modifier_settings=modifier_settings, **kwargs)
    cfg = ref.config
    assert list(model.par_names) == list(cfg.par_names)
    assert list(model.par_order) == list(cfg.par_order)
    assert list(model.channels) == list(cfg.channels)
    assert list(model.samples) == list(cfg.samples)
    assert model.channel_nbins == dict(cfg.channel_nbins)
    assert model.npars == cfg.npars and model.nbins == cfg.nmaindata
    assert model.nauxdata == cfg.nauxdata
    assert model.poi_name == cfg.poi_name and model.poi_index == cfg.poi_index
    assert {k: v for k, v in model.par_slices.items()} == {
        k: cfg.par_slice(k) for k in cfg.par_order
    }
    np.testing.assert_allclose(model.init, cfg.suggested_init(), rtol=RTOL)
    np.testing.assert_allclose(model.bounds, np.array(cfg.suggested_bounds()), rtol=RTOL)
    assert model.fixed.tolist() == list(cfg.suggested_fixed())
    np.testing.assert_allclose(model.auxdata, cfg.auxdata, rtol=RTOL)

    init = np.asarray(cfg.suggested_init(), dtype=float)
    lo, hi = np.array(cfg.suggested_bounds(), dtype=float).T
    if points is None:
        points = [init, np.clip(init + 0.3, lo, hi), np.clip(init - 0.7, lo, hi)]
    if data is None:
        expected = ref.expected_data(init)
        data = np.round(expected * 1.1 + 0.5)
        data[cfg.nmaindata :] = cfg.auxdata
    batch = np.stack([np.asarray(p, dtype=float) for p in points])
    exp_all, logpdf_all = (
        np.asarray(x) for x in _evaluate(model, jax.numpy.asarray(batch), jax.numpy.asarray(data))
    )
    for pars, exp_ours, lp in zip(batch, exp_all, logpdf_all, strict=True):
        exp_ref = ref.expected_data(pars)
        scale = max(float(np.max(np.abs(exp_ref), initial=0.0)), 1.0)
        np.testing.assert_allclose(exp_ours, exp_ref, rtol=RTOL, atol=RTOL * 1e-3 * scale)
        _assert_logpdf_close(float(lp), float(ref.logpdf(pars, data)[0]), f"pars={pars}")
    return ref, model


@pytest.fixture(scope="session")
def pyhf_model() -> Callable[..., pyhf.Model]:
    """`pyhf_model(spec, modifier_settings, poi_name)`: pyhf's model (numpy, float64)."""
    return lambda spec, modifier_settings=None, poi_name="mu": _pyhf_model(
        copy.deepcopy(spec), modifier_settings, poi_name
    )


@pytest.fixture(scope="session")
def assert_logpdf_close() -> Callable[[float, float, str], None]:
    """`assert_logpdf_close(ours, ref, what)`: 1e-9 relative, or both outside the
    physical region (pyhf NaN or -inf for negative rates, diffana -inf)."""
    return _assert_logpdf_close


@pytest.fixture(scope="session")
def pyhf_referee() -> Callable[..., tuple[pyhf.Model, hf.Model]]:
    """`compare_with_pyhf(spec, ...)`: assert agreement of diffana with pyhf."""
    return compare_with_pyhf


# --------------------------------------------------------------------------------------
# pyhf's validation suite (tests/test_validation.py and validation/data/ of pyhf),
# rebuilt: the source histograms and the specs built from them
# --------------------------------------------------------------------------------------
SOURCE_1BIN_EXAMPLE1 = {"data": [55.0], "bkg": [50.0], "bkgerr": [7.0], "sig": [10.0]}
SOURCE_1BIN_NORMSYS = {"data": [120.0, 180.0], "bkg": [100.0, 150.0], "sig": [30.0, 95.0]}
SOURCE_2BIN_HISTOSYS_EXAMPLE2 = {
    "data": [120.0, 180.0],
    "bkg": [100.0, 150.0],
    "bkgsys_up": [102, 190],
    "bkgsys_dn": [98, 100],
    "sig": [30.0, 95.0],
}
SOURCE_2BIN_2CHANNEL_EXAMPLE1 = {
    "signal": {
        "data": [110.0, 155.0],
        "bkgerr": [10.0, 10.0],
        "bkg": [100.0, 150.0],
        "sig": [10.0, 35.0],
    },
    "control": {"data": [205.0, 345.0], "bkg": [200.0, 350.0], "bkgerr": [5.0, 10.0]},
}
SOURCE_2BIN_2CHANNEL_COUPLEDNORM = {
    "signal": {
        "data": [105.0, 220.0],
        "bkg1": [100.0, 100.0],
        "bkg2": [50.0, 100.0],
        "sig": [10.0, 35.0],
    },
    "control": {"data": [110.0, 105.0], "bkg1": [100.0, 100.0]},
}
SOURCE_2BIN_2CHANNEL_COUPLEDHISTO = {
    "signal": {
        "data": [170.0, 220.0],
        "bkg1": [100.0, 100.0],
        "bkg1_up": [110.0, 110.0],
        "bkg1_dn": [90.0, 90.0],
        "bkg2": [50.0, 120.0],
        "bkg2_up": [55.0, 55.0],
        "bkg2_dn": [45.0, 45.0],
        "sig": [30.0, 35.0],
    },
    "control": {
        "data": [110.0, 105.0],
        "bkg1": [105.0, 100.0],
        "bkg1_up": [110.0, 115.0],
        "bkg1_dn": [95.0, 90.0],
    },
}
SOURCE_2BIN_2CHANNEL_COUPLEDSHAPEFACTOR = {
    "signal": {"data": [220.0, 230.0], "bkg1": [100.0, 70.0], "sig": [20.0, 20.0]},
    "control": {"data": [200.0, 300.0], "bkg1": [100.0, 100.0]},
}
SOURCE_2BIN_STATEX = {
    "data": [100.0, 100.0],
    "bkg1": [50.0, 70.0],
    "bkg1err": [10.0, 10.0],
    "bkg2": [30.0, 20.0],
    "bkg2err": [5.0, 5.0],
    "bkg3": [20.0, 15.0],
    "sig": [10.0, 10.0],
}


def _mu(data: list[float]) -> dict:
    return {
        "name": "signal",
        "data": data,
        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
    }


def _sample(name: str, data: list[float], *modifiers: dict) -> dict:
    return {"name": name, "data": data, "modifiers": list(modifiers)}


def _one_channel(*samples: dict, name: str = "singlechannel") -> dict:
    return {"channels": [{"name": name, "samples": list(samples)}]}


def _validation_cases() -> dict[str, tuple[dict, list[float]]]:
    """name -> (spec, observed main data in the model's channel order)."""
    s1 = SOURCE_1BIN_EXAMPLE1
    sn = SOURCE_1BIN_NORMSYS
    sh = SOURCE_2BIN_HISTOSYS_EXAMPLE2
    c1 = SOURCE_2BIN_2CHANNEL_EXAMPLE1
    cn = SOURCE_2BIN_2CHANNEL_COUPLEDNORM
    ch = SOURCE_2BIN_2CHANNEL_COUPLEDHISTO
    cs = SOURCE_2BIN_2CHANNEL_COUPLEDSHAPEFACTOR
    st = SOURCE_2BIN_STATEX

    def histosys(name: str, lo: list[float], hi: list[float]) -> dict:
        return {"name": name, "type": "histosys", "data": {"lo_data": lo, "hi_data": hi}}

    def normsys(name: str, lo: float, hi: float) -> dict:
        return {"name": name, "type": "normsys", "data": {"lo": lo, "hi": hi}}

    lumi = {"name": "lumi", "type": "lumi", "data": None}
    cases = {
        "1bin_shapesys": (
            _one_channel(
                _mu(s1["sig"]),
                _sample(
                    "background",
                    s1["bkg"],
                    {"name": "uncorr_bkguncrt", "type": "shapesys", "data": s1["bkgerr"]},
                ),
            ),
            s1["data"],
        ),
        "1bin_lumi": (
            {
                "channels": [
                    {
                        "name": "channel1",
                        "samples": [
                            _mu([20.0]),
                            _sample("background1", [100.0], lumi),
                            _sample("background2", [0.0], lumi),
                        ],
                    }
                ],
                "parameters": [
                    {
                        "auxdata": [1.0],
                        "bounds": [[0.0, 10.0]],
                        "inits": [1.0],
                        "name": "lumi",
                        "sigmas": [0.1],
                    }
                ],
            },
            s1["data"],
        ),
        "1bin_normsys": (
            _one_channel(
                _mu(sn["sig"]), _sample("background", sn["bkg"], normsys("bkg_norm", 0.9, 1.1))
            ),
            sn["data"],
        ),
        "2bin_histosys": (
            _one_channel(
                _mu(sh["sig"]),
                _sample(
                    "background", sh["bkg"], histosys("bkg_norm", sh["bkgsys_dn"], sh["bkgsys_up"])
                ),
            ),
            sh["data"],
        ),
        "2bin_2channel": (
            {
                "channels": [
                    {
                        "name": "signal",
                        "samples": [
                            _mu(c1["signal"]["sig"]),
                            _sample(
                                "background",
                                c1["signal"]["bkg"],
                                {
                                    "name": "uncorr_bkguncrt_signal",
                                    "type": "shapesys",
                                    "data": c1["signal"]["bkgerr"],
                                },
                            ),
                        ],
                    },
                    {
                        "name": "control",
                        "samples": [
                            _sample(
                                "background",
                                c1["control"]["bkg"],
                                {
                                    "name": "uncorr_bkguncrt_control",
                                    "type": "shapesys",
                                    "data": c1["control"]["bkgerr"],
                                },
                            )
                        ],
                    },
                ]
            },
            c1["control"]["data"] + c1["signal"]["data"],
        ),
        "2bin_2channel_couplednorm": (
            {
                "channels": [
                    {
                        "name": "signal",
                        "samples": [
                            _mu(cn["signal"]["sig"]),
                            _sample(
                                "bkg1", cn["signal"]["bkg1"], normsys("coupled_normsys", 0.9, 1.1)
                            ),
                            _sample(
                                "bkg2", cn["signal"]["bkg2"], normsys("coupled_normsys", 0.5, 1.5)
                            ),
                        ],
                    },
                    {
                        "name": "control",
                        "samples": [
                            _sample(
                                "background",
                                cn["control"]["bkg1"],
                                normsys("coupled_normsys", 0.9, 1.1),
                            )
                        ],
                    },
                ]
            },
            cn["control"]["data"] + cn["signal"]["data"],
        ),
        "2bin_2channel_coupledhistosys": (
            {
                "channels": [
                    {
                        "name": "signal",
                        "samples": [
                            _mu(ch["signal"]["sig"]),
                            _sample(
                                "bkg1",
                                ch["signal"]["bkg1"],
                                histosys(
                                    "coupled_histosys",
                                    ch["signal"]["bkg1_dn"],
                                    ch["signal"]["bkg1_up"],
                                ),
                            ),
                            _sample(
                                "bkg2",
                                ch["signal"]["bkg2"],
                                histosys(
                                    "coupled_histosys",
                                    ch["signal"]["bkg2_dn"],
                                    ch["signal"]["bkg2_up"],
                                ),
                            ),
                        ],
                    },
                    {
                        "name": "control",
                        "samples": [
                            _sample(
                                "background",
                                ch["control"]["bkg1"],
                                histosys(
                                    "coupled_histosys",
                                    ch["control"]["bkg1_dn"],
                                    ch["control"]["bkg1_up"],
                                ),
                            )
                        ],
                    },
                ]
            },
            ch["control"]["data"] + ch["signal"]["data"],
        ),
        "2bin_2channel_coupledshapefactor": (
            {
                "channels": [
                    {
                        "name": "signal",
                        "samples": [
                            _mu(cs["signal"]["sig"]),
                            _sample(
                                "bkg1",
                                cs["signal"]["bkg1"],
                                {
                                    "name": "coupled_shapefactor",
                                    "type": "shapefactor",
                                    "data": None,
                                },
                            ),
                        ],
                    },
                    {
                        "name": "control",
                        "samples": [
                            _sample(
                                "background",
                                cs["control"]["bkg1"],
                                {
                                    "name": "coupled_shapefactor",
                                    "type": "shapefactor",
                                    "data": None,
                                },
                            )
                        ],
                    },
                ]
            },
            cs["control"]["data"] + cs["signal"]["data"],
        ),
        "2bin_statex": (
            _one_channel(
                _mu(st["sig"]),
                _sample(
                    "bkg1",
                    st["bkg1"],
                    {"name": "stat_firstchannel", "type": "staterror", "data": st["bkg1err"]},
                ),
                _sample(
                    "bkg2",
                    st["bkg2"],
                    {"name": "stat_firstchannel", "type": "staterror", "data": st["bkg2err"]},
                ),
                _sample("bkg3", st["bkg3"]),
            ),
            st["data"],
        ),
    }
    # pyhf's test_shapesys_nuisparfilter_validation: a full workspace, a shapesys bin
    # without uncertainty (its gamma is fixed) and a lumi config for an absent modifier
    cases["shapesys_nuisparfilter"] = (
        {
            "channels": [
                {
                    "name": "channel1",
                    "samples": [
                        {
                            "data": [20, 10],
                            "modifiers": [
                                {"data": None, "name": "SigXsecOverSM", "type": "normfactor"}
                            ],
                            "name": "signal",
                        },
                        {
                            "data": [100, 10],
                            "modifiers": [{"data": [10, 0], "name": "syst", "type": "shapesys"}],
                            "name": "background1",
                        },
                    ],
                }
            ],
            "measurements": [
                {
                    "config": {
                        "parameters": [
                            {
                                "auxdata": [1],
                                "bounds": [[0.5, 1.5]],
                                "inits": [1],
                                "name": "lumi",
                                "sigmas": [0.1],
                            }
                        ],
                        "poi": "SigXsecOverSM",
                    },
                    "name": "GaussExample",
                }
            ],
            "observations": [{"data": [100, 10], "name": "channel1"}],
            "version": "1.0.0",
        },
        [100.0, 10.0],
    )
    return cases


VALIDATION_CASES = _validation_cases()


@pytest.fixture
def validation_cases() -> dict[str, tuple[dict, list[float]]]:
    """pyhf's validation specs: name -> (spec, observed main data, model channel order)."""
    return copy.deepcopy(VALIDATION_CASES)


@pytest.fixture(params=sorted(VALIDATION_CASES))
def validation_case(request) -> tuple[str, dict, list[float]]:
    """Each of pyhf's validation specs in turn: (name, spec, observed main data)."""
    spec, data = copy.deepcopy(VALIDATION_CASES[request.param])
    return request.param, spec, data


def _build_workspace(spec: dict, observed: list[float], poi: str = "mu") -> dict:
    model = hf.Model.from_pyhf(spec, poi_name=None)
    observations = []
    for c, sl in model.channel_slices.items():
        observations.append({"name": c, "data": list(observed[sl])})
    return {
        "channels": copy.deepcopy(spec["channels"]),
        "measurements": [
            {
                "name": "meas",
                "config": {"poi": poi, "parameters": copy.deepcopy(spec.get("parameters", []))},
            }
        ],
        "observations": observations,
        "version": "1.0.0",
    }


@pytest.fixture(scope="session")
def make_workspace() -> Callable[..., dict]:
    """`make_workspace(spec, observed, poi="mu")`: a pyhf workspace from a model spec."""
    return _build_workspace
