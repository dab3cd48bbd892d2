"""The dimuon analysis: layout, systematics from file branches, object-level selection."""

from __future__ import annotations

import json
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

import diffana
from diffana.bench import method_settings
from diffana.hf import Model
from diffana.problems import Sample, find_definition, load_problem
from diffana.problems import _dimuon as nano
from diffana.systematics import evaluate_variations, vary
from diffana.testing import assert_grad_matches_fd

EDGES = tuple(float(e) for e in np.linspace(130.0, 290.0, 5))


@pytest.fixture(scope="module")
def events(tiny_problem, dataset):
    return tiny_problem.read_samples(dataset)


def _reference_selection(ev, thresholds):
    """Hard selection in numpy: leading two selected muons, opposite charge, vetoes."""
    pt, iso, q = (np.asarray(ev[f"Muon.{f}"]) for f in ("pt", "pfRelIso04_all", "charge"))
    mask = np.asarray(ev["Muon"].mask)
    sel = mask & (pt > thresholds[0]) & (iso < thresholds[1])
    jets = np.asarray(ev["Jet"].mask) & (np.asarray(ev["Jet.pt"]) > 30.0)
    veto = np.any(jets & (np.asarray(ev["Jet.btagDeepB"]) > thresholds[2]), axis=1)
    met_ok = np.asarray(ev["MET_pt"]) < thresholds[3]
    masses, weights = [], []
    w = np.asarray(ev.weights)
    for i in range(len(w)):
        idx = np.flatnonzero(sel[i])
        if len(idx) < 2 or veto[i] or not met_ok[i] or q[i, idx[0]] * q[i, idx[1]] >= 0:
            continue
        a, b = idx[:2]
        p = []
        for k in (a, b):
            pt_k, eta_k, phi_k = (float(ev[f"Muon.{f}"][i, k]) for f in ("pt", "eta", "phi"))
            m_k = float(ev["Muon.mass"][i, k])
            px, py, pz = pt_k * np.cos(phi_k), pt_k * np.sin(phi_k), pt_k * np.sinh(eta_k)
            p.append((np.sqrt(px**2 + py**2 + pz**2 + m_k**2), px, py, pz))
        e, px, py, pz = (p[0][j] + p[1][j] for j in range(4))
        masses.append(np.sqrt(e**2 - px**2 - py**2 - pz**2))
        weights.append(w[i])
    return np.histogram(masses, EDGES, weights=weights)[0]


def test_layout_round_trip(events):
    layout = nano.NanoAODLayout()
    ev = events["ttbar"]
    x = layout.flatten(ev)
    assert x.shape == (ev.n_events, len(layout.names))
    back = layout.unflatten(x, ev.weights)
    for coll in ("Muon", "Jet"):
        np.testing.assert_array_equal(back[coll].mask, ev[coll].mask)
        for f in ev[coll].fields:
            np.testing.assert_array_equal(back[coll][f], ev[coll][f])
    for c in ev.columns:
        np.testing.assert_array_equal(back[c], ev[c])
    np.testing.assert_allclose(x[:, layout.index("btag_max")], nano.derived_features(ev)[:, 4])
    with pytest.raises(diffana.DataError, match="no feature 'mll2'"):
        layout.index("mll2")


def test_weights_normalised_to_yields(tiny_problem, events):
    for name, ev in events.items():
        total = float(jnp.sum(ev.weights / ev["puWeight"]))
        np.testing.assert_allclose(total, tiny_problem.yields[name], rtol=1e-5)


def test_variations_come_from_file_branches(tiny_problem, events):
    ev = events["ttbar"]
    mu_scale, jes, pileup = tiny_problem.variations
    up = vary(ev, jes, "up")
    np.testing.assert_array_equal(up["Jet.pt"], ev["Jet.pt_jesUp"])
    np.testing.assert_array_equal(up["MET_pt"], ev["MET_pt_jesUp"])
    np.testing.assert_array_equal(up["Jet.pt_jesDown"], ev["Jet.pt"])  # companions move along
    np.testing.assert_allclose(
        up["Jet.pt_jesUp"] * ev["Jet.pt"], ev["Jet.pt_jesUp"] ** 2, rtol=1e-12
    )
    np.testing.assert_allclose(vary(ev, mu_scale, "down")["Muon.pt"], 0.99 * ev["Muon.pt"])
    np.testing.assert_allclose(
        vary(ev, pileup, "up").weights, ev.weights * ev["puWeightUp"] / ev["puWeight"], rtol=1e-12
    )


