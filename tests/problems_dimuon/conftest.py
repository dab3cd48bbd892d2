"""A small NanoAOD-like dataset and a tiny dimuon problem, shared by the tests here."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from diffana.problems import load_problem
from diffana.problems._dimuon import write_nanoaod_dataset

TINY = """
schema = 1
[problem]
name = "dimuon_tiny"
kind = "diffana.problems._dimuon:DimuonNanoAOD"
[generator]
n_train = 600
n_valid = 300
n_test = 800
seed = 7
mll_min = 110.0
[analysis]
bins = 4
mass_range = [130.0, 290.0]
yields = { signal = 40.0, dy = 3000.0, ttbar = 20000.0, fakes = 200000.0 }
normsys = { lumi_unc = { signal = 0.025, dy = 0.025, ttbar = 0.025 }, ttbar_xsec = { ttbar = 0.1 } }
cuts = [ { name = "mu2_pt_min", feature = "mu2_pt", direction = ">" } ]
[scenarios.syst]
[scenarios.stat]
systematics = false
[methods.cuts_grad]
steps = 2
batch_size = 100
[methods.object_cuts_default]
per_scenario = false
[methods.object_cuts_scan]
grid_points = 2
budget = 3
chunk = 3
[methods.object_cuts_grad]
steps = 2
batch_size = 200
[methods.object_neos]
steps = 2
batch_size = 200
hidden = [4, 4]
"""


@pytest.fixture(scope="session")
def tiny_text() -> str:
    """The text of the tiny definition (for variants with errors)."""
    return TINY


@pytest.fixture(scope="session")
def tiny_definition(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dimuon") / "dimuon_tiny.toml"
    path.write_text(textwrap.dedent(TINY))
    return path


@pytest.fixture(scope="session")
def write_definition(tmp_path_factory):
    """`write_definition(text)` writes a definition file and returns its path."""
    folder = tmp_path_factory.mktemp("definitions")

    def write(text: str, name: str = "dimuon_tiny.toml") -> Path:
        path = folder / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture(scope="session")
def tiny_problem(tiny_definition):
    return load_problem(tiny_definition)


@pytest.fixture(scope="session")
def tiny_train(tiny_problem):
    return tiny_problem.generate(0, "train")


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> dict[str, Path]:
    """One NanoAOD-like file per sample, 500 skimmed events each."""
    return write_nanoaod_dataset(tmp_path_factory.mktemp("nano"), 500, seed=3, mll_min=110.0)
