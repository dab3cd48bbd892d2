"""The object-level benchmark driver: training, hard evaluation, pyhf referee, outputs."""

from __future__ import annotations

import json

import numpy as np
import pyhf
import pytest

import diffana
from diffana.problems import _nanoaod as nano


def test_default_and_scan_evaluated_hard(tiny_problem, tmp_path):
    # the statistics-only model keeps the fits' compilation short; the driver is the same
    res = nano.run_dimuon_benchmark(
        problem=tiny_problem, methods=("default", "scan"), out=tmp_path, seed=1, scenario="stat"
    )
    assert set(res["methods"]) == {"default", "scan"}
    default, scan = res["methods"]["default"], res["methods"]["scan"]
    assert default["training"]["thresholds"] == dict(
        zip(nano.CUT_NAMES, nano.DEFAULT_CUTS, strict=True)
    )
    assert scan["training"]["fom_evaluations"] == 3 and scan["training"]["scan"] == "random"
    for r in (default, scan):
        e = r["evaluation"]
        assert 0.0 < e["cls"] < 1.0 and e["z0"] > 0.0
        np.testing.assert_allclose(e["pyhf_cls"], e["cls"], rtol=1e-4)
        np.testing.assert_allclose(e["pyhf_z0"], e["z0"], rtol=1e-4)
        counts = np.asarray(r["mc_counts"]["signal/nominal"])
        assert np.all(counts == np.round(counts))  # hard evaluation: integer MC counts
    # outputs: results, a table, pyhf workspaces, plots
    saved = json.loads((tmp_path / "dimuon_results.json").read_text())
    assert saved["methods"]["scan"]["evaluation"]["z0"] == pytest.approx(scan["evaluation"]["z0"])
    table = (tmp_path / "dimuon_results.md").read_text()
    assert "| default | 25.0 | 0.150 | 0.50 | 80 |" in table
    ws = pyhf.Workspace(json.loads((tmp_path / "dimuon_scan_workspace.json").read_text()))
    assert ws.model().config.poi_name == "mu"
    assert (tmp_path / "dimuon_mass.png").stat().st_size > 1000


def test_unknown_method(tiny_problem, tiny_train):
    with pytest.raises(diffana.ProblemDefinitionError, match="method must be one of"):
        nano.train_dimuon_method(tiny_problem, "bdt", tiny_train)
