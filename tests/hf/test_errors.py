"""Bad input gives `diffana.SpecError` naming what is wrong and where - never a JAX trace."""

from __future__ import annotations

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

import diffana
import diffana.hf as hf


def _spec() -> dict:
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [5.0, 10.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [50.0, 60.0],
                        "modifiers": [
                            {
                                "name": "jes",
                                "type": "histosys",
                                "data": {"hi_data": [52.0, 63.0], "lo_data": [48.0, 58.0]},
                            },
                            {"name": "stat_SR", "type": "staterror", "data": [2.0, 3.0]},
                        ],
                    },
                ],
            }
        ]
    }


def _workspace() -> dict:
    return {
        **_spec(),
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "observations": [{"name": "SR", "data": [53.0, 71.0]}],
        "version": "1.0.0",
    }


def _raises(spec, *patterns: str, **kwargs) -> diffana.SpecError:
    with pytest.raises(diffana.SpecError) as info:
        hf.Model.from_pyhf(spec, **kwargs)
    message = str(info.value)
    for pattern in patterns:
        assert pattern in message, (pattern, message)
    return info.value


def test_valid_spec_builds():
    assert hf.Model.from_pyhf(_spec()).par_names == ("jes", "mu", "stat_SR[0]", "stat_SR[1]")


def test_malformed_json_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"channels": [{"name": "SR",\n "samples": [}]}')
    err = _raises(path, "broken.json", "malformed JSON", "line 2")
    assert isinstance(err.__cause__, json.JSONDecodeError)


def test_missing_file(tmp_path):
    _raises(tmp_path / "absent.json", "absent.json", "cannot read")


def test_json_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    _raises(path, "list.json", "expected a JSON object")


def test_schema_violation_names_the_modifier():
    spec = _spec()
    del spec["channels"][0]["samples"][1]["modifiers"][0]["data"]["lo_data"]
    _raises(spec, "channel 'SR'", "sample 'background'", "modifier 'jes'", "schema", "'lo_data'")


def test_schema_violation_in_workspace_file(tmp_path):
    ws = _workspace()
    ws["measurements"][0]["config"]["poi"] = 1.0  # must be a string
    path = tmp_path / "ws.json"
    path.write_text(json.dumps(ws))
    _raises(path, "ws.json", "measurement 'meas'", "workspace.json", "'poi'")


def test_valid_structures_are_recorded_on_disk(tmp_path, monkeypatch):
    """With the compilation cache on, a structure that validated is recorded, and a
    later process (here: the in-memory verdicts forgotten) trusts the record; an
    invalid one is never recorded."""
    from diffana.hf import _schema

    monkeypatch.setattr(_schema, "_cache_folder", lambda: str(tmp_path))
    _schema._verdict.cache_clear()
    spec = _spec()
    spec["channels"][0]["name"] = "SR_recorded"  # a structure no other test validated
    try:
        hf.Model.from_pyhf(spec)
        records = list((tmp_path / _schema.VALID_STRUCTURES).iterdir())
        assert len(records) == 1 and records[0].stat().st_size == 0
        _schema._verdict.cache_clear()

        def not_again(*args):
            raise AssertionError("validated again despite the record")

        with monkeypatch.context() as m:
            m.setattr(_schema, "_validate_skeleton", not_again)
            hf.Model.from_pyhf(spec)
        bad = copy.deepcopy(spec)
        del bad["channels"][0]["samples"][1]["modifiers"][0]["data"]["lo_data"]
        _raises(bad, "modifier 'jes'", "schema", "'lo_data'")
        assert len(list((tmp_path / _schema.VALID_STRUCTURES).iterdir())) == 1
    finally:
        _schema._verdict.cache_clear()


def test_schema_sees_every_array_length_it_checks():
    """Validation looks at one element per numeric array (the schema treats them
    alike): an empty one still fails `minItems`."""
    spec = _spec()
    spec["channels"][0]["samples"][0]["data"] = []
    _raises(spec, "sample 'signal'", "schema")


def test_unknown_modifier_type():
    spec = _spec()
    spec["channels"][0]["samples"][0]["modifiers"].append(
        {"name": "xsec", "type": "normsyst", "data": {"hi": 1.1, "lo": 0.9}}
    )
    _raises(spec, "channel 'SR'", "sample 'signal'", "modifier 'xsec'", "'normsyst'", "normsys")
    # also without schema validation
    _raises(spec, "modifier 'xsec'", "unknown modifier type", validate=False)