def test_hard_selection_matches_reference(events):
    thresholds = jnp.asarray(nano.DEFAULT_CUTS)
    pipe = nano.DimuonCuts.from_thresholds(nano.DEFAULT_CUTS, EDGES)
    for name in ("signal", "ttbar", "fakes"):
        ev = events[name]
        ours = eqx.filter_jit(pipe.hard_histogram_events)(ev)
        np.testing.assert_allclose(
            ours, _reference_selection(ev, np.asarray(thresholds)), rtol=1e-10
        )
    _, weights = nano.pair_selection(thresholds, events["signal"], None, hard=True)
    assert set(np.unique(np.asarray(weights) > 0).tolist()) <= {True, False}
    assert np.all(np.sum(np.asarray(weights) > 0, axis=1) <= 1)  # at most one pair per event


def test_soft_selection_tends_to_hard(events):
    pipe = nano.DimuonCuts.from_thresholds((30.0, 0.12, 0.4, 70.0), EDGES)
    ev = events["ttbar"]
    hard = eqx.filter_jit(pipe.hard_histogram_events)(ev)
    soft = eqx.filter_jit(pipe.histogram_events)
    errors = [float(jnp.abs(soft(ev, s) - hard).sum()) for s in (0.3, 0.03, 1e-4)]
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 1e-3 * float(hard.sum())

    # the soft yield is smooth in the thresholds, with the gradient of finite differences
    def total(params):
        return nano.DimuonCuts(params, EDGES).histogram_events(ev, 0.2)[1]

    grad = assert_grad_matches_fd(jax.jit(total), pipe.params, rtol=1e-5)
    assert grad[0] < 0 and grad[1] > 0  # tighter pT and isolation cuts remove events


def test_templates_match_events_path(tiny_problem, tiny_train, events):
    """`Problem.templates` (flat samples) equals `evaluate_variations` on `Events`."""
    pipe = nano.DimuonCuts.from_thresholds(nano.DEFAULT_CUTS, EDGES)
    sample = {"dy": tiny_train["dy"]}
    flat = {
        k: eqx.filter_jit(pipe.hard_histogram)(s) for k, s in tiny_problem.templates(sample).items()
    }
    ev = nano.NanoAODLayout().unflatten(jnp.asarray(sample["dy"].x), jnp.asarray(sample["dy"].w))
    direct = eqx.filter_jit(evaluate_variations)(
        lambda p, e: p.hard_histogram_events(e), pipe, ev, tiny_problem.variations
    )
    assert {k[1] for k in flat} == set(direct)
    for label, h in direct.items():
        np.testing.assert_allclose(flat[("dy", label)], h, rtol=1e-12)
    assert float(direct["mu_scale_up"][0]) != float(direct["nominal"][0])


def test_workspace_agrees_with_pyhf(tiny_problem, tiny_train):
    pipe = nano.DimuonCuts.from_thresholds(nano.DEFAULT_CUTS, EDGES)
    yields = {
        k: np.asarray(eqx.filter_jit(pipe.hard_histogram)(s))
        for k, s in tiny_problem.templates(tiny_train).items()
    }
    expected = {
        "syst": {"mu", "mu_scale", "jes", "pileup", "lumi_unc", "ttbar_xsec"},
        "stat": {"mu"},
    }
    for scenario, names in expected.items():
        ws = tiny_problem.workspace(yields, scenario)
        spec = json.loads(json.dumps(ws, default=lambda a: np.asarray(a).tolist()))
        pmodel = pyhf.Workspace(spec).model()
        model = Model.from_pyhf(ws)
        assert model.par_names == tuple(pmodel.config.par_names)
        assert set(model.par_names) == names
        pars = np.asarray(pmodel.config.suggested_init()) + 0.2
        np.testing.assert_allclose(
            model.expected_data(jnp.asarray(pars)), pmodel.expected_data(pars), rtol=1e-10
        )


