"""HS3 (HEP Statistics Serialization Standard 0.2.0) in and out of diffana.

Referees: pyhs3 (scikit-hep's HS3 implementation) parses every document diffana writes
and gives its log-likelihood; pyhf gives the same numbers from the pyhf JSON. pyhs3 0.4.2
builds Python-float constants in float32 where they are exact (pytensor's autocast), so
that e.g. ``gammaln(tau + 1)`` of a shapesys constraint is computed in float32; its graphs
are built here under ``autocast_float_as("float64")``. pyhs3 is compared on small models
and pyhf's ShapeFactor example only: building and compiling its graph of the 69-parameter
3L RJ-mimic workspace took over 6 minutes (model construction alone 45 s) on 2 cores.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest
from click.testing import CliRunner

import diffana.hf as hf
import diffana.infer as infer
from diffana.cli import main
from diffana.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
WORKSPACES = ROOT.parent / "shared" / "data" / "workspaces"
SMALL = {
    "ShapeFactor": "pyhf_docs_ShapeFactor_example.json",
    "sbottom": "atlas_sbottom_multib_SUSY-2018-31_RegionA_synthsig.json",
    "RJmimic": "atlas_3L_RJmimic_SUSY-2018-06_ERJR_350p0_100p0.json",
}


def _workspace(name: str) -> dict:
    path = WORKSPACES / name
    if not path.is_file():
        pytest.skip(f"published workspace not found at {path}; real-workspace HS3 tests skipped")
    return json.loads(path.read_text())


def _spec() -> dict:
    """Two channels with every modifier type, a luminosity, a fixed parameter, a normsys
    shared between channels and a parameter shared by a normsys and a histosys."""
    sig_mods = [
        {"name": "mu", "type": "normfactor", "data": None},
        {"name": "lumi", "type": "lumi", "data": None},
        {"name": "jes", "type": "normsys", "data": {"hi": 1.1, "lo": 0.85}},
        {"name": "stat_SR", "type": "staterror", "data": [0.5, 0.9, 0.4]},
    ]
    bkg_mods = [
        {"name": "jes", "type": "histosys",
         "data": {"hi_data": [52.0, 44.0, 21.0], "lo_data": [47.0, 41.0, 19.5]}},
        {"name": "xsec", "type": "normsys", "data": {"hi": 1.05, "lo": 0.97}},
        {"name": "stat_SR", "type": "staterror", "data": [2.0, 1.5, 1.2]},
        {"name": "lumi", "type": "lumi", "data": None},
    ]  # fmt: skip
    cr_mods = [
        {"name": "shape_CR", "type": "shapesys", "data": [9.0, 6.0]},
        {"name": "sf", "type": "shapefactor", "data": None},
        {"name": "fixme", "type": "normsys", "data": {"hi": 1.2, "lo": 0.9}},
        {"name": "xsec", "type": "normsys", "data": {"hi": 1.04, "lo": 0.95}},
    ]
    return {
        "channels": [
            {"name": "SR", "samples": [
                {"name": "signal", "data": [4.0, 7.0, 3.0], "modifiers": sig_mods},
                {"name": "bkg", "data": [50.0, 43.0, 20.0], "modifiers": bkg_mods},
            ]},
            {"name": "CR", "samples": [
                {"name": "bkg", "data": [120.0, 80.0], "modifiers": cr_mods},
            ]},
        ],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "inits": [1.0],
             "bounds": [[0.9, 1.1]]},
            {"name": "mu", "bounds": [[0.0, 5.0]], "inits": [0.5]},
            {"name": "fixme", "fixed": True, "inits": [0.3]},
        ]}}],
        "observations": [
            {"name": "SR", "data": [57.0, 49.0, 25.0]},
            {"name": "CR", "data": [118.0, 86.0]},
        ],
        "version": "1.0.0",
    }  # fmt: skip


def _points(model: hf.Model, n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    init = np.asarray(model.init)
    lo, hi = np.asarray(model.bounds).T
    out = [init]
    for _ in range(n):
        step = rng.normal(0.0, 0.3, model.npars) * np.where(init == 0.0, 1.0, 0.1)
        out.append(np.clip(np.where(model.fixed, init, init + step), lo, hi))
    return out


def _pyhs3_logpdf(doc: dict, staterror_lite: bool = False):
    """pyhs3's log-likelihood of the document's first analysis, as a function of a dict
    of parameter values (the data are the document's).

    By default the model pyhs3 builds (``Workspace.model(analysis).log_prob``). pyhs3
    0.4.2's model builds a staterror's constraint per sample (Barlow-Beeston full) even
    in the standard's default lite mode, where it needs per-modifier ``data``, which the
    lite mode forbids; with `staterror_lite` the log-likelihood is assembled from
    pyhs3's own terms as its ``HistFactoryDistChannel.extended_likelihood`` does (Poisson
    terms, modifier constraints once per parameter, the channel's Barlow-Beeston-lite
    constraint) plus the auxiliary distributions.
    """
    pyhs3 = pytest.importorskip("pyhs3")
    import pytensor
    import pytensor.scalar.basic as psb
    import pytensor.tensor as pt
    from pyhs3.context import Context
    from pyhs3.distributions.histfactory.modifiers import StatErrorModifier
    from pytensor.graph.traversal import graph_inputs

    with psb.autocast_float_as("float64"):
        ws = pyhs3.Workspace(**json.loads(json.dumps(doc)))
        analysis = ws.analyses[0]
        point = ws.parameter_points[analysis.init]
        if not staterror_lite:
            expr = ws.model(analysis, progress=False).log_prob
        else:
            lh = analysis.likelihood
            params = {p.name: pt.dscalar(p.name) for p in point}
            observed = {
                f"{d.name}_observed": pt.constant(np.asarray(datum.contents, dtype=float))
                for d, datum in zip(lh.distributions, lh.data, strict=True)
            }
            ctx = Context(params, observed)
            terms, seen = [], set()
            for dist in lh.distributions:
                terms.append(pt.log(dist.likelihood(ctx)))
                for key, mod, sample_data in dist.constraint_specs():
                    if isinstance(mod, StatErrorModifier) or key in seen:
                        continue
                    seen.add(key) if key is not None else None
                    terms.append(pt.log(mod.make_constraint(ctx, sample_data)))
                lite = dist._make_barlow_beeston_lite_constraint(ctx)
                if lite is not None:
                    terms.append(pt.log(lite))
            for aux in lh.aux_distributions or []:
                terms.append(pt.log(aux.expression(Context({**params, **aux.constants}))))
            expr = pt.add(*terms)
    inputs = [
        v for v in graph_inputs([expr])
        if v.name is not None and not isinstance(v, pytensor.graph.basic.Constant)
    ]  # fmt: skip
    fn = pytensor.function(inputs, expr, mode="FAST_COMPILE", on_unused_input="ignore")

    def logpdf(values: dict[str, float]) -> float:
        return float(np.ravel(fn(*[np.asarray(values[v.name]) for v in inputs]))[0])

    return logpdf, point


def _pyhf_logpdf(spec: dict, settings=None):
    ws = pyhf.Workspace(spec)
    kwargs = {"modifier_settings": settings} if settings else {}
    pmodel = ws.model(**kwargs)
    data = ws.data(pmodel)
    return lambda pars: float(pmodel.logpdf(np.asarray(pars), data)[0])


# ----------------------------------------------------------------------------------------
# pyhs3 reads what diffana writes, with the same likelihood
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [None, {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}],
    ids=["code4-code4p", "code1-code0"],
)
def test_pyhs3_and_pyhf_agree_with_diffana_on_every_modifier_type(settings):
    spec = _spec()
    model = hf.Model.from_pyhf(spec, modifier_settings=settings)
    data = hf.workspace_data(spec, model)
    doc = hf.to_hs3(spec, modifier_settings=settings)
    pyhs3_logpdf, point = _pyhs3_logpdf(doc, staterror_lite=True)
    pyhf_logpdf = _pyhf_logpdf(spec, settings)
    assert {p.name for p in point} == set(model.par_names)
    assert {p.name for p in point if p.const} == {"fixme"}
    for pars in _points(model, 3):
        ours = float(model.logpdf(pars, data))
        assert pyhs3_logpdf(dict(zip(model.par_names, pars, strict=True))) == pytest.approx(
            ours, rel=1e-9
        )
        assert pyhf_logpdf(pars) == pytest.approx(ours, rel=1e-12)


def test_pyhs3_agrees_on_pyhf_shapefactor_example():
    spec = _workspace(SMALL["ShapeFactor"])
    model = hf.Model.from_pyhf(spec)
    data = hf.workspace_data(spec, model)
    pyhs3_logpdf, _ = _pyhs3_logpdf(hf.to_hs3(spec))
    for pars in _points(model, 2):
        values = dict(zip(model.par_names, pars, strict=True))
        assert pyhs3_logpdf(values) == pytest.approx(float(model.logpdf(pars, data)), rel=1e-9)


@pytest.mark.parametrize("name", [*SMALL.values(), "atlas_3L_resonance_hepdata99806_synthsig.json"])
def test_pyhs3_parses_published_workspaces(name):
    """pyhs3 reads the documents of published workspaces (up to 625 parameters) with
    the model's parameters, inits, fixed parameters, bounds and POI."""
    pyhs3 = pytest.importorskip("pyhs3")
    spec = _workspace(name)
    model = hf.Model.from_pyhf(spec)
    ws = pyhs3.Workspace(**json.loads(json.dumps(hf.to_hs3(model))))
    (analysis,) = ws.analyses
    point = ws.parameter_points[analysis.init]
    assert [p.name for p in point] == list(model.par_names)
    np.testing.assert_array_equal([p.value for p in point], model.init)
    np.testing.assert_array_equal([p.const for p in point], model.fixed)
    (domain,) = analysis.domains
    np.testing.assert_array_equal([domain[p] for p in model.par_names], model.bounds)
    assert analysis.parameters_of_interest == [model.poi_name]
    assert [d.name for d in analysis.likelihood.distributions] == list(spec_channels(spec))