def test_bin_count_mismatch_between_samples():
    spec = _spec()
    spec["channels"][0]["samples"][1]["data"] = [50.0, 60.0, 70.0]
    _raises(spec, "channel 'SR'", "sample 'background'", "3 bins", "has 2")


def test_bin_count_mismatch_between_samples_and_observations():
    ws = _workspace()
    ws["observations"][0]["data"] = [53.0]
    _raises(ws, "observation 'SR'", "1 bins", "has 2", "bin-count mismatch")
    model = hf.Model.from_pyhf(_workspace())
    with pytest.raises(diffana.SpecError, match=r"observation 'SR'.*bin-count mismatch"):
        hf.workspace_data(ws, model)


def test_missing_observation():
    ws = _workspace()
    ws["observations"][0]["name"] = "CR"
    _raises(ws, "channel 'SR'", "no observation")


def test_negative_sample_bins_are_accepted_as_pyhf_accepts_them():
    """Negative-weight simulation gives samples negative bins; pyhf accepts them, and so
    does diffana, with pyhf's likelihood. A bin whose total is negative is named."""
    spec = {
        "channels": [{"name": "SR", "samples": [
            {"name": "signal", "data": [1.0, 2.0, -0.1],
             "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": [10.0, 5.0, 3.0], "modifiers": []}]}],
        "observations": [{"name": "SR", "data": [11.0, 6.0, 3.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }  # fmt: skip
    model = hf.Model.from_pyhf(spec)
    ws = pyhf.Workspace(spec)
    pmodel = ws.model()
    pars = np.array([0.7])
    np.testing.assert_allclose(
        model.logpdf(pars, hf.workspace_data(spec, model)),
        pmodel.logpdf(pars, ws.data(pmodel))[0],
        rtol=1e-12,
    )
    spec["channels"][0]["samples"][1]["data"] = [10.0, 5.0, 0.05]
    with pytest.warns(diffana.SpecWarning, match=r"channel 'SR' bin 2 \(-0.05\)"):
        hf.Model.from_pyhf(spec)


def test_negative_uncertainty():
    spec = _spec()
    spec["channels"][0]["samples"][1]["modifiers"] = [
        {"name": "st", "type": "staterror", "data": [1.0, -1.5]}
    ]
    _raises(spec, "channel 'SR'", "sample 'background'", "staterror 'data'", "bin 1", "negative")


def test_nan_yield():
    spec = _spec()
    spec["channels"][0]["samples"][0]["data"] = np.array([np.nan, 10.0])
    _raises(spec, "channel 'SR'", "sample 'signal'", "'data'", "bin 0", "NaN")


def test_nan_in_modifier_data():
    spec = _spec()
    spec["channels"][0]["samples"][1]["modifiers"][1]["data"] = [2.0, float("nan")]
    _raises(spec, "sample 'background'", "modifier 'stat_SR'", "staterror", "bin 1", "NaN")


def test_negative_observation():
    ws = _workspace()
    ws["observations"][0]["data"] = [53.0, -2.0]
    _raises(ws, "observation 'SR'", "negative")


@pytest.mark.parametrize("key", ["hi_data", "lo_data"])
def test_histosys_template_of_wrong_length(key):
    spec = _spec()
    spec["channels"][0]["samples"][1]["modifiers"][0]["data"][key] = [52.0, 63.0, 1.0]
    _raises(spec, "sample 'background'", "modifier 'jes'", f"histosys '{key}'", "3 bins", "2")


def test_staterror_of_wrong_length():
    spec = _spec()
    spec["channels"][0]["samples"][1]["modifiers"][1]["data"] = [2.0]
    _raises(spec, "modifier 'stat_SR'", "staterror 'data' has 1 bins, expected 2")


def test_unknown_measurement():
    _raises(_workspace(), "measurement 'fit'", "not found", "['meas']", measurement="fit")
    _raises(_workspace(), "measurement index 3", measurement=3)
    _raises(_spec(), "bare model spec", measurement="meas")


def test_unknown_poi():
    _raises(_spec(), "'xsec'", "not a parameter", poi_name="xsec")
    _raises(_spec(), "'stat_SR'", "2 components", poi_name="stat_SR")


def test_lumi_without_parameter_config():
    spec = _spec()
    spec["channels"][0]["samples"][1]["modifiers"].append(
        {"name": "lumi", "type": "lumi", "data": None}
    )
    _raises(spec, "'lumi'", "parameter config", "sigmas")


def test_bad_parameter_configs():
    spec = _spec()
    spec["parameters"] = [{"name": "mu", "sigmas": [0.1]}]
    _raises(spec, "parameter config 'mu'", "normfactor", "'sigmas'")
    spec["parameters"] = [{"name": "stat_SR", "inits": [1.0]}]
    _raises(spec, "parameter config 'stat_SR'", "'inits'", "2 values")
    spec["parameters"] = [{"name": "mu", "inits": [1.0]}, {"name": "mu", "inits": [2.0]}]
    _raises(spec, "parameter config 'mu'", "twice")
    spec["parameters"] = [{"name": "stat_SR", "sigmas": [0.1, 0.0]}]
    _raises(spec, "parameter config 'stat_SR': 'sigmas' in bin 1 is 0", "positive value")
    spec["parameters"] = [{"name": "stat_SR", "sigmas": [0.1, -0.2]}]
    _raises(spec, "parameter config 'stat_SR': 'sigmas' in bin 1 is negative")


def test_shared_shapesys_and_type_clash():
    spec = _spec()
    shapesys = {"name": "unc", "type": "shapesys", "data": [1.0, 1.0]}
    for sample in spec["channels"][0]["samples"]:
        sample["modifiers"].append(copy.deepcopy(shapesys))
    _raises(spec, "shapesys modifier 'unc'", "cannot be shared")
    spec = _spec()
    spec["channels"][0]["samples"][1]["modifiers"].append(
        {"name": "mu", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
    )
    _raises(spec, "parameter 'mu'", "normfactor", "normsys")


def test_inconsistent_staterror_channels():
    spec = _spec()
    control = copy.deepcopy(spec["channels"][0])
    control["name"] = "CR"
    control["samples"][0]["modifiers"].append(
        {"name": "stat_SR", "type": "staterror", "data": [1.0, 1.0]}
    )
    spec["channels"].append(control)
    _raises(spec, "staterror modifier 'stat_SR'", "same channels")


def test_bad_modifier_settings():
    _raises(_spec(), "'code2'", "histosys", modifier_settings={"histosys": {"interpcode": "code2"}})
    _raises(_spec(), "'lumi'", modifier_settings={"lumi": {"interpcode": "code1"}})


def test_non_numeric_data():
    spec = _spec()
    spec["channels"][0]["samples"][0]["data"] = ["a", "b"]
    _raises(spec, "sample 'signal'", "schema")
    _raises(spec, "sample 'signal'", "expected numbers", validate=False)


def test_errors_under_jit_are_raised_at_trace_time():
    # shapes are checked on tracers; value checks (negative yields) are skipped
    def build(signal):
        spec = _spec()
        spec["channels"][0]["samples"][0]["data"] = signal
        return hf.Model.from_pyhf(spec).expected_actualdata(jnp.array([0.0, 1.0, 1.0, 1.0]))

    with pytest.raises(diffana.SpecError, match=r"sample 'background'.*2 bins.*has 3"):
        jax.jit(build)(jnp.ones(3))
    assert jax.jit(build)(jnp.array([-1.0, 2.0])).shape == (2,)


def test_with_yields_errors():
    model = hf.Model.from_pyhf(_spec())
    with pytest.raises(diffana.SpecError, match=r"no sample \('SR', 'bkg'\)"):
        model.with_yields({("SR", "bkg"): [1.0, 2.0]})
    with pytest.raises(diffana.SpecError, match=r"'background'.*needs 2 bins"):
        model.with_yields({("SR", "background"): [1.0, 2.0, 3.0]})
    with pytest.raises(diffana.SpecError, match="NaN"):
        model.with_yields({("SR", "background"): [1.0, np.nan]})


def test_wrong_parameter_and_data_shapes():
    model = hf.Model.from_pyhf(_spec())
    with pytest.raises(ValueError, match=r"pars must have shape \(4,\)"):
        model.logpdf(jnp.zeros(3), jnp.zeros(5))
    with pytest.raises(diffana.DataError, match=r"data must have shape \(5,\) = 2 main"):
        model.logpdf(model.init, jnp.zeros(4))
