"""Agreement with pyhf on the workspaces of pyhf's own validation suite."""

from __future__ import annotations

import copy

import numpy as np
import pyhf
import pytest

import diffana.hf as hf


def _points(model: hf.Model, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    init = np.asarray(model.init)
    lo, hi = np.asarray(model.bounds).T
    span = hi - lo
    points = [init, lo.copy(), hi.copy(), lo + 1e-6 * span, hi - 1e-6 * span]
    points += [lo + rng.uniform(0.05, 0.6, init.size) * span for _ in range(3)]
    points += [np.clip(init + rng.normal(0, 0.5, init.size), lo, hi) for _ in range(3)]
    return points


@pytest.mark.parametrize("settings", [None, {"normsys": {"interpcode": "code1"}}])
def test_validation_workspaces_agree_with_pyhf(validation_case, settings, pyhf_referee):
    name, spec, observed = validation_case
    poi = "SigXsecOverSM" if name == "shapesys_nuisparfilter" else "mu"
    model = hf.Model.from_pyhf(spec, modifier_settings=settings)
    assert model.poi_name == poi
    data = np.concatenate([observed, np.asarray(model.auxdata)])
    for seed in range(2):
        pyhf_referee(
            spec,
            modifier_settings=settings,
            poi_name=None if "measurements" in spec else poi,
            points=_points(model, seed),
            data=data + seed * 0.37,
            model=model,
        )


def test_validation_configuration_counts(validation_cases):
    # the parameter and auxdata counts that pyhf's validation suite asserts
    counts = {
        "1bin_shapesys": (2, None),
        "1bin_lumi": (2, None),
        "1bin_normsys": (2, None),
        "2bin_histosys": (2, None),
        "2bin_2channel": (5, None),
        "2bin_2channel_couplednorm": (2, None),
        "2bin_2channel_coupledhistosys": (2, 1),
        "2bin_2channel_coupledshapefactor": (3, 0),
    }
    for name, (npars, naux) in counts.items():
        model = hf.Model.from_pyhf(validation_cases[name][0])
        assert model.npars == npars == len(model.init) == len(model.bounds), name
        if naux is not None:
            assert model.nauxdata == naux == len(model.auxdata), name


def test_shapesys_bin_without_uncertainty_is_fixed(validation_cases):
    spec, _ = validation_cases["shapesys_nuisparfilter"]
    model = hf.Model.from_pyhf(spec)
    assert model.par_names == ("SigXsecOverSM", "syst[0]", "syst[1]")
    assert model.fixed.tolist() == [False, False, True]
    # pyhf's factors (nominal / uncertainty)^2, and 1.0 for the bin without uncertainty
    np.testing.assert_allclose(model.auxdata, [100.0, 1.0])


def test_staterror_is_combined_per_bin_across_samples(validation_cases):
    spec, _ = validation_cases["2bin_statex"]
    model = hf.Model.from_pyhf(spec)
    # relative uncertainty sqrt(sum sigma^2) / sum nominal of the samples with staterror
    expected = np.sqrt(np.array([10.0, 10.0]) ** 2 + np.array([5.0, 5.0]) ** 2) / np.array(
        [80.0, 90.0]
    )
    np.testing.assert_allclose(model.gauss_sigma, expected, rtol=1e-14)
    ref = pyhf.Model(copy.deepcopy(spec))
    np.testing.assert_allclose(
        model.gauss_sigma, ref.constraint_model.constraints_gaussian.sigmas, rtol=1e-14
    )


def test_workspace_data_matches_pyhf(validation_case, make_workspace, pyhf_referee):
    _, spec, observed = validation_case
    workspace = spec if "measurements" in spec else make_workspace(spec, observed)
    model = hf.Model.from_pyhf(workspace)
    pyhf.set_backend("numpy", precision="64b")
    ws = pyhf.Workspace(copy.deepcopy(workspace))
    ref = ws.model()
    for include in (True, False):
        ours = np.asarray(hf.workspace_data(workspace, model, include_auxdata=include))
        np.testing.assert_allclose(ours, ws.data(ref, include_auxdata=include), rtol=1e-15)
    np.testing.assert_allclose(model.observed, observed)
    # the workspace's likelihood at its own data
    data = np.asarray(hf.workspace_data(workspace, model))
    pyhf_referee(workspace, poi_name=None, points=_points(model, 3), data=data, model=model)


def test_measurement_selection_by_name_and_index(validation_cases, make_workspace):
    spec, observed = validation_cases["1bin_lumi"]
    workspace = make_workspace(spec, observed)
    other = copy.deepcopy(workspace["measurements"][0])
    other["name"] = "tight_lumi"
    other["config"]["parameters"][0]["sigmas"] = [0.01]
    workspace["measurements"].append(other)
    default = hf.Model.from_pyhf(workspace)
    by_name = hf.Model.from_pyhf(workspace, measurement="tight_lumi")
    by_index = hf.Model.from_pyhf(workspace, measurement=1)
    pyhf.set_backend("numpy", precision="64b")
    ws = pyhf.Workspace(copy.deepcopy(workspace))
    data = np.asarray(hf.workspace_data(workspace, by_name))
    pars = np.array([1.2, 0.97])
    assert default.par_names == ("lumi", "mu")
    for ours, meas in ((default, "meas"), (by_name, "tight_lumi"), (by_index, "tight_lumi")):
        ref = ws.model(measurement_name=meas)
        np.testing.assert_allclose(
            float(ours.logpdf(pars, data)), ref.logpdf(pars, data)[0], rtol=1e-12
        )
    assert float(default.logpdf(pars, data)) != float(by_name.logpdf(pars, data))
