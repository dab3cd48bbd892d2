"""Strict settings for the whole test suite: float64, no silent rank promotion."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax
import pytest
from hypothesis import settings

import diffana  # noqa: F401  (applies the float64 policy)

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

# Property tests draw the same examples on every run, so that a run of the suite (CI
# included) is reproducible; explore new examples locally with
# `pytest --hypothesis-profile=explore`.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("deterministic")

# `diffana` commands run by the tests (in this process or in subprocesses) keep their
# compilation cache in a folder of the test run, not in the user's cache folder.
os.environ.setdefault("DIFFANA_CACHE_DIR", tempfile.mkdtemp(prefix="diffana-test-cache-"))

REPO_ROOT = Path(__file__).resolve().parents[1]
CMS_OPENDATA = REPO_ROOT.parent / "shared" / "data" / "cms-opendata"


@pytest.fixture(scope="session")
def cms_opendata() -> Path:
    """Folder of the real CMS open-data ROOT files; skips the test when it is absent."""
    if not CMS_OPENDATA.is_dir():
        pytest.skip(f"CMS open-data folder not found at {CMS_OPENDATA}; real-data tests skipped")
    return CMS_OPENDATA


@pytest.fixture(scope="session")
def empty_bin_workspace() -> dict:
    """A workspace whose first bin has no background and whose POI may go below zero.

    The Asimov data at mu = 0 are empty in that bin; its NLL term (its rate) keeps
    falling as mu goes negative, so the generating point is not the free fit's minimum
    and the closed form of that fit must not be used.
    """
    background = {
        "name": "background",
        "data": [0.0, 50.0],
        "modifiers": [{"name": "norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}],
    }
    signal = {
        "name": "signal",
        "data": [3.0, 5.0],
        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
    }
    config = {"poi": "mu", "parameters": [{"name": "mu", "bounds": [[-9.0, 10.0]]}]}
    return {
        "channels": [{"name": "SR", "samples": [signal, background]}],
        "observations": [{"name": "SR", "data": [0.0, 52.0]}],
        "measurements": [{"name": "m", "config": config}],
        "version": "1.0.0",
    }
