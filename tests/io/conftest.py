"""Small ROOT files written on the fly for the I/O tests."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot


def _nano_arrays(n_events: int, seed: int) -> dict[str, ak.Array | np.ndarray]:
    rng = np.random.default_rng(seed)
    n_mu = rng.poisson(1.6, n_events)
    n_jet = rng.poisson(2.5, n_events)
    tot_mu, tot_jet = int(n_mu.sum()), int(n_jet.sum())
    muon = ak.zip(
        {
            "pt": ak.unflatten(rng.exponential(25.0, tot_mu).astype(np.float32) + 3, n_mu),
            "eta": ak.unflatten(rng.uniform(-2.4, 2.4, tot_mu).astype(np.float32), n_mu),
            "phi": ak.unflatten(rng.uniform(-np.pi, np.pi, tot_mu).astype(np.float32), n_mu),
            "charge": ak.unflatten(rng.choice([-1, 1], tot_mu).astype(np.int32), n_mu),
        }
    )
    jet = ak.zip(
        {
            "pt": ak.unflatten(rng.exponential(40.0, tot_jet).astype(np.float32) + 20, n_jet),
            "btag": ak.unflatten(rng.uniform(0, 1, tot_jet).astype(np.float32), n_jet),
        }
    )
    return {
        "Muon": muon,
        "Jet": jet,
        "MET_pt": rng.exponential(30.0, n_events).astype(np.float32),
        "genWeight": rng.normal(1.0, 0.1, n_events),
    }


def write_nano(path: Path, n_events: int = 1000, seed: int = 0) -> Path:
    """A NanoAOD-like TTree 'Events': nMuon, Muon_pt/eta/phi/charge, nJet, Jet_pt/btag, ..."""
    arrays = _nano_arrays(n_events, seed)
    with uproot.recreate(path) as f:
        f.mktree(
            "Events",
            {k: v.type.content if isinstance(v, ak.Array) else v.dtype for k, v in arrays.items()},
        )
        f["Events"].extend(arrays)
        f["h_mass"] = np.histogram(np.arange(10.0), bins=5)
    return path


@pytest.fixture(scope="session")
def nano_file(tmp_path_factory) -> Path:
    return write_nano(tmp_path_factory.mktemp("nano") / "nano.root", n_events=1000, seed=0)


@pytest.fixture(scope="session")
def nano_arrays() -> dict:
    """The arrays written into `nano_file` (same seed and size)."""
    return _nano_arrays(1000, 0)


@pytest.fixture(scope="session")
def rntuple_file(tmp_path_factory, nano_arrays) -> Path:
    """The same content as `nano_file`, flattened NanoAOD-style, as an RNTuple."""
    flat = {}
    for key, value in nano_arrays.items():
        if isinstance(value, ak.Array) and value.fields:
            for field in value.fields:
                flat[f"{key}_{field}"] = value[field]
        else:
            flat[key] = value
    path = tmp_path_factory.mktemp("rntuple") / "nano_rntuple.root"
    with uproot.recreate(path) as f:
        f.mkrntuple("Events", ak.Array(flat))
    return path


@pytest.fixture(scope="session")
def two_tree_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("two") / "two.root"
    with uproot.recreate(path) as f:
        f["Events"] = {"x": np.arange(3.0)}
        f["Runs"] = {"run": np.arange(2.0)}
    return path


@pytest.fixture(scope="session")
def make_nano():
    """`make_nano(path, n_events, seed)` writes a NanoAOD-like file and returns its path."""
    return write_nano
