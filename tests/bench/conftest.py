"""A tiny benchmark, run once per session and shared by the bench and CLI tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

TINY_BLOBS = """
schema = 1
notes = "A tiny copy of gaussian_blobs for tests."
[problem]
name = "tiny_blobs"
kind = "gaussian_blobs"
[generator]
means.signal = [-1.0, 1.0]
means.background = [1.0, -1.0]
means.background_up = [2.5, 2.0]
means.background_down = [-2.5, -1.5]
n_train = 400
n_valid = 400
n_test = 2000
seed = 5
[analysis]
bins = 3
signal_yield = 20.0
background_yield = 100.0
[scenarios.default]
[methods.neos]
pipeline = "nn_kde"
loss = "cls"
hidden = [8, 8]
learning_rate = 1e-2
steps = 4
batch_size = 64
bandwidth = { start = 0.2, end = 0.1 }
[methods.bce]
hidden = [8, 8]
steps = 4
batch_size = 64
[bench]
seeds = 2
methods = ["neos", "bce"]
"""

TINY_CUTS = """
schema = 1
[problem]
name = "tiny_cuts"
kind = "cut_scan"
[generator]
n_train = 2000
n_valid = 2000
n_test = 4000
seed = 3
[analysis]
bins = 1
signal_yield = 500.0
background_yield = 50000.0
background_norm = 0.1
jes = 0.04
cuts = [
  { name = "btag_min", observable = "btag", direction = ">" },
  { name = "mass_max", observable = "mass", direction = "<" },
]
[scenarios.k2]
thresholds = 2
[methods.cuts_grad]
learning_rate = 0.05
steps = 5
restarts = 2
restart_candidates = 6
batch_size = 500
slope = { start = 0.5, end = 0.1 }
[methods.cuts_scan]
grid_points = 4
budget = 20
batch = 8
[bench]
seeds = 1
methods = ["cuts_grad", "cuts_scan"]
"""


@pytest.fixture(scope="session")
def tiny_definitions(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("definitions")
    out = {}
    for name, text in (("tiny_blobs", TINY_BLOBS), ("tiny_cuts", TINY_CUTS)):
        path = d / f"{name}.toml"
        path.write_text(textwrap.dedent(text))
        out[name] = path
    return out


@pytest.fixture(scope="session")
def tiny_bench(tiny_definitions, tmp_path_factory):
    """``run_bench`` on both tiny problems: (results, output folder)."""
    from diffana.bench import run_bench

    out = tmp_path_factory.mktemp("bench")
    results = run_bench(
        [tiny_definitions["tiny_blobs"], tiny_definitions["tiny_cuts"]],
        out=out,
        progress=False,
        tensorboard=False,
    )
    return results, out
