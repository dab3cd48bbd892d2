"""CLs of pyhf's validation workspaces against ROOT's numbers.

The workspaces, the reference numbers (HistFactory/RooStats, asymptotic calculator, the
`q_mu` statistic with the POI bounded at zero) and the per-workspace relative
tolerances are those of pyhf's `tests/test_validation.py` (scikit-hep/pyhf, BSD-3), in
the version that compares with ROOT (later versions replaced some numbers with pyhf's
own).
"""

from __future__ import annotations

import numpy as np
import pytest

import diffana.hf as hf
import diffana.infer as infer


def _sample(name, data, modifiers):
    return {"name": name, "data": data, "modifiers": modifiers}


def _mu(data):
    return _sample("signal", data, [{"name": "mu", "type": "normfactor", "data": None}])


def _histosys(name, lo, hi):
    return {"name": name, "type": "histosys", "data": {"lo_data": lo, "hi_data": hi}}


def _normsys(name, lo, hi):
    return {"name": name, "type": "normsys", "data": {"lo": lo, "hi": hi}}


CASES = {
    "1bin_shapesys": (
        {
            "channels": [
                {
                    "name": "singlechannel",
                    "samples": [
                        _mu([10.0]),
                        _sample(
                            "background",
                            [50.0],
                            [{"name": "uncorr_bkguncrt", "type": "shapesys", "data": [7.0]}],
                        ),
                    ],
                }
            ]
        },
        {"singlechannel": [55.0]},
        0.4541865416107029,
        [
            0.06371799398864626,
            0.15096503398048894,
            0.3279606950533305,
            0.6046087303039118,
            0.8662627605298466,
        ],
        1e-6,
    ),
    "1bin_lumi": (
        {
            "channels": [
                {
                    "name": "channel1",
                    "samples": [
                        _mu([20.0]),
                        _sample(
                            "background1", [100.0], [{"name": "lumi", "type": "lumi", "data": None}]
                        ),
                        _sample(
                            "background2", [0.0], [{"name": "lumi", "type": "lumi", "data": None}]
                        ),
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
        {"channel1": [55.0]},
        0.01047275,
        [0.01060338, 0.04022273, 0.13614217, 0.37078321, 0.71104119],
        # pyhf uses 4e-6 against its default (loose) optimiser, whose CLs is off by
        # 3.7e-5 relative; the exact optimum (ours, and pyhf with a tight tolerance) gives
        # 0.01047283, 7.6e-6 from ROOT's 7-digit number (1.2e-5 for the band).
        2e-5,
    ),
    "1bin_normsys": (
        {
            "channels": [
                {
                    "name": "singlechannel",
                    "samples": [
                        _mu([30.0, 95.0]),
                        _sample("background", [100.0, 150.0], [_normsys("bkg_norm", 0.9, 1.1)]),
                    ],
                }
            ]
        },
        {"singlechannel": [120.0, 180.0]},
        0.0006735317023683173,
        [
            7.471684419037561e-10,
            5.7411551509088054e-08,
            3.6898088062731205e-06,
            0.00016965731538267896,
            0.004392708998555453,
        ],
        # pyhf: 2e-6. With code1 the exact optimum (ours; pyhf with a tight tolerance
        # agrees to 1e-8) is 3.6e-6 from ROOT.
        1e-5,
    ),
    "2bin_histosys": (
        {
            "channels": [
                {
                    "name": "singlechannel",
                    "samples": [
                        _mu([30.0, 95.0]),
                        _sample(
                            "background",
                            [100.0, 150.0],
                            [_histosys("bkg_norm", [98.0, 100.0], [102.0, 190.0])],
                        ),
                    ],
                }
            ]
        },
        {"singlechannel": [120.0, 180.0]},
        0.1001463460725534,
        [
            7.134513306138892e-06,
            0.00012547100627138575,
            0.001880010666437615,
            0.02078964907605385,
            0.13692494523572218,
        ],
        8e-5,
    ),
    "2bin_2channel": (
        {
            "channels": [
                {
                    "name": "signal",
                    "samples": [
                        _mu([10.0, 35.0]),
                        _sample(
                            "background",
                            [100.0, 150.0],
                            [
                                {
                                    "name": "uncorr_bkguncrt_signal",
                                    "type": "shapesys",
                                    "data": [10.0, 10.0],
                                }
                            ],
                        ),
                    ],
                },
                {
                    "name": "control",
                    "samples": [
                        _sample(
                            "background",
                            [200.0, 350.0],
                            [
                                {
                                    "name": "uncorr_bkguncrt_control",
                                    "type": "shapesys",
                                    "data": [5.0, 10.0],
                                }
                            ],
                        ),
                    ],
                },
            ]
        },
        {"signal": [110.0, 155.0], "control": [205.0, 345.0]},
        0.056332621064982304,
        [
            0.00043491354821983556,
            0.0034223000502860606,
            0.02337423265831151,
            0.1218654225510158,
            0.40382074249477845,
        ],
        1e-6,
    ),
    "2bin_2channel_couplednorm": (
        {
            "channels": [
                {
                    "name": "signal",
                    "samples": [
                        _mu([10.0, 35.0]),
                        _sample("bkg1", [100.0, 100.0], [_normsys("coupled_normsys", 0.9, 1.1)]),
                        _sample("bkg2", [50.0, 100.0], [_normsys("coupled_normsys", 0.5, 1.5)]),
                    ],
                },
                {
                    "name": "control",
                    "samples": [
                        _sample(
                            "background", [100.0, 100.0], [_normsys("coupled_normsys", 0.9, 1.1)]
                        ),
                    ],
                },
            ]
        },
        {"signal": [105.0, 220.0], "control": [110.0, 105.0]},
        0.5906228034705155,
        [
            0.055223914655538435,
            0.13613239925395315,
            0.3068720101493323,
            0.5839470093910164,
            0.8554725461337025,
        ],
        # pyhf: 1e-6; the exact optimum (ours and tight pyhf agree to 1e-8) is 8e-6 from ROOT.
        1e-5,
    ),
    "2bin_2channel_coupledhistosys": (
        {
            "channels": [
                {
                    "name": "signal",
                    "samples": [
                        _mu([30.0, 35.0]),
                        _sample(
                            "bkg1",
                            [100.0, 100.0],
                            [_histosys("coupled_histosys", [90.0, 90.0], [110.0, 110.0])],
                        ),
                        _sample(
                            "bkg2",
                            [50.0, 120.0],
                            [_histosys("coupled_histosys", [45.0, 45.0], [55.0, 55.0])],
                        ),
                    ],
                },
                {
                    "name": "control",
                    "samples": [
                        _sample(
                            "background",
                            [105.0, 100.0],
                            [_histosys("coupled_histosys", [95.0, 90.0], [110.0, 115.0])],
                        ),
                    ],
                },
            ]
        },
        {"signal": [170.0, 220.0], "control": [110.0, 105.0]},
        0.07967400132261188,
        [
            1.7653746536962154e-05,
            0.00026265644807799805,
            0.00334003612780065,
            0.031522353024659715,
            0.17907742915143962,
        ],
        1e-6,
    ),
    "2bin_2channel_coupledshapefactor": (
        {
            "channels": [
                {
                    "name": "signal",
                    "samples": [
                        _mu([20.0, 20.0]),
                        _sample(
                            "bkg1",
                            [100.0, 70.0],
                            [{"name": "coupled_shapefactor", "type": "shapefactor", "data": None}],
                        ),
                    ],
                },
                {
                    "name": "control",
                    "samples": [
                        _sample(
                            "background",
                            [100.0, 100.0],
                            [{"name": "coupled_shapefactor", "type": "shapefactor", "data": None}],
                        ),
                    ],
                },
            ]
        },
        {"signal": [220.0, 230.0], "control": [200.0, 300.0]},
        0.5421679124909312,
        [
            0.013753299929451691,
            0.048887400056355966,
            0.15555296253957684,
            0.4007561343326305,
            0.7357169630955912,
        ],
        2.5e-6,
    ),
}


# The ROOT references were produced with HistFactory's default interpolation of the
# time: piecewise-exponential normsys (code1) and piecewise-linear histosys (code0).
ROOT_INTERPOLATION = {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}


# With code1 normsys, pyhf 0.7 (and we, agreeing with it to 1e-6) differ from these ROOT
# expected bands by up to 1.5e-4 relative: the band tolerance is widened for those.
BAND_TOLERANCE = {"1bin_normsys": 2e-4, "2bin_2channel_couplednorm": 2e-4}

# code0 has a kink at alpha = 0 and with the coupled histosys the NLL has a local minimum
# on either side of it. ROOT and pyhf (forward finite differences) leave alpha = 0 on the
# alpha > 0 side; autodiff at exactly 0 gives the alpha < 0 slope, so the fits start just
# right of the kink to follow the same branch.
START = {"2bin_2channel_coupledhistosys": {"coupled_histosys": 1e-9}}


@pytest.mark.parametrize("name", list(CASES))
def test_validation_against_root(name, pyhf_numpy):
    spec, observed, cls_obs, cls_exp, tolerance = CASES[name]
    model = hf.Model.from_pyhf(spec, modifier_settings=ROOT_INTERPOLATION)
    data = np.concatenate([observed[c] for c in model.channels] + [np.asarray(model.auxdata)])
    init = np.asarray(model.init).copy()
    for par, value in START.get(name, {}).items():
        init[model.par_names.index(par)] = value
    cls, band = infer.hypotest(1.0, data, model, test_stat="q", return_expected_set=True, init=init)
    assert abs(float(cls) - cls_obs) / cls_obs < tolerance
    band_tolerance = BAND_TOLERANCE.get(name, tolerance)
    np.testing.assert_array_less(np.abs(np.asarray(band) - cls_exp) / cls_exp, band_tolerance)
    # and pyhf, with the same settings and a tight optimiser tolerance
    pmodel = pyhf_numpy.Model(spec, modifier_settings=ROOT_INTERPOLATION)
    r_cls, r_band = pyhf_numpy.infer.hypotest(
        1.0, data, pmodel, test_stat="q", return_expected_set=True, init_pars=init.tolist()
    )
    np.testing.assert_allclose(cls, r_cls, rtol=1e-6)
    np.testing.assert_allclose(band, np.ravel(r_band), rtol=1e-6)


def test_shapesys_nuisparfilter_validation():
    """qtilde, code4/code4p interpolation, shapesys with a zero-uncertainty bin."""
    spec = {
        "channels": [
            {
                "name": "channel1",
                "samples": [
                    _sample(
                        "signal",
                        [20, 10],
                        [{"data": None, "name": "SigXsecOverSM", "type": "normfactor"}],
                    ),
                    _sample(
                        "background1",
                        [100, 10],
                        [{"data": [10, 0], "name": "syst", "type": "shapesys"}],
                    ),
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
    }
    model = hf.Model.from_pyhf(
        spec,
        modifier_settings={
            "normsys": {"interpcode": "code4"},
            "histosys": {"interpcode": "code4p"},
        },
    )
    data = hf.workspace_data(spec, model)
    cls, band = infer.hypotest(1.0, data, model, return_expected_set=True)
    np.testing.assert_allclose(cls, 0.004360634405484502, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(
        band,
        [
            2.702197937866914e-05,
            0.00037099917612576155,
            0.004360634386335687,
            0.03815031509701916,
            0.20203027564155074,
        ],
        atol=1e-4,
        rtol=1e-5,
    )


@pytest.mark.parametrize("mu", [-1.0, 50.0])
def test_hypotest_outside_the_poi_bounds_is_refused(mu):
    """pyhf refuses a tested value outside the POI's bounds; so does diffana, naming
    them, where it used to clip the fit and return CLs 1 or 5e-137."""
    model = hf.simple_model([5.0, 10.0], [50.0, 60.0])
    data = model.expected_data(model.init)
    with pytest.raises(ValueError, match=r"outside the bounds \[0.0, 10.0\].*'mu'"):
        infer.hypotest(mu, data, model)
    assert np.isfinite(float(infer.hypotest(10.0, data, model)))
