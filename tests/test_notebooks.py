"""The example notebooks: each one runs without error, and the stored copy is complete.

Each notebook is executed with nbclient in a fresh ``python3`` kernel with
``DIFFANA_NOTEBOOK_QUICK=1`` (small samples, few steps). The stored notebooks are the
output of ``python notebooks/_build.py``; the tests also check that they match the
generator and carry the outputs of a complete run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need nbclient")
pytest.importorskip("ipykernel", reason="the notebook tests need ipykernel")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
IDS = [p.stem for p in PATHS]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "_diffana_notebook_build", NOTEBOOKS / "_build.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_notebook_is_stored():
    assert sorted(_generator().NOTEBOOKS) == [p.name for p in PATHS]


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_stored_notebook_matches_generator_and_has_outputs(path):
    cells = _generator().NOTEBOOKS[path.name]
    nb = nbformat.read(path, as_version=4)
    assert [c.cell_type for c in nb.cells] == [c.cell_type for c in cells]
    stale = [
        i for i, (a, b) in enumerate(zip(nb.cells, cells, strict=True)) if a.source != b.source
    ]
    assert not stale, f"{path.name}: cells {stale} differ from notebooks/_build.py; rebuild it"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, f"{path.name}: cell {i} was not executed"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{path.name}: cell {i} stored an error: {errors[0].get('evalue')}"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_notebook_runs(path, monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFANA_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}")