def spec_channels(spec: dict) -> list[str]:
    return [c["name"] for c in spec["channels"]]


def test_document_layout():
    doc = hf.to_hs3(_spec())
    assert doc["metadata"]["hs3_version"] == "0.2.0"
    sr = doc["distributions"][0]
    assert sr["type"] == "histfactory_dist"
    assert sr["axes"] == [{"name": "obs_x_SR", "min": 0.0, "max": 3.0, "nbins": 3}]
    bkg = sr["samples"][1]
    assert bkg["data"] == {"contents": [50.0, 43.0, 20.0], "errors": [2.0, 1.5, 1.2]}
    histosys = bkg["modifiers"][0]
    assert histosys["parameter"] == "jes" and histosys["constraint"] == "Gauss"
    assert histosys["data"]["hi"] == {"contents": [52.0, 44.0, 21.0]}
    assert bkg["modifiers"][2]["parameters"] == ["stat_SR[0]", "stat_SR[1]", "stat_SR[2]"]
    assert bkg["modifiers"][3] == {"name": "lumi", "type": "normfactor", "parameter": "lumi"}
    lumi = doc["distributions"][2]
    assert lumi == {
        "name": "lumi_constraint", "type": "gaussian_dist", "x": 1.0, "mean": "lumi",
        "sigma": 0.02,
    }  # fmt: skip
    (lh,) = doc["likelihoods"]
    assert lh["distributions"] == ["SR", "CR"] and lh["aux_distributions"] == ["lumi_constraint"]
    (analysis,) = doc["analyses"]
    assert analysis["parameters_of_interest"] == ["mu"]
    axes = {a["name"]: (a["min"], a["max"]) for a in doc["domains"][0]["axes"]}
    assert axes["mu"] == (0.0, 5.0) and axes["lumi"] == (0.9, 1.1)
    json.dumps(doc, allow_nan=False)


