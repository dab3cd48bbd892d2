"""The benchmark runner: outputs, honest evaluation, pyhf agreement, resume."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

import diffana.hf
import diffana.infer
from diffana.bench import (
    RESULTS_SCHEMA,
    RUN_SCHEMA,
    BenchError,
    hard_yields,
    method_settings,
    plan_runs,
    profile_width,
    run_bench,
    run_one,
)
from diffana.bench._evaluate import neutralise_empty_bins
from diffana.errors import ProblemDefinitionError
from diffana.problems import Sample, load_problem
from diffana.train import read_metrics


def test_results_files_and_schema(tiny_bench):
    results, out = tiny_bench
    assert results["schema"] == RESULTS_SCHEMA
    assert results["complete"] and results["runs_done"] == results["runs_planned"] == 6
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["schema"] == RESULTS_SCHEMA
    assert set(on_disk["problems"]) == {"tiny_blobs", "tiny_cuts"}
    md = (out / "results.md").read_text()
    assert "## tiny_blobs" in md and "neos@default" in md and "cuts_scan@k2" in md
    for p in ("tiny_blobs", "tiny_cuts"):
        for kind in ("loss", "hists", "metrics"):
            path = out / "plots" / f"{p}_{kind}.png"
            assert path.stat().st_size > 1000
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    # pseudo-experiments of every hard-evaluated analysis
    for run in on_disk["problems"]["tiny_blobs"]["runs"]:
        entry = run["evaluation"]["default"]
        for v in (0, 1, 2):
            assert 0.0 <= entry[f"coverage_mu{v}"] <= 1.0
        assert entry["interval_width"] > 0 and np.isfinite(entry["fair_score"])
        assert 0.0 <= entry["cls_toys"] <= 1.0


def test_docs_page_from_results(tiny_bench, tmp_path):
    from diffana.bench import write_docs_page

    _, out = tiny_bench
    page = write_docs_page(out, tmp_path / "docs" / "results.md", title="Results")
    text = page.read_text()
    assert text.startswith("# Results") and "## tiny_cuts" in text
    assert str(out) not in text  # no paths of the machine that ran the benchmark
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert len(links) == 6
    for link in links:
        assert link.startswith("results/") and (page.parent / link).stat().st_size > 1000
    assert (out / "results.md").read_text().split("\n", 3)[3] != text.split("\n", 3)[3]


def test_docs_page_needs_results(tmp_path):
    from diffana.bench import write_docs_page

    with pytest.raises(BenchError, match=r"results\.json does not exist"):
        write_docs_page(tmp_path, tmp_path / "page.md")
    (tmp_path / "results.json").write_text('{"schema": "other/9"}')
    with pytest.raises(BenchError, match=r"expected 'diffana\.bench\.results/1'"):
        write_docs_page(tmp_path, tmp_path / "page.md")
    assert not (tmp_path / "page.md").exists()


def test_run_folders_track_every_step(tiny_bench):
    _, out = tiny_bench
    run = out / "tiny_blobs" / "neos@default" / "seed1"
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == "neos" and config["seed"] == 1
    assert config["method_settings"]["steps"] == 4
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert {"loss", "fom", "learning_rate", "bandwidth"} <= set(records[0])
    assert records[0]["bandwidth"] == pytest.approx(0.2) and records[-1][
        "bandwidth"
    ] == pytest.approx(0.1)
    result = json.loads((run / "result.json").read_text())
    assert result["schema"] == RUN_SCHEMA
    assert result["training"]["steps"] == 4
    ws = json.loads((run / "workspace_default.json").read_text())
    pyhf.Workspace(ws)  # a valid pyhf workspace
    hs3 = json.loads((run / "workspace_default.hs3.json").read_text())  # and the same in HS3
    from_hs3, from_pyhf = diffana.hf.Model.from_hs3(hs3), diffana.hf.Model.from_pyhf(ws)
    assert from_hs3.par_names == from_pyhf.par_names
    np.testing.assert_array_equal(from_hs3.nominal, from_pyhf.nominal)


def test_bce_is_trained_once_and_evaluated_on_every_scenario(tiny_bench):
    results, _ = tiny_bench
    runs = results["problems"]["tiny_blobs"]["runs"]
    labels = sorted({r["label"] for r in runs})
    assert labels == ["bce", "neos@default"]
    assert all(r["train_scenario"] is None for r in runs if r["method"] == "bce")


def test_diffana_agrees_with_pyhf_on_every_exported_workspace(tiny_bench):
    results, _ = tiny_bench
    for prob in results["problems"].values():
        for run in prob["runs"]:
            for entry in run["evaluation"].values():
                assert entry["cls"] == pytest.approx(entry["pyhf_cls"], rel=1e-4, abs=1e-10)
                assert entry["z0"] == pytest.approx(entry["pyhf_z0"], rel=1e-4, abs=1e-6)
                assert np.isfinite(entry["sigma_poi_fisher"])


def test_hard_evaluation_uses_integer_counts(tiny_bench):
    _, out = tiny_bench
    result = json.loads((out / "tiny_blobs" / "bce" / "seed0" / "result.json").read_text())
    counts = result["mc_counts"]["signal/nominal"]
    assert counts == [round(c) for c in counts] and sum(counts) == 2000
    yields = result["hard_yields"]["signal/nominal"]
    assert sum(yields) == pytest.approx(20.0)
    np.testing.assert_allclose(np.asarray(yields), np.asarray(counts) * 20.0 / 2000)


def test_cut_methods_record_compute(tiny_bench):
    _, out = tiny_bench
    scan = json.loads((out / "tiny_cuts" / "cuts_scan@k2" / "seed0" / "result.json").read_text())
    grad = json.loads((out / "tiny_cuts" / "cuts_grad@k2" / "seed0" / "result.json").read_text())
    assert scan["training"]["scan"] == "grid" and scan["training"]["fom_evaluations"] == 16
    # 6 random candidates, 2 runs of 5 steps (from the open cuts and the best candidate),
    # the hard figure of merit of both results: the better one is kept.
    assert grad["training"]["fom_evaluations"] == 6 + 2 * 5 + 2
    fom = grad["training"]["restart_train_fom"]
    assert len(fom) == 2 and grad["training"]["restart_chosen"] == int(np.argmax(fom))
    assert grad["training"]["train_fom"] == max(fom)
    assert len(scan["training"]["thresholds"]) == len(grad["training"]["thresholds"]) == 2
    for r in (scan, grad):
        assert r["training"]["train_time_s"] > 0


def test_restarted_cuts_keep_the_thresholds_of_their_hard_figure_of_merit(
    tiny_bench, tiny_definitions
):
    from diffana.bench._methods import _cut_selection, _scan_fom

    _, out = tiny_bench
    grad = json.loads((out / "tiny_cuts" / "cuts_grad@k2" / "seed0" / "result.json").read_text())
    problem = load_problem(tiny_definitions["tiny_cuts"])
    train = problem.generate(0, "train")
    sel, _ = _cut_selection(problem, "k2", train)
    idx = [c.feature for c in sel.cuts]
    phys = np.asarray(grad["training"]["thresholds"])
    std = (phys - np.asarray(sel.shift)[idx]) / np.asarray(sel.scale)[idx]
    z0 = _scan_fom(problem, "k2", sel, train)(std[None, :])
    assert z0[0] == pytest.approx(grad["training"]["train_fom"], rel=1e-9)


@pytest.mark.parametrize("edit", ["restart_candidates = 6", 'restart_candidates = 6\nloss = "cls"'])
def test_restarts_need_candidates_and_the_discovery_loss(tiny_definitions, tmp_path, edit):
    text = tiny_definitions["tiny_cuts"].read_text()
    bad = text.replace("restarts = 2\nrestart_candidates = 6", "restarts = 9\n" + edit)
    if "cls" in edit:
        bad = bad.replace("restarts = 9", "restarts = 2")
    path = tmp_path / "tiny_cuts.toml"
    path.write_text(bad)
    with pytest.raises(ProblemDefinitionError, match="restarts > 1 needs"):
        method_settings(load_problem(path), "cuts_grad")


def _edited(definition: Path, tmp_path: Path, old: str, new: str) -> Path:
    text = definition.read_text()
    assert old in text
    path = tmp_path / definition.name
    path.write_text(text.replace(old, new, 1))
    return path


def _blobs_with_restarts(tiny_definitions, tmp_path) -> Path:
    """tiny_blobs with 3 restarts of neos, of 25 steps: enough for the initialisations to
    end on different summaries."""
    path = _edited(
        tiny_definitions["tiny_blobs"],
        tmp_path,
        "[methods.neos]\n",
        "[methods.neos]\nrestarts = 3\n",
    )
    old = "steps = 4\nbatch_size = 64\nband"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, "steps = 25\nbatch_size = 64\nband"))
    return path


def test_network_restarts_keep_the_best_on_the_validation_sample(tiny_definitions, tmp_path):
    from diffana.bench._methods import train_method, validation_score

    path = _blobs_with_restarts(tiny_definitions, tmp_path)
    problem = load_problem(path)
    cfg = method_settings(problem, "neos")
    train, valid = problem.generate(1, "train"), problem.generate(1, "valid")
    steps = []
    trained = train_method(
        problem, "neos", cfg, "default", 1, train, callback=lambda i, loss: steps.append(i),
        valid=valid,
    )  # fmt: skip
    info = trained.training
    scores = info["restart_valid"]
    assert info["restart_metric"] == "cls" and len(scores) == 3
    assert info["restart_chosen"] == int(np.nanargmin(scores))  # the lowest CLs
    assert len(set(scores)) == 3  # three different trainings
    assert info["fom_evaluations"] == 3 * cfg["steps"]
    assert steps == list(range(3 * cfg["steps"]))
    templates = problem.templates(valid)
    kept = validation_score(problem, "default", trained.pipeline, templates, "cls")
    assert kept == pytest.approx(min(scores), rel=1e-9)
    # run 0 is the training of one run: same keys, same pipeline
    single = train_method(problem, "neos", {**cfg, "restarts": 1}, "default", 1, train)
    assert validation_score(problem, "default", single.pipeline, templates, "cls") == pytest.approx(
        scores[0], rel=1e-9
    )


def test_restarts_keep_the_best_validation_score_not_the_first(
    tiny_definitions, tmp_path, monkeypatch
):
    import diffana.bench._methods as methods

    scores = iter([0.3, 0.1, 0.5])
    monkeypatch.setattr(methods, "validation_score", lambda *args: next(scores))
    problem = load_problem(_blobs_with_restarts(tiny_definitions, tmp_path))
    cfg = method_settings(problem, "neos")
    info = methods.train_method(problem, "neos", cfg, "default", 0, problem.generate(0, "train"))
    assert info.training["restart_valid"] == [0.3, 0.1, 0.5]
    assert info.training["restart_chosen"] == 1  # the lowest CLs


def test_the_best_restart_ignores_invalid_scores():
    from diffana.bench._methods import best_restart

    nan = float("nan")
    assert best_restart([nan, 0.2, 0.1], higher_is_better=False) == 2
    assert best_restart([nan, 0.2, 0.1], higher_is_better=True) == 1
    assert best_restart([nan, nan], higher_is_better=True) == 0
    inferno = load_problem("inferno3d", mode="quick")
    assert inferno.selection_metric("native") == ("inferno_sigma_s", False)
    assert inferno.selection_metric("bce") is None


@pytest.mark.parametrize(
    ("problem", "method", "old", "new", "match"),
    [
        (
            "tiny_blobs",
            "bce",
            "[methods.bce]\n",
            "[methods.bce]\nrestarts = 2\n",
            "network pipeline",
        ),
        (
            "tiny_cuts",
            "cuts_grad",
            "[methods.cuts_grad]\n",
            "[methods.cuts_grad]\nbins = 3\n",
            "one bin",
        ),
        (
            "tiny_blobs",
            "neos",
            'loss = "cls"\n',
            'loss = "native"\nrestarts = 2\n',
            "no validation metric",
        ),
    ],
)
def test_restarts_and_bins_only_where_they_apply(
    tiny_definitions, tmp_path, problem, method, old, new, match
):
    path = _edited(tiny_definitions[problem], tmp_path, old, new)
    with pytest.raises(ProblemDefinitionError, match=match):
        method_settings(load_problem(path), method)


def test_a_method_bins_its_summary_in_its_own_number_of_bins(tiny_definitions, tmp_path):
    from diffana.bench._methods import summary_bins, train_method

    path = _edited(
        tiny_definitions["tiny_blobs"], tmp_path, "[methods.bce]\n", "[methods.bce]\nbins = 7\n"
    )
    problem = load_problem(path)
    train = problem.generate(0, "train")
    cfg = {**method_settings(problem, "bce"), "steps": 1}
    pipe = train_method(problem, "bce", cfg, "default", 0, train).pipeline
    assert pipe.hard_histogram(train["signal"]).shape == (7,)
    assert summary_bins(problem, method_settings(problem, "neos")) == problem.n_bins == 3


def test_the_scan_rejects_selections_without_background_events(tiny_definitions):
    from diffana.bench._methods import _cut_selection, _scan_fom

    problem = load_problem(tiny_definitions["tiny_cuts"])
    train = problem.generate(0, "train")
    sel, ranges = _cut_selection(problem, "k2", train)
    # Above every background event's b-tag score, below some signal events' scores.
    top_b = np.max(np.asarray(train["background"].x)[:, 5])
    std_b = (top_b - np.asarray(sel.shift)[5]) / np.asarray(sel.scale)[5]
    keeps_signal = np.asarray(train["signal"].x)[:, 5] > top_b
    assert keeps_signal.any()
    candidates = np.asarray([[ranges[0, 0], ranges[1, 1]], [std_b + 1e-9, ranges[1, 1]]])
    z0 = _scan_fom(problem, "k2", sel, train)(candidates)
    assert np.isfinite(z0[0]) and np.isnan(z0[1])


def test_resume_skips_finished_runs_and_redoes_changed_ones(
    tiny_bench, tiny_definitions, tmp_path_factory
):
    _, out = tiny_bench
    problem = load_problem(tiny_definitions["tiny_blobs"])
    spec = next(s for s in plan_runs(problem) if s.method == "bce" and s.seed == 0)
    path = out / spec.rel_dir / "result.json"
    before = path.stat().st_mtime_ns
    result, reused = run_one(problem, spec, out, tensorboard=False)
    assert reused and path.stat().st_mtime_ns == before
    # An interrupted run (no result file yet) is run again; so is one with new settings.
    other = out / "tiny_blobs" / "bce" / "seed1" / "result.json"
    other.unlink()
    again = run_bench([tiny_definitions["tiny_blobs"]], out=out, progress=False, plots=False,
                      tensorboard=False, referee=False)  # fmt: skip
    assert other.exists() and path.stat().st_mtime_ns == before
    assert again["runs_done"] == 4
    # The same definition read from another place (a reinstalled package) is the same run.
    moved = tmp_path_factory.mktemp("moved") / "tiny_blobs.toml"
    moved.write_text(tiny_definitions["tiny_blobs"].read_text())
    _, reused = run_one(load_problem(moved), spec, out, tensorboard=False)
    assert reused and path.stat().st_mtime_ns == before
    result, reused = run_one(problem, spec, out, steps=2, tensorboard=False, referee=False)
    assert not reused and result["training"]["steps"] == 2


def test_interrupted_benchmark_keeps_finished_runs(tiny_definitions, tmp_path, monkeypatch):
    import diffana.bench._runner as runner

    calls = []
    original = runner.train_method

    def flaky(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "train_method", flaky)
    kwargs = {"methods": ["bce"], "out": tmp_path, "progress": False, "plots": False,
              "tensorboard": False, "referee": False, "toys": False}  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run_bench([tiny_definitions["tiny_blobs"]], **kwargs)
    assert (tmp_path / "tiny_blobs" / "bce" / "seed0" / "result.json").exists()
    assert not (tmp_path / "tiny_blobs" / "bce" / "seed1" / "result.json").exists()
    monkeypatch.setattr(runner, "train_method", original)
    done = run_bench([tiny_definitions["tiny_blobs"]], **kwargs)
    assert done["complete"] and done["runs_done"] == 2


def test_bad_arguments_fail_before_running(tiny_definitions, tmp_path):
    blobs = tiny_definitions["tiny_blobs"]
    with pytest.raises(BenchError, match="unknown method"):
        run_bench([blobs], methods=["magic"], out=tmp_path, progress=False)
    with pytest.raises(BenchError, match="not defined by any"):
        run_bench([blobs], methods=["cuts_scan"], out=tmp_path, progress=False)
    with pytest.raises(BenchError, match="seeds"):
        run_bench([blobs], seeds=0, out=tmp_path, progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BenchError, match="not writable"):
        run_bench([blobs], out=blocker / "sub", progress=False)
    assert not list(tmp_path.glob("tiny_blobs"))


def test_neutralised_bins_carry_no_information():
    problem = load_problem("gaussian_blobs", mode="quick")
    yields = {
        ("signal", "nominal"): np.array([1.0, 5.0, 3.0]),
        ("background", "nominal"): np.array([0.0, 20.0, 10.0]),
        ("background", "shape_up"): np.array([2.0, 25.0, 8.0]),
        ("background", "shape_down"): np.array([0.0, 15.0, 12.0]),
    }
    reduced, n = neutralise_empty_bins(problem, yields)
    assert n == 1 and reduced[("signal", "nominal")][0] == 0.0
    dropped = {k: v[1:] for k, v in yields.items()}

    def sigma(y):
        # Cramér-Rao sigma(mu) from the Hessian of the NLL on Asimov data.
        model = diffana.hf.Model.from_pyhf(problem.workspace(y, "default"))
        data = model.expected_data(model.init)
        h = np.asarray(jax.jit(jax.hessian(lambda p: model.nll(p, data)))(model.init))
        return float(np.sqrt(np.linalg.inv(h)[model.poi_index, model.poi_index]))

    assert sigma(reduced) == pytest.approx(sigma(dropped), rel=1e-10)


def test_profile_width_matches_a_pyhf_scan():
    spec = {
        "channels": [{"name": "c", "samples": [
            {"name": "s", "data": [5.0, 12.0], "modifiers": [
                {"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "b", "data": [40.0, 30.0], "modifiers": [
                {"name": "n", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}]},
        ]}],
    }  # fmt: skip
    model = diffana.hf.Model.from_pyhf(spec)
    asimov = diffana.infer.asimov_data(model, 1.0)
    width = profile_width(model, asimov, 0.5)
    pmodel = pyhf.Model(spec, poi_name="mu")
    data = np.asarray(asimov)
    bounds = pmodel.config.suggested_bounds()
    bounds[pmodel.config.poi_index] = (-5.0, 10.0)

    def two_dnll(mu):
        val = pyhf.infer.mle.fixed_poi_fit(
            mu, data, pmodel, par_bounds=bounds, return_fitted_val=True
        )[1]
        best = pyhf.infer.mle.fixed_poi_fit(
            1.0, data, pmodel, par_bounds=bounds, return_fitted_val=True
        )[1]
        return float(val - best)

    assert two_dnll(1.0 + width * 1.02) > 1.0 or two_dnll(1.0 - width * 1.02) > 1.0
    lo, hi = 1.0 - width, 1.0 + width
    # The half-width averages both crossings: at most one side lies inside.
    assert two_dnll(hi) + two_dnll(lo) == pytest.approx(2.0, abs=0.15)


def test_hard_yields_do_not_depend_on_chunking(tiny_bench, tiny_definitions):
    from diffana.train._pipelines import Network, SoftmaxBins

    pipe = SoftmaxBins(Network(2, 3, (4, 4), key=jax.random.key(0)))
    rng = np.random.default_rng(0)
    w = np.full(1000, 0.5)
    w[::7] = 0.0  # zero-weight events are still Monte Carlo events
    t = {
        ("a", "nominal"): Sample(rng.normal(size=(1000, 2)), w),
        ("b", "nominal"): Sample(np.zeros((0, 2)), np.zeros(0)),  # an empty template
    }
    y1, c1 = hard_yields(pipe, t, chunk=4096)
    y2, c2 = hard_yields(pipe, t, chunk=300)
    np.testing.assert_allclose(y1[("a", "nominal")], y2[("a", "nominal")])
    np.testing.assert_array_equal(c1[("a", "nominal")], c2[("a", "nominal")])
    assert c1[("a", "nominal")].sum() == c2[("a", "nominal")].sum() == 1000
    assert jnp.sum(jnp.asarray(y1[("a", "nominal")])) == pytest.approx(w.sum())
    for y, c in ((y1, c1), (y2, c2)):
        np.testing.assert_array_equal(y[("b", "nominal")], np.zeros(3))
        np.testing.assert_array_equal(c[("b", "nominal")], np.zeros(3))


def test_plans_of_the_shared_problems():
    from diffana.bench import DEFAULT_PROBLEMS

    assert DEFAULT_PROBLEMS == ("gaussian_blobs", "inferno3d", "cut_scan")
    inferno = load_problem("inferno3d", mode="full")
    runs = plan_runs(inferno)
    bce = [r for r in runs if r.method == "bce"]
    assert len(bce) == 10 and all(r.eval_scenarios == ("b0", "b2", "b4") for r in bce)
    assert {r.train_scenario for r in runs if r.method == "inferno"} == {"b0", "b2", "b4"}
    assert len(runs) == 40
    assert len(plan_runs(inferno, methods=["inferno"], seeds=2)) == 6
    settings = method_settings(inferno, "inferno", steps=7)
    assert settings["steps"] == 7 and settings["standardise"] is False
    assert settings["loss"] == "native" and settings["per_scenario"] is True


def test_report_compares_with_published_tables_and_the_referee():
    from diffana.bench._report import _reference_tables, referee_differences

    rows = [
        {"method": "bce", "train_scenario": None, "eval_scenario": "b2",
         "metrics": {"inferno_sigma_s": {"median": 24.5, "n": 10}}},
        {"method": "inferno", "train_scenario": "b2", "eval_scenario": "b2",
         "metrics": {"inferno_sigma_s": {"median": 18.0, "n": 10}}},
        {"method": "inferno", "train_scenario": "b0", "eval_scenario": "b2",
         "metrics": {"inferno_sigma_s": {"median": 99.0, "n": 10}}},
    ]  # fmt: skip
    ref = {"t": {"metric": "inferno_sigma_s", "methods": ["bce", "inferno"],
                 "benchmarks": ["b0", "b2"], "bce": [15.0, 23.94], "inferno": [15.5, 16.95],
                 "bound": [14.7, 15.65], "tolerance": 0.05}}  # fmt: skip
    text = "\n".join(_reference_tables("p", ref, rows))
    line = next(x for x in text.splitlines() if x.startswith("| b2"))
    assert "24.5 (10 seeds) ✓" in line and "18 (10 seeds) ✗" in line and "15.65" in line
    assert "| b0" not in text  # no run evaluated there
    runs = [{"evaluation": {"s": {"cls": 1.0e-3, "pyhf_cls": 1.1e-3, "z0": 2.0, "pyhf_z0": 2.0}}}]
    diffs = referee_differences(runs)
    assert diffs["cls"] == [pytest.approx(1 / 11)] and diffs["z0"] == [0.0]


def test_a_problem_brings_its_own_method(tiny_definitions, tmp_path):
    import equinox as eqx

    from diffana import relax
    from diffana.problems import ProblemMethod, problem_kinds, register_problem
    from diffana.problems._gaussian_blobs import GaussianBlobs
    from diffana.train import TrainedAnalysis

    class FirstFeature(eqx.Module):
        edges: tuple[float, ...] = eqx.field(static=True)

        def hard_histogram(self, sample):
            return relax.hard_hist(sample.x[:, 0], jnp.asarray(self.edges), None, sample.w)

    class WithOwnMethod(GaussianBlobs):
        def own_methods(self):
            def train(cfg, scenario, seed, train, *, tracker=None, callback=None, mesh=None):
                edges = [float(e) for e in np.linspace(cfg["lo"], cfg["hi"], self.n_bins + 1)]
                return TrainedAnalysis(FirstFeature(tuple(edges)), {"fom_evaluations": 0}, {})

            return {
                "first_feature": ProblemMethod(lambda table, steps: {"lo": -3.0, **table}, train)
            }

    if "tiny_own_method" not in problem_kinds():
        register_problem("tiny_own_method", WithOwnMethod)
    text = Path(tiny_definitions["tiny_blobs"]).read_text()
    text = text.replace('kind = "gaussian_blobs"', 'kind = "tiny_own_method"')
    definition = tmp_path / "tiny_blobs.toml"
    definition.write_text(text + "\n[methods.first_feature]\nhi = 3.0\n")
    with pytest.raises(BenchError, match=r"unknown method.*known: .*first_feature"):
        run_bench([definition], methods=["magic"], out=tmp_path / "x", progress=False)
    out = tmp_path / "out"
    results = run_bench([definition], out=out, methods=["first_feature"], progress=False,
                        tensorboard=False, seeds=1, referee=False, plots=False,
                        toys=False)  # fmt: skip
    (run,) = results["problems"]["tiny_blobs"]["runs"]
    assert run["label"] == "first_feature@default" and run["evaluation"]["default"]["z0"] > 0
    config = json.loads((out / run["dir"] / "config.json").read_text())
    assert config["method_settings"] == {"lo": -3.0, "hi": 3.0}
    assert "| first_feature@default |" in (out / "results.md").read_text()


# A hard-evaluated gaussian_blobs analysis whose background histosys has extreme
# templates: the conditional fit of q0 has a shallow local minimum next to the start.
_NON_CONVEX = {
    "channels": [
        {
            "name": "singlechannel",
            "samples": [
                {
                    "name": "signal",
                    "data": [5.607, 4.6368, 9.4444, 0.3118],
                    "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                },
                {
                    "name": "background",
                    "data": [98.546, 1.17, 0.267, 0.017],
                    "modifiers": [
                        {
                            "name": "bkg_shape",
                            "type": "histosys",
                            "data": {
                                "hi_data": [54.822, 20.742, 23.883, 0.553],
                                "lo_data": [21.751, 11.979, 18.574, 47.696],
                            },
                        }
                    ],
                },
            ],
        }
    ],
    "observations": [{"name": "singlechannel", "data": [98.546, 1.17, 0.267, 0.017]}],
    "measurements": [
        {
            "name": "meas",
            "config": {"poi": "mu", "parameters": [{"name": "mu", "bounds": [[0.0, 10.0]]}]},
        }
    ],
    "version": "1.0.0",
}


def test_evaluation_fits_from_several_starts_find_the_deeper_minimum():
    from diffana.bench._evaluate import fit_starts, pyhf_referee, robust_statistics

    model = diffana.hf.Model.from_pyhf(_NON_CONVEX)
    starts = fit_starts(model, _NON_CONVEX)
    assert starts.shape == (3, 2) and sorted(starts[:, 0]) == [-1.0, 0.0, 1.0]
    asimov_b = diffana.infer.asimov_data(model, 0.0)
    asimov_sb = diffana.infer.asimov_data(model, 1.0)
    single = float(diffana.infer.discovery(asimov_sb, model).z0)  # from the init only
    pars = jnp.asarray(model.init).at[model.poi_index].set(1.0)
    cls, z0, _ = robust_statistics(model, _NON_CONVEX, asimov_b, asimov_sb, pars)
    ref = pyhf_referee(_NON_CONVEX, None)
    assert single > ref["pyhf_z0"] + 1.0  # the local minimum overstates Z0
    assert z0 <= ref["pyhf_z0"] + 1e-6  # at least as deep a minimum as pyhf's
    assert cls >= ref["pyhf_cls"] - 1e-9


def test_evaluation_stages_are_reported(tiny_definitions, tmp_path):
    problem = load_problem(tiny_definitions["tiny_blobs"])
    spec = next(s for s in plan_runs(problem) if s.method == "neos" and s.seed == 0)
    stages = []
    run_one(problem, spec, tmp_path, steps=1, tensorboard=False,
            on_stage=lambda stage, scen: stages.append((stage, scen)))  # fmt: skip
    assert stages == [
        ("hard", None),
        ("fits", "default"),
        ("toys", "default"),
        ("referee", "default"),
    ]
    stages.clear()
    _, reused = run_one(problem, spec, tmp_path, steps=1, tensorboard=False,
                        on_stage=lambda stage, scen: stages.append((stage, scen)))  # fmt: skip
    assert reused and stages == []


def test_progress_says_compiling_on_first_calls_only():
    from diffana.bench._runner import _Progress

    with _Progress(True, 2) as bar:
        descriptions = []
        for _ in range(2):
            bar.start_run("p bce seed 0", 3, compiling=("p", "bce"))
            descriptions.append(bar._p.tasks[-1].description)
            bar.step(0, 1.0)
            descriptions.append(bar._p.tasks[-1].description)
            for stage, scen in (("hard", None), ("fits", "s1"), ("referee", "s1")):
                bar.stage("p bce seed 0", stage, scen, n_stages=3, problem="p", method="bce")
                descriptions.append(bar._p.tasks[-1].description)
            bar.finish_run(False)
    first, second = descriptions[:5], descriptions[5:]
    assert first[0] == "p bce seed 0: training (compiling)" and first[1].endswith("training")
    assert "hard histograms" in first[2] and first[2].endswith("(compiling)")
    assert "fits (s1) (compiling)" in first[3] and "pyhf referee (s1)" in first[4]
    assert not any("compiling" in d for d in second)
