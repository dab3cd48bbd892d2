"""Systematic variations: applying them, vmapped evaluation, modifiers, gradients."""

from __future__ import annotations

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

import diffana
import diffana.systematics as syst
from diffana.hf import Model
from diffana.io import Events, Objects
from diffana.relax import cut, hist
from diffana.testing import assert_grad_matches_fd

EDGES = jnp.array([0.0, 40.0, 80.0, 120.0, 200.0])


def _events(seed: int, n: int = 400) -> Events:
    rng = np.random.default_rng(seed)
    pt = rng.exponential(40.0, (n, 2)) + 5.0
    pt = -np.sort(-pt, axis=1)
    mask = rng.uniform(size=(n, 2)) < [0.95, 0.7]
    mask[:, 1] &= mask[:, 0]
    jet_pt = rng.exponential(50.0, (n, 3)) + 20.0
    muons = Objects({"pt": jnp.asarray(pt)}, jnp.asarray(mask))
    jets = Objects(
        {
            "pt": jnp.asarray(jet_pt),
            "pt_jesUp": jnp.asarray(jet_pt * 1.03),
            "pt_jesDown": jnp.asarray(jet_pt * 0.97),
        },
        jnp.ones((n, 3), bool),
    )
    met = rng.exponential(30.0, n)
    pu = rng.uniform(0.5, 1.5, n)
    columns = {
        "MET_pt": jnp.asarray(met),
        "MET_pt_jesUp": jnp.asarray(met * 1.05),
        "MET_pt_jesDown": jnp.asarray(met * 0.95),
        "puWeight": jnp.asarray(pu),
        "puWeightUp": jnp.asarray(pu * rng.uniform(0.9, 1.2, n)),
        "puWeightDown": jnp.asarray(pu * rng.uniform(0.8, 1.1, n)),
    }
    return Events({"Muon": muons, "Jet": jets}, columns, jnp.asarray(0.1 * pu))


SAMPLES = {"signal": _events(1, 300), "background": _events(2, 600)}
VARIATIONS = [
    syst.ColumnShift("mu_scale", {"Muon.pt": (1.02, 0.98)}),
    syst.ColumnShift(
        "jes",
        {"Jet.pt": ("pt_jesUp", "pt_jesDown"), "MET_pt": ("MET_pt_jesUp", "MET_pt_jesDown")},
        modifier="normsys+histosys",
    ),
    syst.WeightVariation("pileup", "puWeightUp", "puWeightDown", nominal="puWeight"),
    syst.WeightVariation("bkg_eff", 1.05, 0.95, modifier="normsys", samples=("background",)),
]


def pipeline(theta, events):
    """Soft selection on the leading muon, the leading jet and MET; KDE of muon pT."""
    mu = events["Muon"]
    w = (
        events.weights
        * cut(mu["pt"][:, 0], theta[0], 2.0)
        * mu.mask[:, 0]
        * cut(events["Jet.pt"][:, 0], theta[1], 3.0)
        * cut(events["MET_pt"], theta[2], 4.0, "<")
    )
    return hist(mu["pt"][:, 0], EDGES, 5.0, weights=w)


THETA = jnp.array([20.0, 40.0, 60.0])


def test_vary_column_shifts():
    ev = SAMPLES["signal"]
    up = syst.vary(ev, VARIATIONS[0], "up")
    np.testing.assert_allclose(up["Muon.pt"], 1.02 * ev["Muon.pt"])
    assert up["Jet.pt"] is ev["Jet.pt"] and up.weights is ev.weights
    down = syst.vary(ev, VARIATIONS[1], "down")
    assert down["Jet.pt"] is ev["Jet.pt_jesDown"]
    assert down["MET_pt"] is ev["MET_pt_jesDown"]
    assert down["Muon.pt"] is ev["Muon.pt"]
    shifted = syst.vary(
        ev, syst.ColumnShift("c", {"MET_pt": (lambda e: e["MET_pt"] + 1, 0.5)}), "up"
    )
    np.testing.assert_allclose(shifted["MET_pt"], ev["MET_pt"] + 1)


