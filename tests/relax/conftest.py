"""Shared fixtures of the relaxation tests: small, deterministic samples."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


@pytest.fixture(scope="module")
def events(rng) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian observable with positive MC weights; no value within 1e-3 of 0.25 * k."""
    x = rng.normal(0.0, 1.0, size=400)
    x = x[np.abs(x * 4 - np.round(x * 4)) > 4e-3]
    w = rng.uniform(0.5, 1.5, size=x.size)
    return x, w