def test_neural_pipeline(tiny_train, events):
    pipe = nano.methods._neural_pipeline(
        tiny_train, {"hidden": [8, 8], "cut_slope": 0.05}, jax.random.key(0), EDGES, 4
    )
    ev = events["signal"]

    @eqx.filter_jit
    def run(pipe, ev):
        m, w = nano.pair_selection(pipe.cuts.physical_thresholds(), ev, None, hard=True)
        in_range = jnp.sum(jnp.where((m >= 130) & (m < 290), w, 0.0))
        return (
            pipe.histogram_events(ev, 0.05),
            pipe.hard_histogram_events(ev),
            pipe.cuts.hard_histogram_events(ev).sum(),
            in_range,
            jnp.sum(w),
        )

    soft, hard, cuts_total, in_range, selected = run(pipe, ev)
    np.testing.assert_allclose(cuts_total, in_range, rtol=1e-12)
    np.testing.assert_allclose(hard.sum(), selected, rtol=1e-12)  # every score is in [0, 1]
    assert np.all(np.isfinite(soft))
    assert abs(float(soft.sum()) - float(hard.sum())) < 0.05 * float(hard.sum())

    @eqx.filter_jit
    @eqx.filter_grad
    def grads(net):
        moved = nano.DimuonNeural(net, pipe.cuts, pipe.shift, pipe.scale, 4, 0.05)
        return jnp.sum(moved.histogram_events(ev, 0.1) * jnp.arange(4.0))

    leaves = jax.tree.leaves(eqx.filter(grads(pipe.net), eqx.is_array))
    assert all(np.all(np.isfinite(g)) for g in leaves) and any(np.any(g != 0) for g in leaves)