def test_vary_weights():
    ev = SAMPLES["signal"]
    up = syst.vary(ev, VARIATIONS[2], "up")
    np.testing.assert_allclose(up.weights, 0.1 * ev["puWeightUp"], rtol=1e-12)
    assert up["Muon.pt"] is ev["Muon.pt"]
    np.testing.assert_allclose(syst.vary(ev, VARIATIONS[3], "down").weights, 0.95 * ev.weights)
    new = syst.vary(ev, syst.WeightVariation("w", lambda e: 2 * e.weights, 1.0), "up")
    np.testing.assert_allclose(new.weights, 2 * ev.weights)
    # events whose nominal factor is 0 keep weight 0 (no division by zero, no NaN)
    zero = ev.replace("puWeight", ev["puWeight"].at[0].set(0.0)).replace(
        "weights", ev.weights.at[0].set(0.0)
    )
    w = syst.vary(zero, VARIATIONS[2], "up").weights
    assert float(w[0]) == 0.0 and np.all(np.isfinite(w))


def test_vectorized_equals_loop_and_labels():
    ev = SAMPLES["background"]

    @functools.partial(jax.jit, static_argnames="vectorize")
    def run(theta, events, vectorize):
        return syst.evaluate_variations(
            pipeline, theta, events, VARIATIONS, sample="background", vectorize=vectorize
        )

    a, b = run(THETA, ev, True), run(THETA, ev, False)
    labels = syst.variant_labels(VARIATIONS, "background")
    assert labels[:3] == ["nominal", "mu_scale_up", "mu_scale_down"]
    assert set(a) == set(b) == set(labels)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-12)
    assert "bkg_eff_up" not in syst.variant_labels(VARIATIONS, "signal")
    # the variations move the histograms the way they should
    assert float(a["mu_scale_up"][3]) > float(a["nominal"][3])  # harder muons
    np.testing.assert_allclose(a["bkg_eff_up"], 1.05 * a["nominal"], rtol=1e-12)


def test_modifiers_numbers():
    h = syst.evaluate_variations(
        pipeline, THETA, SAMPLES["background"], VARIATIONS, sample="background"
    )
    mods = syst.sample_modifiers("background", h, VARIATIONS)
    assert [(m["name"], m["type"]) for m in mods] == [
        ("mu_scale", "histosys"),
        ("jes", "normsys"),
        ("jes", "histosys"),
        ("pileup", "histosys"),
        ("bkg_eff", "normsys"),
    ]
    np.testing.assert_allclose(mods[0]["data"]["hi_data"], h["mu_scale_up"])
    total = float(jnp.sum(h["nominal"]))
    np.testing.assert_allclose(mods[1]["data"]["hi"], jnp.sum(h["jes_up"]) / total)
    # split: the histosys part keeps the nominal normalisation
    np.testing.assert_allclose(jnp.sum(mods[2]["data"]["hi_data"]), total, rtol=1e-12)
    np.testing.assert_allclose(jnp.sum(mods[2]["data"]["lo_data"]), total, rtol=1e-12)
    np.testing.assert_allclose(mods[4]["data"]["hi"], 1.05, rtol=1e-12)
    with pytest.raises(diffana.SpecError, match="no histogram 'pileup_up'"):
        syst.sample_modifiers("background", {"nominal": h["nominal"]}, VARIATIONS[2:3])


def _histograms(theta):
    return syst.sample_histograms(pipeline, theta, SAMPLES, VARIATIONS)


def _workspace(theta, hists=None):
    hists = _histograms(theta) if hists is None else hists
    return syst.build_workspace(
        hists, VARIATIONS, normsys={"luminosity": {"signal": 0.025, "background": 0.025}}
    )


