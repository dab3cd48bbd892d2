"""Export to pyhf: schema-valid workspaces, and exact round trips diffana -> JSON -> diffana."""

from __future__ import annotations

import copy
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

import diffana
import diffana.hf as hf


@pytest.fixture
def workspace(validation_cases, make_workspace) -> dict:
    """A workspace touching every modifier type, with parameter configs."""
    spec, observed = validation_cases["2bin_2channel_coupledhistosys"]
    spec = copy.deepcopy(spec)
    bkg = spec["channels"][0]["samples"][1]
    bkg["modifiers"] += [
        {"name": "lumi", "type": "lumi", "data": None},
        {"name": "xsec", "type": "normsys", "data": {"hi": 1.2, "lo": 0.85}},
        {"name": "stat_signal", "type": "staterror", "data": [3.5, 0.0]},
        {"name": "bkg1_shape", "type": "shapesys", "data": [4.0, 2.5]},
    ]
    spec["channels"][1]["samples"][0]["modifiers"].append(
        {"name": "cr_norm", "type": "shapefactor", "data": None}
    )
    spec["parameters"] = [
        {"name": "lumi", "auxdata": [1.0], "sigmas": [0.017], "inits": [1.0],
         "bounds": [[0.915, 1.085]]},
        {"name": "mu", "bounds": [[0.0, 4.0]], "inits": [0.7]},
        {"name": "xsec", "fixed": True},
    ]  # fmt: skip
    return make_workspace(spec, observed)


def _assert_same_model(a: hf.Model, b: hf.Model, data: np.ndarray) -> None:
    assert a.par_names == b.par_names and a.poi_name == b.poi_name
    assert a.channels == b.channels and a.samples == b.samples
    assert a.fixed.tolist() == b.fixed.tolist()
    for name in ("init", "bounds", "auxdata", "nominal", "hs_deltas", "gauss_sigma"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    rng = np.random.default_rng(0)
    lo, hi = np.asarray(a.bounds).T
    pars = jnp.asarray(lo + rng.uniform(0.2, 0.6, (3, a.npars)) * (hi - lo))
    data = jnp.asarray(data)
    for name in ("expected_data", "logpdf"):
        np.testing.assert_array_equal(
            _evaluate(a, pars, data)[name], _evaluate(b, pars, data)[name]
        )


@eqx.filter_jit
def _evaluate(model: hf.Model, pars: jax.Array, data: jax.Array) -> dict[str, jax.Array]:
    return {
        "expected_data": jax.vmap(model.expected_data)(pars),
        "logpdf": jax.vmap(model.logpdf, in_axes=(0, None))(pars, data),
    }


def test_round_trip_through_json_is_exact(workspace):
    model = hf.Model.from_pyhf(workspace)
    exported = model.to_pyhf()
    assert exported == workspace  # nothing lost, nothing added
    again = hf.Model.from_pyhf(json.loads(json.dumps(exported)))
    _assert_same_model(model, again, np.asarray(hf.workspace_data(workspace, model)))


def test_round_trip_through_a_file(workspace, tmp_path):
    model = hf.Model.from_pyhf(workspace)
    path = tmp_path / "ws.json"
    path.write_text(json.dumps(model.to_pyhf()))
    again = hf.Model.from_pyhf(path)
    _assert_same_model(model, again, np.asarray(hf.workspace_data(path, again)))


def test_export_is_a_valid_pyhf_workspace(workspace):
    model = hf.Model.from_pyhf(workspace)
    exported = model.to_pyhf()
    pyhf.schema.validate(exported, "workspace.json")
    pyhf.set_backend("numpy", precision="64b")
    ws = pyhf.Workspace(exported)
    ref = ws.model()
    data = ws.data(ref)
    pars = np.asarray(model.init) + 0.05
    ours = float(jax.jit(lambda p, d: model.logpdf(p, d))(pars, jnp.asarray(data)))
    np.testing.assert_allclose(ours, ref.logpdf(pars, data)[0], rtol=1e-12)


def test_export_of_a_bare_spec_and_of_new_yields(validation_cases):
    spec, _ = validation_cases["2bin_statex"]
    model = hf.Model.from_pyhf(spec)
    exported = model.to_pyhf()
    pyhf.schema.validate(exported, "workspace.json")
    assert exported["measurements"][0]["config"]["poi"] == "mu"
    # without observations, the export holds the expected data at init (Asimov)
    np.testing.assert_allclose(
        exported["observations"][0]["data"], model.expected_actualdata(model.init)
    )
    observed = [101.0, 99.0]
    assert model.to_pyhf(observed)["observations"][0]["data"] == observed
    full = np.concatenate([observed, np.asarray(model.auxdata)])
    assert model.to_pyhf(full)["observations"][0]["data"] == observed
    # with_yields shows in the export
    swapped = model.with_yields({("singlechannel", "bkg3"): [1.0, 2.0]})
    samples = {s["name"]: s for s in swapped.to_pyhf()["channels"][0]["samples"]}
    assert samples["bkg3"]["data"] == [1.0, 2.0]
    _assert_same_model(
        swapped,
        hf.Model.from_pyhf(swapped.to_pyhf()),
        np.concatenate([observed, np.asarray(swapped.auxdata)]),
    )
    with pytest.raises(diffana.DataError, match="2 main bins"):
        model.to_pyhf([1.0, 2.0, 3.0])


def test_export_needs_concrete_numbers():
    def export(signal):
        return hf.simple_model(signal, jnp.array([5.0, 6.0])).to_pyhf()

    with pytest.raises(diffana.SpecError, match="concrete"):
        jax.jit(export)(jnp.array([1.0, 2.0]))


def test_export_keeps_configs_of_absent_parameters(validation_cases):
    spec, _ = validation_cases["shapesys_nuisparfilter"]
    model = hf.Model.from_pyhf(spec)
    exported = model.to_pyhf()
    assert exported["measurements"] == spec["measurements"]
    assert exported["channels"] == json.loads(json.dumps(spec["channels"]))
