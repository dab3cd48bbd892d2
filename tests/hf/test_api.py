"""The public surface of diffana.hf: names, metadata, consistency, docstring examples."""

from __future__ import annotations

import doctest
import importlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

import diffana.hf as hf


def test_public_names():
    expected = {
        "Model",
        "correlated_background",
        "histosys_from_variations",
        "hs3_data",
        "load_spec",
        "normsys_from_variations",
        "simple_model",
        "to_hs3",
        "uncorrelated_background",
        "workspace_data",
    }
    assert set(hf.__all__) == expected
    for name in expected:
        assert getattr(hf, name) is not None
    assert issubclass(hf.Model, eqx.Module)


@pytest.mark.parametrize(
    "module", ["diffana.hf", "diffana.hf._model", "diffana.hf._builders", "diffana.hf._hs3_model"]
)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.fixture
def model(validation_cases) -> hf.Model:
    return hf.Model.from_pyhf(validation_cases["2bin_2channel_coupledhistosys"][0])


def test_metadata_types(model):
    assert model.par_names == ("coupled_histosys", "mu")
    assert model.par_slices == {"coupled_histosys": slice(0, 1), "mu": slice(1, 2)}
    assert model.poi_name == "mu" and model.poi_index == 1
    assert model.channels == ("control", "signal")
    assert model.samples == ("background", "bkg1", "bkg2", "signal")
    assert model.channel_nbins == {"control": 2, "signal": 2}
    assert model.channel_slices == {"control": slice(0, 2), "signal": slice(2, 4)}
    assert model.modifiers == (("coupled_histosys", "histosys"), ("mu", "normfactor"))
    assert (model.npars, model.nbins, model.nauxdata) == (2, 4, 1)
    assert isinstance(model.fixed, np.ndarray) and model.fixed.dtype == np.bool_
    assert model.init.shape == (2,) and model.bounds.shape == (2, 2)
    assert model.init.dtype == jnp.float64


def test_expected_pieces_are_consistent(model):
    pars = jnp.array([0.4, 1.3])

    @jax.jit
    def pieces(pars, data):
        return {
            "full": model.expected_data(pars),
            "main": model.expected_actualdata(pars),
            "aux": model.expected_auxdata(pars),
            "main_only": model.expected_data(pars, include_auxdata=False),
            "by_sample": model.expected_by_sample(pars),
            "logpdf": model.logpdf(pars, data),
            "nll": model.nll(pars, data),
        }

    out = pieces(pars, jnp.arange(5.0) + 100.0)
    np.testing.assert_array_equal(out["full"][: model.nbins], out["main"])
    np.testing.assert_array_equal(out["full"][model.nbins :], out["aux"])
    np.testing.assert_array_equal(out["main_only"], out["main"])
    np.testing.assert_allclose(out["by_sample"].sum(axis=0), out["main"], rtol=1e-15)
    assert out["logpdf"].shape == () and float(out["nll"]) == -float(out["logpdf"])


def test_poi_choices(validation_cases):
    spec = validation_cases["2bin_statex"][0]
    assert hf.Model.from_pyhf(spec, poi_name=None).poi_index is None
    spec["channels"][0]["samples"][0]["modifiers"][0]["name"] = "xsec"
    assert hf.Model.from_pyhf(spec).poi_name is None  # a bare spec without "mu"
    assert hf.Model.from_pyhf(spec, poi_name="xsec").poi_index == 0


def test_simple_models_match_pyhf():
    pyhf.set_backend("numpy", precision="64b")
    signal, bkg = [5.0, 10.0, 0.5], [50.0, 52.0, 3.0]
    uncorrelated = pyhf.simplemodels.uncorrelated_background(signal, bkg, [5.0, 7.0, 0.0])
    correlated = pyhf.simplemodels.correlated_background(
        signal, bkg, [55.0, 54.0, 3.5], [45.0, 50.0, 2.0]
    )
    pairs = [
        (hf.uncorrelated_background(signal, bkg, [5.0, 7.0, 0.0]), uncorrelated),
        (hf.correlated_background(signal, bkg, [55.0, 54.0, 3.5], [45.0, 50.0, 2.0]), correlated),
        (hf.simple_model(signal, bkg, [5.0, 7.0, 0.0]), uncorrelated),
    ]
    for ours, ref in pairs:
        assert ours.par_names == tuple(ref.config.par_names)
        assert ours.fixed.tolist() == ref.config.suggested_fixed()
        pars = np.asarray(ours.init) + 0.1
        data = ref.expected_data(ref.config.suggested_init()) + 1.0
        np.testing.assert_allclose(float(ours.logpdf(pars, data)), ref.logpdf(pars, data)[0])
    assert hf.simple_model(signal, bkg).par_names == ("mu",)


def test_default_interpolation_follows_pyhf(validation_cases):
    spec = validation_cases["2bin_2channel_coupledhistosys"][0]
    assert hf.Model.from_pyhf(spec).structure.histosys_code == "code4p"
    custom = hf.Model.from_pyhf(spec, modifier_settings={"normsys": {"interpcode": "code1"}})
    # as pyhf: a type left out of the given settings takes its per-type default
    assert (custom.structure.normsys_code, custom.structure.histosys_code) == ("code1", "code0")


def test_same_structure_shares_compiled_code(validation_cases):
    spec = validation_cases["2bin_2channel_couplednorm"][0]
    a = hf.Model.from_pyhf(spec)
    spec["channels"][0]["samples"][0]["data"] = [11.0, 36.0]
    b = hf.Model.from_pyhf(spec)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    assert a.structure is b.structure