# ----------------------------------------------------------------------------------------
# pyhf JSON -> HS3 -> diffana is the same model
# ----------------------------------------------------------------------------------------
def _round_trip(spec: dict, settings=None) -> tuple[hf.Model, hf.Model, dict]:
    model = hf.Model.from_pyhf(spec, modifier_settings=settings)
    doc = json.loads(json.dumps(hf.to_hs3(spec, modifier_settings=settings)))
    return model, hf.Model.from_hs3(doc), doc


def test_model_from_hs3_equals_model_from_pyhf():
    spec = _spec()
    model, back, doc = _round_trip(spec)
    assert back.par_names == model.par_names
    assert back.poi_name == "mu"
    np.testing.assert_array_equal(back.fixed, model.fixed)
    np.testing.assert_array_equal(back.bounds, model.bounds)
    np.testing.assert_array_equal(back.init, model.init)
    np.testing.assert_array_equal(back.auxdata, model.auxdata)
    data, back_data = hf.workspace_data(spec, model), hf.hs3_data(doc, back)
    np.testing.assert_array_equal(back_data, data)
    for pars in _points(model, 3):
        assert float(back.logpdf(pars, back_data)) == float(model.logpdf(pars, data))


def test_interpolation_codes_survive():
    settings = {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}
    model, back, doc = _round_trip(_spec(), settings)
    assert (back.structure.normsys_code, back.structure.histosys_code) == ("code1", "code0")
    pars = _points(model, 1)[1]
    data = hf.hs3_data(doc, back)
    assert float(back.logpdf(pars, data)) == float(model.logpdf(pars, data))


