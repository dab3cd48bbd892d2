"""The NanoAOD-like generator: file layout, determinism, skim and physics sanity."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

import diffana
from diffana.problems._dimuon import (
    NANOAOD_SAMPLES,
    generate_nanoaod,
    jes_shift,
    write_nanoaod,
)


def _leading_mass(muons):
    lead = ak.pad_none(muons, 2, clip=True)
    pt, eta, phi, m = (
        ak.to_numpy(ak.fill_none(lead[f], 0.0)).astype(float) for f in ("pt", "eta", "phi", "mass")
    )
    p = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=-1)
    e = np.sqrt(np.sum(p**2, axis=-1) + m**2)
    tot_e, tot_p = e.sum(axis=1), p.sum(axis=1)
    return np.sqrt(np.maximum(tot_e**2 - np.sum(tot_p**2, axis=1), 0.0))


def test_file_has_nanoaod_layout(dataset):
    with uproot.open(dataset["ttbar"]) as f:
        tree = f["Events"]
        types = tree.typenames()
        assert tree.num_entries == 500
    for counter in ("nMuon", "nElectron", "nJet"):
        assert types[counter] == "int32_t"
    for branch in (
        "Muon_pt",
        "Muon_eta",
        "Muon_pfRelIso04_all",
        "Electron_pt",
        "Jet_btagDeepB",
        "Jet_pt_jesUp",
    ):
        assert types[branch] == "float[]", branch
    assert types["Muon_charge"] == "int32_t[]"
    for branch in ("MET_pt", "MET_pt_jesUp", "genWeight", "puWeight", "puWeightUp"):
        assert types[branch] == "float"
    with uproot.open(dataset["ttbar"]) as f:
        arr = f["Events"].arrays(["nMuon", "Muon_pt", "Jet_pt", "Jet_pt_jesUp", "Jet_eta"])
    np.testing.assert_array_equal(ak.to_numpy(ak.num(arr["Muon_pt"])), ak.to_numpy(arr["nMuon"]))
    assert ak.all(arr["Muon_pt"][:, :-1] >= arr["Muon_pt"][:, 1:])  # pT-ordered
    expected = arr["Jet_pt"] * (1 + jes_shift(arr["Jet_pt"], arr["Jet_eta"]))
    np.testing.assert_allclose(ak.flatten(arr["Jet_pt_jesUp"]), ak.flatten(expected), rtol=1e-6)


def test_deterministic_and_seed_dependent():
    a = generate_nanoaod("dy", 300, seed=1)
    b = generate_nanoaod("dy", 300, seed=1)
    c = generate_nanoaod("dy", 300, seed=2)
    assert ak.all(a["Muon"].pt == b["Muon"].pt)
    np.testing.assert_array_equal(a["MET_pt"], b["MET_pt"])
    assert not np.array_equal(a["MET_pt"], c["MET_pt"])


def test_skim_and_physics():
    out = {s: generate_nanoaod(s, 2000, seed=5, mll_min=110.0) for s in NANOAOD_SAMPLES}
    for s, ev in out.items():
        assert len(ev["MET_pt"]) == 2000
        assert np.all(_leading_mass(ev["Muon"]) > 110.0), s
        w = ev["genWeight"]
        assert np.all(np.isfinite(w)) and np.all(w > 0), s
    m_sig = _leading_mass(out["signal"]["Muon"])
    assert abs(np.median(m_sig) - 200.0) < 2.0
    assert np.percentile(m_sig, 84) - np.percentile(m_sig, 16) < 15.0  # narrow peak
    m_dy = _leading_mass(out["dy"]["Muon"])
    assert np.median(m_dy) < 160.0  # falling spectrum

    def lead_iso(ev):
        return ak.to_numpy(ak.fill_none(ak.max(ev["Muon"].pfRelIso04_all[:, :2], axis=1), 0.0))

    def max_btag(ev):
        return ak.to_numpy(ak.fill_none(ak.max(ev["Jet"].btagDeepB, axis=1), 0.0))

    assert np.median(lead_iso(out["fakes"])) > 3 * np.median(lead_iso(out["signal"]))
    assert np.mean(max_btag(out["ttbar"]) > 0.5) > 0.8 > 0.2 > np.mean(max_btag(out["dy"]) > 0.5)
    assert np.median(out["ttbar"]["MET_pt"]) > 2 * np.median(out["dy"]["MET_pt"])
    # pileup weights average to about 1 (a reweighting, not a normalisation change)
    for key in ("puWeight", "puWeightUp", "puWeightDown"):
        assert abs(np.mean(out["dy"][key]) - 1.0) < 0.05


def test_write_is_atomic_and_errors(tmp_path):
    path = write_nanoaod(tmp_path / "s.root", "signal", 50, seed=0, step=20)
    with uproot.open(path) as f:
        assert f["Events"].num_entries == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.root"]
    with pytest.raises(diffana.DataError, match="unknown sample 'wjets'"):
        generate_nanoaod("wjets", 10, seed=0)
    with pytest.raises(diffana.DataError, match="n must be an int >= 1"):
        generate_nanoaod("dy", 0, seed=0)


def test_docstring_examples():
    import doctest

    from diffana.problems._dimuon import generator

    assert doctest.testmod(generator, optionflags=doctest.ELLIPSIS).failed == 0