def test_workspace_agrees_with_pyhf(tmp_path):
    import json

    from diffana.io import write_workspace

    ws = _workspace(THETA, jax.jit(_histograms)(THETA))
    path = write_workspace(tmp_path / "ws.json", ws)
    pws = pyhf.Workspace(json.loads(path.read_text()))
    pmodel = pws.model()
    model = Model.from_pyhf(ws)
    assert model.par_names == tuple(pmodel.config.par_names)
    rng = np.random.default_rng(0)
    pars = np.asarray(pmodel.config.suggested_init()) + rng.normal(0, 0.3, pmodel.config.npars)
    pars[pmodel.config.poi_index] = 1.3
    data = np.asarray(pws.data(pmodel))
    np.testing.assert_allclose(
        model.expected_data(jnp.asarray(pars)), pmodel.expected_data(pars), rtol=1e-10
    )
    np.testing.assert_allclose(
        model.logpdf(jnp.asarray(pars), jnp.asarray(data)), pmodel.logpdf(pars, data)[0], rtol=1e-10
    )


def test_templates_and_likelihood_are_differentiable():
    def jes_hi(theta):
        background = _workspace(theta)["channels"][0]["samples"][1]
        (jes,) = [
            m for m in background["modifiers"] if (m["name"], m["type"]) == ("jes", "histosys")
        ]
        return jes["data"]["hi_data"][2]

    assert_grad_matches_fd(jax.jit(jes_hi), THETA, rtol=1e-5)

    def nll(theta):
        model = Model.from_pyhf(_workspace(theta))
        data = model.expected_data(model.init)
        pars = model.init.at[model.poi_index].set(0.0)
        return model.nll(pars, data)

    grad = assert_grad_matches_fd(jax.jit(nll), THETA, rtol=1e-5)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: syst.ColumnShift("", {"x": (1.1, 0.9)}), "non-empty string"),
        (lambda: syst.ColumnShift("a", {}), "non-empty mapping"),
        (lambda: syst.ColumnShift("a", {"x": (1.1,)}), r"must be \(up, down\)"),
        (lambda: syst.ColumnShift("a", {"x": (1.1, None)}), "a shift is"),
        (lambda: syst.ColumnShift("a", {"x": (1.1, 0.9)}, modifier="shapesys"), "modifier must be"),
        (lambda: syst.WeightVariation("a", 1.1, 0.9, samples="ttbar"), "list of sample names"),
        (lambda: syst.variant_labels([VARIATIONS[0], VARIATIONS[0]]), "unique"),
    ],
)
def test_bad_definitions(make, match):
    with pytest.raises(diffana.DataError, match=match):
        make()


def test_unknown_targets_name_the_candidates():
    ev = SAMPLES["signal"]
    with pytest.raises(diffana.DataError, match=r"no column or field 'Muon.ptt'.*'pt'"):
        syst.vary(ev, syst.ColumnShift("a", {"Muon.ptt": (1.1, 0.9)}), "up")
    with pytest.raises(diffana.DataError, match=r"no column or field 'pt_jesUpp'"):
        syst.vary(ev, syst.ColumnShift("a", {"Jet.pt": ("pt_jesUpp", 0.9)}), "up")
    with pytest.raises(diffana.DataError, match=r"no column or field 'puweight'.*'puWeight'"):
        syst.vary(ev, syst.WeightVariation("a", "puweight", 1.0), "up")
    with pytest.raises(diffana.DataError, match="shape"):
        syst.vary(ev, syst.ColumnShift("a", {"MET_pt": (lambda e: e["MET_pt"][:5], 1.0)}), "up")
    with pytest.raises(diffana.SpecError, match="signal sample"):
        syst.build_workspace({"bkg": {"nominal": jnp.ones(2)}})
    with pytest.raises(diffana.SpecError, match="unknown sample"):
        syst.build_workspace(
            {"signal": {"nominal": jnp.ones(2)}, "bkg": {"nominal": jnp.ones(2)}},
            normsys={"xsec": {"ttbar": 0.1}},
        )


def test_docstring_examples():
    assert doctest.testmod(syst).failed == 0


def test_variations_are_hashable_static_arguments():
    assert len({*VARIATIONS}) == len(VARIATIONS)
    assert VARIATIONS[1].targets["MET_pt"] == ("MET_pt_jesUp", "MET_pt_jesDown")
    run = jax.jit(syst.evaluate_variations, static_argnums=(0, 3), static_argnames="sample")
    out = run(pipeline, THETA, SAMPLES["signal"], tuple(VARIATIONS), sample="signal")
    assert set(out) == set(syst.variant_labels(VARIATIONS, "signal"))
