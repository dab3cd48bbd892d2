"""The object-level methods in `diffana bench`: trained, evaluated hard, refereed by pyhf,
recorded, resumed and reported like every other method."""

from __future__ import annotations

import json

import numpy as np
import pyhf
import pytest

import diffana
from diffana.bench import run_bench
from diffana.problems import _dimuon as nano


def test_default_and_scan_run_as_bench_methods(write_definition, tiny_text, tmp_path):
    # the statistics-only model keeps the fits' compilation short; the runner is the same
    definition = write_definition(
        tiny_text + '\n[bench]\nscenarios = ["stat"]\n', "dimuon_stat.toml"
    )
    kwargs = {"methods": ["object_cuts_default", "object_cuts_scan"], "seeds": 1,
              "out": tmp_path, "progress": False, "plots": False, "toys": False}  # fmt: skip
    results = run_bench([definition], **kwargs)
    runs = {r["label"]: r for r in results["problems"]["dimuon_tiny"]["runs"]}
    assert set(runs) == {"object_cuts_default", "object_cuts_scan@stat"}
    default, scan = runs["object_cuts_default"], runs["object_cuts_scan@stat"]
    assert default["training"]["thresholds"] == dict(
        zip(nano.CUT_NAMES, nano.DEFAULT_CUTS, strict=True)
    )
    assert scan["training"]["fom_evaluations"] == 3 and scan["training"]["scan"] == "random"
    for r in (default, scan):
        e = r["evaluation"]["stat"]
        assert 0.0 < e["cls"] < 1.0 and e["z0"] > 0.0
        np.testing.assert_allclose(e["pyhf_cls"], e["cls"], rtol=1e-4)
        np.testing.assert_allclose(e["pyhf_z0"], e["z0"], rtol=1e-4)
    run_dir = tmp_path / "dimuon_tiny" / "object_cuts_scan@stat" / "seed0"
    saved = json.loads((run_dir / "result.json").read_text())
    counts = np.asarray(saved["mc_counts"]["signal/nominal"])
    assert np.all(counts == np.round(counts))  # hard evaluation: integer MC counts
    ws = pyhf.Workspace(json.loads((run_dir / "workspace_stat.json").read_text()))
    assert ws.model().config.poi_name == "mu"
    assert (run_dir / "metrics.jsonl").stat().st_size > 0  # tracked: the scan's best FoM
    assert "| object_cuts_scan@stat |" in (tmp_path / "results.md").read_text()
    # resumed: the finished runs are reused, not rerun
    again = run_bench([definition], **kwargs)
    assert again["problems"]["dimuon_tiny"]["runs"] == results["problems"]["dimuon_tiny"]["runs"]


def test_unknown_object_method(tiny_problem, tiny_train):
    with pytest.raises(diffana.ProblemDefinitionError, match="method must be one of"):
        nano.train_object_method(tiny_problem, "object_bdt", {}, "syst", 0, tiny_train)
