"""Generators, templates and workspaces of the shipped problems."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest
from scipy import stats

import diffana.hf
import diffana.relax
from diffana.problems import (
    CUT_FEATURES,
    Sample,
    find_definition,
    generate_blobs,
    generate_inferno3d,
    inferno_fisher_sigma,
    interpolate_quad_lin,
    load_problem,
    split_seed,
    subsample,
    transform_background,
)
from diffana.testing import assert_grad_matches_fd


@pytest.fixture(scope="module")
def problems():
    return {n: load_problem(n, mode="quick") for n in ("gaussian_blobs", "inferno3d", "cut_scan")}


def test_split_seeds_are_stable_and_distinct():
    assert split_seed(1, "train", 0) == split_seed(1, "train", 0)
    assert len({split_seed(1, s, k) for s in ("train", "valid", "test") for k in range(5)}) == 15


@pytest.mark.parametrize("name", ["gaussian_blobs", "inferno3d", "cut_scan"])
def test_generation_is_deterministic_and_weighted_to_yields(problems, name):
    p = problems[name]
    a, b = p.generate(3, "train"), p.generate(3, "train")
    c = p.generate(4, "train")
    for k in a:
        np.testing.assert_array_equal(a[k].x, b[k].x)
        assert not np.array_equal(a[k].x, c[k].x)
        assert a[k].x.shape[1] == p.n_features
    # The test sample does not depend on the run seed: every run sees the same events.
    np.testing.assert_array_equal(
        p.generate(0, "test")["signal"].x, p.generate(9, "test")["signal"].x
    )
    assert not np.array_equal(p.generate(0, "test")["signal"].x, a["signal"].x)
    total = {s: float(np.sum(a[s].w)) for s in p.signal_samples + p.background_samples}
    assert total[p.signal_samples[0]] == pytest.approx(p.definition.analysis["signal_yield"])


def test_blobs_means_and_draw_modes():
    means = {"signal": (-1.0, 1.0), "background": (1.0, -1.0)}
    ind = generate_blobs(means, 20000, seed=1)
    np.testing.assert_allclose(ind["signal"].mean(0), [-1, 1], atol=0.03)
    np.testing.assert_allclose(np.cov(ind["background"].T), np.eye(2), atol=0.03)
    # Independent draws are uncorrelated across components; shared ones identical noise.
    r = np.corrcoef(ind["signal"][:, 0], ind["background"][:, 0])[0, 1]
    assert abs(r) < 0.03
    shared = generate_blobs(means, 1000, seed=1, draw="shared")
    np.testing.assert_allclose(shared["signal"] - shared["background"], [[-2.0, 2.0]] * 1000)
    with pytest.raises(ValueError, match="draw"):
        generate_blobs(means, 10, seed=1, draw="both")


def test_inferno3d_transform_equals_generation_at_shifted_nuisances():
    nominal = generate_inferno3d(200000, seed=5)["background"]
    shifted = generate_inferno3d(200000, seed=6, r=2.4, lam=2.0)["background"]
    moved = np.asarray(transform_background(jnp.asarray(nominal), 2.4, 2.0))
    for col in (0, 2):
        ks = stats.ks_2samp(moved[:, col], shifted[:, col])
        assert ks.pvalue > 1e-3, (col, ks)


def test_quad_lin_interpolation_hits_templates_and_is_smooth():
    nom = jnp.array([10.0, 20.0])
    up = jnp.array([[12.0, 19.0]])
    dw = jnp.array([[9.0, 22.0]])
    np.testing.assert_allclose(interpolate_quad_lin(jnp.array([1.0]), nom, up, dw), up[0])
    np.testing.assert_allclose(interpolate_quad_lin(jnp.array([-1.0]), nom, up, dw), dw[0])
    np.testing.assert_allclose(interpolate_quad_lin(jnp.array([0.0]), nom, up, dw), nom)
    # Slope continuous at |alpha| = 1 (quadratic inside, linear outside).
    f = lambda a: interpolate_quad_lin(jnp.array([a]), nom, up, dw)[0]  # noqa: E731
    g = jax.grad(f)
    for a in (1.0, -1.0):
        assert float(g(a - 1e-7)) == pytest.approx(float(g(a + 1e-7)), rel=1e-5)


def _optimal_classifier(x):
    ls = (
        stats.norm.logpdf(x[:, 0])
        + stats.norm.logpdf(x[:, 1])
        + stats.expon.logpdf(x[:, 2], scale=0.5)
    )
    lb = (
        stats.norm.logpdf(x[:, 0], 2.0, np.sqrt(5.0))
        + stats.norm.logpdf(x[:, 1], 0.0, 3.0)
        + stats.expon.logpdf(x[:, 2], scale=1.0 / 3.0)
    )
    return 1.0 / (1.0 + np.exp(lb - ls))


def test_paper_metric_reproduces_published_optimal_classifier_row():
    # The INFERNO table's "optimal classifier" row: 14.97 / 19.12 / 24.93 / 22.13 / 27.98.
    p = load_problem("inferno3d")
    ev = p.generate(0, "test")
    edges = np.linspace(0.0, 1.0, 11)
    hists = {
        k: np.histogram(_optimal_classifier(np.asarray(s.x)), edges)[0].astype(float)
        for k, s in p.templates(ev).items()
    }
    published = {"b0": 14.97, "b1": 19.12, "b2": 24.93, "b3": 22.13, "b4": 27.98}
    for scen, value in published.items():
        ours = p.extra_metrics(hists, scen)["inferno_sigma_s"]
        assert ours == pytest.approx(value, rel=0.02), scen


def test_paper_metric_without_nuisances_is_the_binned_poisson_bound():
    sig = np.array([10.0, 30.0, 60.0])
    bkg = np.array([500.0, 300.0, 200.0])
    sigma = inferno_fisher_sigma(sig, bkg, np.stack([bkg, bkg]), np.stack([bkg, bkg]), ("s",), {})
    s, b = 50 * sig / sig.sum(), 1000 * bkg / bkg.sum()
    assert sigma == pytest.approx(1 / np.sqrt(np.sum((s / 50) ** 2 / (s + b))), rel=1e-10)
    with pytest.raises(ValueError, match="POI"):
        inferno_fisher_sigma(sig, bkg, np.stack([bkg, bkg]), np.stack([bkg, bkg]), ("r",), {})


def _inferno_with_loss_shapes(shapes, tmp_path):
    """The quick INFERNO problem with ``[analysis].loss_shapes = shapes``."""
    text = find_definition("inferno3d").read_text()
    assert '\nloss_shapes = "templates"\n' in text
    path = tmp_path / shapes / "inferno3d.toml"
    path.parent.mkdir()
    path.write_text(text.replace('\nloss_shapes = "templates"\n', f'\nloss_shapes = "{shapes}"\n'))
    return load_problem(path, mode="quick")


def _inferno_batch(n=300, seed=0):
    rng = np.random.default_rng(seed)
    bkg = np.c_[rng.normal(2, 2.2, n), rng.normal(0, 3, n), rng.exponential(1 / 3, n)]
    return {
        "signal": Sample(jnp.asarray(rng.normal(size=(n, 3))), jnp.full(n, 50 / n)),
        "background": Sample(jnp.asarray(bkg), jnp.full(n, 1000 / n)),
    }


def _soft_hist(w_flat):
    # more bins than free parameters, or the profiled sigma would not depend on the
    # background's derivatives at all
    w = w_flat.reshape(6, 4)

    def hist(s):
        logits = jnp.concatenate([s.x, s.x[:, :1] ** 2], axis=1) @ w.T
        return diffana.relax.softmax_hist(logits, 0.5, weights=s.w)

    return hist


@pytest.mark.parametrize("shapes", ["exact", "templates"])
def test_inferno_native_loss_gradient_matches_finite_differences(shapes, tmp_path):
    p = _inferno_with_loss_shapes(shapes, tmp_path)
    assert p.loss_shapes == shapes
    loss = p.native_loss("inferno", "b4")
    assert p.native_loss("neos", "b4") is None
    batch = _inferno_batch()

    def sigma(w_flat):
        return loss(_soft_hist(w_flat), batch)[0]

    w0 = jnp.asarray(np.random.default_rng(1).normal(size=24))
    assert np.isfinite(float(sigma(w0)))
    assert_grad_matches_fd(sigma, w0, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("scenario", ["b2", "b4"])
def test_inferno_template_loss_is_the_paper_metric_of_the_batch(scenario, tmp_path):
    # With loss_shapes = "templates" the loss is the paper's metric (inferno_fisher_sigma)
    # of the batch's soft histograms at the paper's shifts; the exact loss differs from
    # it by the templates' finite differences.
    p = _inferno_with_loss_shapes("templates", tmp_path)
    batch = _inferno_batch(2000, seed=3)
    hist = _soft_hist(jnp.asarray(np.random.default_rng(2).normal(size=24)))
    bkg = batch["background"]
    (dr, dl) = p.shifts

    def shifted(r, lam):
        return np.asarray(hist(Sample(transform_background(bkg.x, r, lam), bkg.w)))

    free, cons = p.free_and_constraints(scenario)
    metric = inferno_fisher_sigma(
        np.asarray(hist(batch["signal"])),
        shifted(2.0, 3.0),
        np.stack([shifted(2.0 + dr, 3.0), shifted(2.0, 3.0 + dl)]),
        np.stack([shifted(2.0 - dr, 3.0), shifted(2.0, 3.0 - dl)]),
        free=free, constraints=cons, shifts=p.shifts,
    )  # fmt: skip
    assert float(p.native_loss("inferno", scenario)(hist, batch)[0]) == pytest.approx(
        metric, rel=1e-10
    )
    exact = _inferno_with_loss_shapes("exact", tmp_path).native_loss("inferno", scenario)
    assert abs(float(exact(hist, batch)[0]) / metric - 1.0) > 1e-6


@pytest.mark.parametrize("name", ["gaussian_blobs", "inferno3d", "cut_scan"])
def test_workspaces_are_valid_for_pyhf_and_diffana(problems, name):
    p = problems[name]
    ev = p.generate(0, "train")
    templates = p.templates(ev)
    rng = np.random.default_rng(1)
    bins = p.n_bins
    yields = {
        k: np.sum(np.asarray(s.w)) / bins * rng.uniform(0.8, 1.2, bins)
        for k, s in templates.items()
    }
    for scen in p.scenarios:
        ws = p.workspace(yields, scen)
        ws = diffana.problems._workspace.to_json_compatible(ws)
        settings = p.modifier_settings(scen)
        model = pyhf.Workspace(ws).model(**({"modifier_settings": settings} if settings else {}))
        ours = diffana.hf.Model.from_pyhf(ws, modifier_settings=settings)
        pars = np.asarray(model.config.suggested_init())
        np.testing.assert_allclose(
            ours.expected_data(jnp.asarray(pars)), model.expected_data(pars), rtol=1e-10
        )


def test_cut_scan_cuts_and_jes_templates(problems):
    p = problems["cut_scan"]
    assert [len(p.cuts(s)) for s in p.scenarios] == [1, 2, 4, 6, 8]
    assert p.cuts("k2")[1].name == "mass_min" and p.cuts("k2")[1].feature == CUT_FEATURES.index(
        "mass"
    )
    ev = p.generate(0, "train")
    t = p.templates(ev)
    x, up = np.asarray(t[("background", "nominal")].x), np.asarray(t[("background", "jes_up")].x)
    ratio = up / x
    np.testing.assert_allclose(ratio[:, [0, 1, 2, 6]], 1.0 + p.jes)
    np.testing.assert_allclose(ratio[:, [3, 4, 5]], 1.0)


def test_subsample_keeps_expected_yields():
    s = {"a": Sample(jnp.arange(10.0)[:, None], jnp.full(10, 3.0))}
    b = subsample(jax.random.key(0), s, 4)
    assert b["a"].x.shape == (4, 1)
    assert float(jnp.sum(b["a"].w)) == pytest.approx(30.0)