@pytest.mark.parametrize("key", list(SMALL))
def test_real_workspace_round_trip_same_logpdf(key):
    spec = _workspace(SMALL[key])
    model, back, doc = _round_trip(spec)
    data, back_data = hf.workspace_data(spec, model), hf.hs3_data(doc, back)
    assert back.par_names == model.par_names
    np.testing.assert_array_equal(back.fixed, model.fixed)
    np.testing.assert_array_equal(back.bounds, model.bounds)
    np.testing.assert_array_equal(back_data, data)
    for pars in _points(model, 2):
        assert float(back.logpdf(pars, back_data)) == float(model.logpdf(pars, data))


@pytest.mark.parametrize("key", ["sbottom"])
def test_real_workspace_from_hs3_fit_and_cls_are_pyhf_s(key):
    """The fit and CLs of the model read from HS3 against pyhf's (numpy backend, stored
    by tests/infer/make_pyhf_reference.py), with the tolerances of
    tests/infer/test_real_workspaces.py. One published workspace (67 parameters, every
    modifier type but shapesys and shapefactor) keeps the suite fast; the others' models
    are identical to those read from pyhf JSON (test_real_workspace_round_trip_same_logpdf),
    whose fits tests/infer checks."""
    reference = json.loads((ROOT / "tests" / "data" / "pyhf_reference.json").read_text())
    ref = reference[SMALL[key]]
    spec = _workspace(SMALL[key])
    doc = json.loads(json.dumps(hf.to_hs3(spec)))
    model = hf.Model.from_hs3(doc)
    data = hf.hs3_data(doc, model)
    res = infer.fit(data=data, model=model)
    assert bool(res.converged)
    assert float(res.nll) <= ref["nll_min"] + 1e-9
    assert float(res.nll) == pytest.approx(ref["nll_min"], rel=1e-9)
    cls, band = infer.hypotest(1.0, data, model, return_expected_set=True)
    assert abs(float(cls) - ref["cls_obs"]) < 1e-5
    np.testing.assert_allclose(band, ref["cls_exp"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("key", ["sbottom", "RJmimic"])
def test_hs3_to_pyhf_to_hs3_is_stable(key):
    spec = _workspace(SMALL[key])
    doc = json.loads(json.dumps(hf.to_hs3(spec)))
    back = hf.Model.from_hs3(doc)
    workspace = back.to_pyhf(hf.hs3_data(doc, back))
    assert json.loads(json.dumps(hf.to_hs3(workspace))) == doc


def test_hs3_to_pyhf_to_hs3_is_stable_with_codes():
    settings = {"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}
    doc = hf.to_hs3(_spec(), modifier_settings=settings)
    back = hf.Model.from_hs3(doc)
    assert hf.to_hs3(back) == doc
    assert hf.to_hs3(back.to_pyhf(), modifier_settings=settings) == doc


def test_to_hs3_of_a_model_uses_the_given_data():
    model = hf.simple_model([5.0, 10.0], [50.0, 60.0], [5.0, 12.0])
    doc = hf.to_hs3(model, data=[52.0, 65.0])
    assert doc["data"][0]["contents"] == [52.0, 65.0]
    asimov = hf.to_hs3(model)
    assert asimov["data"][0]["contents"] == [55.0, 70.0]


def test_from_hs3_takes_traced_yields():
    spec = hf.simple_model([5.0, 10.0], [50.0, 60.0], [5.0, 12.0]).to_pyhf()
    doc = hf.to_hs3(spec)
    data = jnp.array([52.0, 65.0, 100.0, 25.0])

    def nll_hs3(signal):
        d = copy.deepcopy(doc)
        d["distributions"][0]["samples"][0]["data"]["contents"] = signal
        m = hf.Model.from_hs3(d)
        return m.nll(m.init, data)

    def nll_pyhf(signal):
        s = copy.deepcopy(spec)
        s["channels"][0]["samples"][0]["data"] = signal
        m = hf.Model.from_pyhf(s)
        return m.nll(m.init, data)

    signal = jnp.array([4.0, 7.0])
    grad = jax.grad(nll_hs3)(signal)
    np.testing.assert_allclose(grad, jax.grad(nll_pyhf)(signal), rtol=1e-12)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_from_hs3_reads_a_path(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(hf.to_hs3(_spec())))
    model = hf.Model.from_hs3(path)
    assert model.poi_name == "mu"
    assert hf.hs3_data(str(path), model).shape == (model.nbins + model.nauxdata,)


def test_reads_root_style_conventions():
    """Names the standard uses (``lin``/``poly6``, no staterror parameters), a luminosity
    centred on a const parameter, an analysis without init, a likelihood by name."""
    doc = hf.to_hs3(_spec())
    sr = doc["distributions"][0]
    for smp in sr["samples"]:
        for mod in smp["modifiers"]:
            if mod["type"] == "staterror":
                del mod["parameters"]
            if mod["type"] == "histosys":
                mod["data"]["interpolation"] = "poly6"
    doc["distributions"][2]["x"] = "nominalLumi"
    doc["parameter_points"][0]["parameters"].append(
        {"name": "nominalLumi", "value": 1.0, "const": True}
    )
    model = hf.Model.from_hs3(doc)
    assert "stat_SR[0]" in model.par_names
    reference = hf.Model.from_pyhf(_spec())
    pars = _points(reference, 1)[1]
    assert float(model.logpdf(pars, hf.hs3_data(doc, model))) == pytest.approx(
        float(reference.logpdf(pars, hf.workspace_data(_spec(), reference))), rel=1e-14
    )
    by_likelihood = hf.Model.from_hs3(doc, analysis="meas_likelihood")
    assert by_likelihood.poi_name is None and by_likelihood.npars == model.npars


# ----------------------------------------------------------------------------------------
# documents diffana cannot read or write
# ----------------------------------------------------------------------------------------
def _doc() -> dict:
    return hf.to_hs3(_spec())


def _raises(doc, match: str, analysis=None):
    with pytest.raises(SpecError, match=match):
        hf.Model.from_hs3(doc, analysis=analysis)


def test_unsupported_distribution_names_its_path():
    doc = _doc()
    doc["distributions"].append(
        {"name": "x", "type": "gaussian_dist", "x": "obs", "mean": 0.0, "sigma": 1.0}
    )
    doc["likelihoods"][0]["distributions"].append("x")
    doc["likelihoods"][0]["data"].append("obsData_SR")
    _raises(doc, r"distributions\[3\] \(name 'x', type 'gaussian_dist'\): is outside the "
            r"HistFactory subset.*supported: 'histfactory_dist'")  # fmt: skip


def test_unsupported_modifier_and_constraint():
    doc = _doc()
    doc["distributions"][1]["samples"][0]["modifiers"][0]["type"] = "custom"
    _raises(
        doc,
        r"distributions\[1\] \(name 'CR', type 'histfactory_dist'\)\.samples\[0\] "
        r"\(name 'bkg'\)\.modifiers\[0\] \(name 'shape_CR', type 'custom'\): modifier type "
        r"'custom' is not part.*supported: \['normfactor'",
    )
    doc = _doc()
    doc["distributions"][0]["samples"][0]["modifiers"][2]["constraint"] = "LogNormal"
    _raises(doc, r"modifiers\[2\] \(name 'jes', type 'normsys'\)\.constraint: .*'Gauss'")


def test_missing_fields_name_their_path():
    doc = _doc()
    del doc["distributions"][0]["samples"][1]["data"]
    _raises(doc, r"distributions\[0\] \(name 'SR', .*samples\[1\] \(name 'bkg'\): missing "
            r"field 'data'")  # fmt: skip
    doc = _doc()
    del doc["distributions"][0]["samples"][0]["modifiers"][2]["data"]["hi"]
    _raises(doc, r"modifiers\[2\] \(name 'jes', type 'normsys'\)\.data: missing field 'hi'")
    doc = _doc()
    del doc["distributions"][0]["samples"][1]["data"]["errors"]
    _raises(doc, r"type 'staterror'\): a staterror modifier needs the sample's 'data.errors'")
    doc = _doc()
    doc["data"][1]["contents"] = [1.0]
    _raises(doc, r"data\[1\] \(name 'obsData_CR', type 'binned'\)\.contents: has 1 entries "
            r"but the distribution has 2 bins")  # fmt: skip


def test_dangling_references_name_their_path():
    doc = _doc()
    doc["likelihoods"][0]["distributions"][1] = "nowhere"
    _raises(doc, r"likelihoods\[0\] \(name 'meas_likelihood'\)\.distributions\[1\]: refers "
            r"to distribution 'nowhere', which the document does not define")  # fmt: skip
    doc = _doc()
    doc["analyses"][0]["likelihood"] = "gone"
    _raises(doc, r"analyses\[0\] \(name 'meas'\)\.likelihood: refers to likelihood 'gone'")
    doc = _doc()
    doc["likelihoods"][0]["data"][0] = "nodata"
    _raises(doc, r"\.data\[0\]: refers to data 'nodata'")
    doc = _doc()
    doc["analyses"][0]["domains"] = ["nodomain"]
    _raises(doc, r"analyses\[0\] \(name 'meas'\)\.domains\[0\]: refers to domain 'nodomain'")
    doc = _doc()
    doc["likelihoods"][0]["aux_distributions"] = ["nolumi"]
    _raises(doc, r"aux_distributions\[0\]: refers to distribution 'nolumi'")
    _raises(_doc(), r"no analysis or likelihood named 'other'", analysis="other")


def test_mixed_interpolation_codes_and_partly_const_modifiers():
    doc = _doc()
    doc["distributions"][0]["samples"][1]["modifiers"][1]["data"]["interpolation"] = "code1"
    _raises(doc, r"normsys interpolation 'code1' differs from 'code4' at distributions\[0\]")
    doc = _doc()
    doc["parameter_points"][0]["parameters"].append({"name": "sf[0]", "value": 1.0, "const": True})
    _raises(doc, r"\['sf\[0\]'\] is 'const' while other bins of the same modifier are not")


def test_not_hs3_and_unreadable_files(tmp_path):
    with pytest.raises(SpecError, match="not an HS3 document"):
        hf.Model.from_hs3(_spec())
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SpecError, match=r"bad\.json: malformed JSON at line 1"):
        hf.Model.from_hs3(bad)
    doc = _doc()
    del doc["distributions"][0]["samples"][0]["name"]
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SpecError, match=r"doc\.json: distributions\[0\].*missing field 'name'"):
        hf.Model.from_hs3(path)


def test_what_hs3_cannot_hold_is_an_error():
    spec = _spec()
    spec["channels"][0]["samples"][0]["modifiers"][3]["name"] = "stat_signal"
    with pytest.raises(SpecError, match=r"channel 'SR': staterror modifiers .* one staterror"):
        hf.to_hs3(spec)
    spec = _spec()
    spec["measurements"][0]["config"]["parameters"].append({"name": "xsec", "auxdata": [0.5]})
    with pytest.raises(SpecError, match=r"parameter config 'xsec': \['auxdata'\] cannot be"):
        hf.to_hs3(spec)


# ----------------------------------------------------------------------------------------
# diffana convert
# ----------------------------------------------------------------------------------------
def test_convert_both_ways(tmp_path):
    runner = CliRunner()
    src = tmp_path / "ws.json"
    src.write_text(json.dumps(_spec()))
    out = tmp_path / "hs3.json"
    result = runner.invoke(main, ["--no-compile-cache", "convert", str(src), str(out)])
    assert result.exit_code == 0, result.output
    assert "(hs3)" in result.output
    doc = json.loads(out.read_text())
    assert doc == hf.to_hs3(_spec())
    back = tmp_path / "back.json"
    result = runner.invoke(main, ["--no-compile-cache", "convert", str(out), str(back)])
    assert result.exit_code == 0, result.output
    workspace = json.loads(back.read_text())
    assert "channels" in workspace
    model = hf.Model.from_pyhf(workspace)
    reference = hf.Model.from_pyhf(_spec())
    pars = _points(reference, 1)[1]
    assert float(model.logpdf(pars, hf.workspace_data(workspace, model))) == float(
        reference.logpdf(pars, hf.workspace_data(_spec(), reference))
    )
    same = tmp_path / "same.json"
    result = runner.invoke(
        main, ["--no-compile-cache", "convert", "--to", "hs3", str(out), str(same)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(same.read_text()) == doc


def test_convert_errors_are_one_line_and_leave_no_file(tmp_path):
    runner = CliRunner()
    doc = _doc()
    doc["likelihoods"][0]["distributions"][0] = "nowhere"
    src = tmp_path / "broken.json"
    src.write_text(json.dumps(doc))
    out = tmp_path / "out.json"
    result = runner.invoke(main, ["--no-compile-cache", "convert", str(src), str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(src) in lines[0] and "'nowhere'" in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == [src]
    neither = tmp_path / "neither.json"
    neither.write_text("{}")
    result = runner.invoke(main, ["--no-compile-cache", "convert", str(neither), str(out)])
    assert result.exit_code == 2 and "neither an HS3 document" in result.output
    result = runner.invoke(
        main, ["--no-compile-cache", "convert", str(tmp_path / "missing.json"), str(out)]
    )
    assert result.exit_code == 2 and "missing.json" in result.output
    result = runner.invoke(
        main, ["--no-compile-cache", "convert", str(neither), str(tmp_path / "no" / "o.json")]
    )
    assert result.exit_code == 2