def test_loss_gradient_matches_central_differences(tiny_problem, tiny_train):
    """End to end: cuts -> soft templates with systematics -> HistFactory -> -Z0."""
    loss = nano.dimuon_loss(tiny_problem, "syst", "discovery")
    batch = {k: Sample(jnp.asarray(s.x), jnp.asarray(s.w)) for k, s in tiny_train.items()}

    @jax.jit
    def value_and_grad(params):
        def f(p):
            return loss(nano.DimuonCuts(p, tuple(tiny_problem.edges)), batch, 0.3)[0]

        return jax.value_and_grad(f)(params)

    params = jnp.asarray(nano.methods._to_params((28.0, 0.12, 0.4, 70.0)))
    value, grad = value_and_grad(params)
    assert np.isfinite(value) and value < 0
    eps = 1e-4
    for i in range(4):
        step = jnp.zeros(4).at[i].set(eps)
        fd = (value_and_grad(params + step)[0] - value_and_grad(params - step)[0]) / (2 * eps)
        np.testing.assert_allclose(grad[i], fd, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize(
    ("replace", "match"),
    [
        (("mass_range = [130.0, 290.0]", "mass_range = [300.0, 290.0]"), "mass_range"),
        (("mass_range = [130.0, 290.0]", "mass_range = [100.0, 290.0]"), "below the skim"),
        (("fakes = 200000.0 }", "fakes = -1.0 }"), r"yields\.fakes must be a number > 0"),
        (("signal = 40.0, ", ""), r"\[analysis\]\.yields\.signal is required"),
        (("ttbar_xsec = { ttbar = 0.1 }", "ttbar_xsec = { top = 0.1 }"), "normsys.ttbar_xsec"),
        (('feature = "mu2_pt"', 'feature = "mu3_pt"'), r"cuts\[0\]\.feature must be one of 'mll'"),
        (
            ("[scenarios.stat]\nsystematics = false", "[scenarios.stat]\nsystematics = 1"),
            "systematics must be",
        ),
        (("n_test = 800", "n_test = 0"), r"\[generator\]\.n_test must be an integer >= 1"),
    ],
)
def test_definition_errors(write_definition, tiny_text, replace, match):
    text = textwrap.dedent(tiny_text)
    assert replace[0] in text
    path = write_definition(text.replace(*replace), name="bad.toml")
    with pytest.raises(diffana.ProblemDefinitionError, match=match):
        load_problem(path)


def test_generic_cut_variables(tiny_problem):
    (cut,) = tiny_problem.cuts("syst")
    assert cut.name == "mu2_pt_min" and cut.direction == ">"
    assert tiny_problem.feature_names[cut.feature] == "mu2_pt"
    assert tiny_problem.poi_scale == 40.0
    assert "jes" in tiny_problem.describe()["systematics"]


def test_own_methods(tiny_problem):
    assert tuple(tiny_problem.own_methods()) == nano.OBJECT_METHODS
    settings = method_settings(tiny_problem, "object_cuts_grad", steps=7)
    assert settings["steps"] == 7 and settings["batch_size"] == 200  # definition, override
    assert settings["learning_rate"] == 0.05  # OBJECT_METHOD_DEFAULTS
    assert method_settings(tiny_problem, "object_cuts_default") == {"per_scenario": False}
    with pytest.raises(diffana.ProblemDefinitionError, match=r"object_neos\]\.loss"):
        nano.object_method_settings("object_neos", {"loss": "bce"}, None)
    with pytest.raises(diffana.ProblemDefinitionError, match=r"did you mean 'steps'\?"):
        nano.object_method_settings("object_cuts_grad", {"step": 3}, None)


def test_own_method_errors_name_the_field(write_definition, tiny_text):
    text = textwrap.dedent(tiny_text)
    bad_name = text.replace("[methods.object_cuts_scan]", "[methods.object_bdt]")
    with pytest.raises(
        diffana.ProblemDefinitionError, match=r"unknown method \[methods.object_bdt"
    ):
        load_problem(write_definition(bad_name, name="bad_method.toml"))
    bad_field = text.replace("grid_points = 2", "grid_point = 2")
    with pytest.raises(
        diffana.ProblemDefinitionError,
        match=r"\[methods\.object_cuts_scan\] has unknown key 'grid_point' \(did you mean",
    ):  # found when the problem is loaded, before anything runs
        load_problem(write_definition(bad_field, name="bad_field.toml"))


@pytest.mark.parametrize(
    ("replace", "match"),
    [
        (("mll_min = 110.0", "mll_mn = 110.0"), r"\[generator\] has unknown key 'mll_mn' \(did"),
        (("mu_scale = 0.01", "mu_scal = 0.01"), r"\[analysis\] has .* \(did you mean 'mu_scale'"),
        (("systematics = false", "systematic = false"), r"\[scenarios\.stat\] has unknown key"),
        (("cut_slope = 0.05", "cut_slop = 0.05"), r"\[methods\.object_neos\] has .*'cut_slope'"),
        (("cut_slope = 0.05", "cut_slope = -1"), r"object_neos\]\.cut_slope must be a number > 0"),
        (
            ("methods.object_neos = { steps = 60", "methods.object_neos = { step = 60"),
            r"did you mean 'steps'\?.*\(with \[modes\.quick\] applied\)",
        ),
        (
            ("methods.object_cuts_scan = { grid", "methods.object_cut_scan = { grid"),
            r"\[methods\.object_cut_scan\] \(did you mean 'object_cuts_scan'\?\).*modes\.quick",
        ),
    ],
)
def test_packaged_definition_is_checked_in_every_mode(tmp_path, replace, match):
    """The generator, analysis, scenario and object-method tables of ``dimuon.toml``,
    with its [modes.quick] overrides, are checked when it is loaded (no events made)."""
    text = find_definition("dimuon").read_text()
    assert replace[0] in text
    path = tmp_path / "dimuon.toml"
    path.write_text(text.replace(*replace, 1))
    with pytest.raises(diffana.ProblemDefinitionError, match=match):
        load_problem(path, mode="default")
