"""Reading trees into dense events: structure, padding/clipping and clear errors."""

from __future__ import annotations

import awkward as ak
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import diffana
import diffana.io as dio

NANO = dio.Schema(
    collections=[
        dio.Collection("Muon", ["pt", "eta", "phi", "charge"], n_max=3),
        dio.Collection("Jet", ["pt", "btag"], n_max=4, sort_by="btag"),
    ],
    columns=["MET_pt"],
    weight="genWeight",
)


def _reference_pad(lists, n_max, fill, sort_desc_by=None):
    """Pure-Python padding/clipping: the documented behaviour spelled out."""
    values, mask = [], []
    for i, row in enumerate(lists):
        row = list(row)
        if sort_desc_by is not None:
            keys = list(sort_desc_by[i])
            order = sorted(range(len(row)), key=lambda j: -keys[j])  # stable
            row = [row[j] for j in order]
        kept = row[:n_max]
        values.append(kept + [fill] * (n_max - len(kept)))
        mask.append([True] * len(kept) + [False] * (n_max - len(kept)))
    return np.array(values, dtype=np.float64), np.array(mask, dtype=bool)


def test_read_events_matches_written_arrays(nano_file, nano_arrays):
    events = dio.read_events(nano_file, NANO)
    assert events.n_events == 1000
    mu = nano_arrays["Muon"]
    ref_pt, ref_mask = _reference_pad(mu.pt.tolist(), 3, 0.0)
    np.testing.assert_array_equal(np.asarray(events["Muon.pt"]), ref_pt.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(events["Muon"].mask), ref_mask)
    assert events["Muon.pt"].dtype == jnp.float64
    assert events["Muon"]["charge"].dtype == jnp.float64
    # clipping keeps the first n in file order: never more than n, and counts agree
    np.testing.assert_array_equal(
        np.asarray(events["Muon"].counts), np.minimum(ak.to_numpy(ak.num(mu.pt)), 3)
    )
    # the Jet collection is sorted by b-tag score (descending) before clipping to 4
    jets = nano_arrays["Jet"]
    ref_btag, _ = _reference_pad(jets.btag.tolist(), 4, 0.0, sort_desc_by=jets.btag.tolist())
    ref_jpt, _ = _reference_pad(jets.pt.tolist(), 4, 0.0, sort_desc_by=jets.btag.tolist())
    np.testing.assert_array_equal(np.asarray(events["Jet.btag"]), ref_btag.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(events["Jet.pt"]), ref_jpt.astype(np.float32))
    np.testing.assert_allclose(np.asarray(events.weights), nano_arrays["genWeight"])
    np.testing.assert_array_equal(
        np.asarray(events["MET_pt"]), nano_arrays["MET_pt"].astype(np.float64)
    )


def test_weights_default_to_scale_and_scale_multiplies(nano_file, nano_arrays):
    unit = dio.read_events(nano_file, dio.Schema(columns=["MET_pt"], weight_scale=2.5))
    np.testing.assert_array_equal(np.asarray(unit.weights), np.full(1000, 2.5))
    scaled = dio.read_events(
        nano_file, dio.Schema(columns=["MET_pt"], weight="genWeight", weight_scale=0.5)
    )
    np.testing.assert_allclose(np.asarray(scaled.weights), 0.5 * nano_arrays["genWeight"])


def test_entry_range_and_branch_mapping(nano_file, nano_arrays):
    schema = dio.Schema(
        collections=[dio.Collection("mu", {"pt": "Muon_pt"}, n_max=2)],
        columns={"met": "MET_pt"},
    )
    events = dio.read_events(nano_file, schema, entry_start=10, entry_stop=20)
    assert events.n_events == 10
    ref, _ = _reference_pad(nano_arrays["Muon"].pt[10:20].tolist(), 2, 0.0)
    np.testing.assert_array_equal(np.asarray(events["mu.pt"]), ref.astype(np.float32))
    assert set(events.columns) == {"met"}


def test_rntuple_reads_like_ttree(nano_file, rntuple_file):
    schema = dio.Schema(
        [dio.Collection("Muon", ["pt", "eta"], n_max=3, sort_by="pt")], ["MET_pt"], "genWeight"
    )
    a = dio.read_events(nano_file, schema)
    b = dio.read_events(rntuple_file, schema)
    for x, y in zip(
        [a["Muon.pt"], a["Muon.eta"], a["Muon"].mask, a["MET_pt"], a.weights],
        [b["Muon.pt"], b["Muon.eta"], b["Muon"].mask, b["MET_pt"], b.weights],
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert dio.list_trees(rntuple_file) == {"Events": "ROOT::RNTuple"}


def test_read_arrays_returns_requested_fields(nano_file):
    arr = dio.read_arrays(nano_file, ["MET_pt", "Muon_pt"], entry_stop=5)
    assert arr.fields == ["MET_pt", "Muon_pt"]
    assert len(arr) == 5


@settings(max_examples=40, deadline=None)
@given(
    lists=st.lists(
        st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), max_size=6),
        min_size=1,
        max_size=8,
    ),
    n_max=st.integers(1, 5),
    fill=st.sampled_from([0.0, -999.0]),
    sort=st.booleans(),
)
def test_pad_objects_matches_reference(lists, n_max, fill, sort):
    arr = ak.Array(lists)
    other = -arr  # a second field moves with the first
    objs = dio.pad_objects(
        {"x": arr, "y": other}, n_max, sort_by="x" if sort else None, fill_value=fill
    )
    ref_x, ref_mask = _reference_pad(lists, n_max, fill, sort_desc_by=lists if sort else None)
    ref_y, _ = _reference_pad(
        [[-v for v in row] for row in lists], n_max, fill, sort_desc_by=lists if sort else None
    )
    np.testing.assert_array_equal(np.asarray(objs["x"]), ref_x)
    np.testing.assert_array_equal(np.asarray(objs["y"]), ref_y)
    np.testing.assert_array_equal(np.asarray(objs.mask), ref_mask)
    assert objs.n_max == n_max


def test_pad_objects_accepts_record_array_and_ascending():
    rec = ak.zip({"pt": ak.Array([[5.0, 1.0, 3.0]]), "q": ak.Array([[1, -1, 1]])})
    objs = dio.pad_objects(rec, 2, sort_by="pt", ascending=True)
    assert objs["pt"].tolist() == [[1.0, 3.0]]
    assert objs["q"].tolist() == [[-1.0, 1.0]]


def test_to_dense_flat_and_jagged():
    assert dio.to_dense(np.array([1, 2], dtype=np.int32), "n").dtype == jnp.float64
    with pytest.raises(diffana.DataError, match=r"'Muon_pt' is jagged"):
        dio.to_dense(ak.Array([[1.0], []]), "Muon_pt")


def test_events_replace_and_getitem(nano_file):
    events = dio.read_events(nano_file, NANO, entry_stop=4)
    scaled = events.replace("Muon.pt", events["Muon.pt"] * 1.01)
    np.testing.assert_allclose(np.asarray(scaled["Muon.pt"]), 1.01 * np.asarray(events["Muon.pt"]))
    assert scaled["Jet.pt"] is events["Jet.pt"]
    assert events.replace("weights", jnp.zeros(4)).weights.tolist() == [0.0] * 4
    with pytest.raises(KeyError, match="collections"):
        events["Electron"]
    with pytest.raises(diffana.DataError, match="shape"):
        events.replace("MET_pt", jnp.zeros(3))


# --- errors ----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(diffana.DataError, match=r"ROOT file not found: .*nope.root"):
        dio.read_events(tmp_path / "nope.root", NANO)
    with pytest.raises(diffana.DataError, match="not found"):
        dio.iterate_events([tmp_path / "nope.root"], NANO)


def test_not_a_root_file(tmp_path):
    p = tmp_path / "notes.root"
    p.write_text("hello")
    with pytest.raises(diffana.DataError, match=r"could not open .* as a ROOT file"):
        dio.read_events(p, NANO)


def test_missing_tree_names_available(nano_file):
    with pytest.raises(diffana.DataError, match=r"no tree 'events'.*did you mean 'Events'"):
        dio.read_events(nano_file, NANO, tree="events")
    with pytest.raises(diffana.DataError, match=r"no tree 'Tree'.*'Events'"):
        dio.read_events(nano_file, NANO, tree="Tree")


def test_object_that_is_not_a_tree(nano_file):
    with pytest.raises(diffana.DataError, match=r"'h_mass' .* is a TH1D, not a TTree"):
        dio.read_events(nano_file, NANO, tree="h_mass")


def test_ambiguous_tree(two_tree_file):
    with pytest.raises(diffana.DataError, match=r"holds 2 trees \('Events', 'Runs'\)"):
        dio.read_events(two_tree_file, dio.Schema(columns=["x"]))
    events = dio.read_events(two_tree_file, dio.Schema(columns=["x"]), tree="Events")
    assert events["x"].tolist() == [0.0, 1.0, 2.0]


def test_missing_branch_names_candidates(nano_file):
    schema = dio.Schema([dio.Collection("Muon", ["pT"], n_max=2)])
    with pytest.raises(diffana.DataError, match=r"no branch 'Muon_pT'; did you mean 'Muon_pt'"):
        dio.read_events(nano_file, schema)
    with pytest.raises(diffana.DataError, match=r"no branch 'genweight'.*'genWeight'"):
        dio.read_events(nano_file, dio.Schema(weight="genweight"))
    with pytest.raises(diffana.DataError, match=r"no branch 'MET_phi'.*'MET_pt'"):
        dio.iterate_events(nano_file, dio.Schema(columns=["MET_phi"]))


def test_jagged_branch_where_flat_expected(nano_file):
    with pytest.raises(diffana.DataError, match=r"'Muon_pt' is jagged .* flat event-level"):
        dio.read_events(nano_file, dio.Schema(columns=["Muon_pt"]))
    with pytest.raises(diffana.DataError, match=r"'Jet_pt' is jagged"):
        dio.read_events(nano_file, dio.Schema(columns=["MET_pt"], weight="Jet_pt"))


def test_flat_branch_where_collection_expected(nano_file):
    schema = dio.Schema([dio.Collection("MET", ["pt"], n_max=1)])
    with pytest.raises(diffana.DataError, match=r"'MET_pt' has type .*collection field"):
        dio.read_events(nano_file, schema)


def test_fields_with_different_multiplicities(nano_file):
    schema = dio.Schema([dio.Collection("mix", {"a": "Muon_pt", "b": "Jet_pt"}, n_max=2)])
    with pytest.raises(diffana.DataError, match=r"different object counts"):
        dio.read_events(nano_file, schema)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: dio.Collection("Muon", ["pt"], n_max=0), "n_max must be >= 1"),
        (lambda: dio.Collection("Muon", "pt", n_max=2), "fields must be a sequence"),
        (lambda: dio.Collection("Muon", ["pt"], n_max=2, sort_by="eta"), "sort_by='eta'"),
        (lambda: dio.Schema(columns="MET_pt"), "list of names"),
        (
            lambda: dio.Schema([dio.Collection("a", ["x"], 1), dio.Collection("a", ["y"], 1)]),
            "duplicate",
        ),
        (lambda: dio.pad_objects({"x": ak.Array([[1.0]])}, 0), "n_max must be an int >= 1"),
        (lambda: dio.pad_objects([1.0, 2.0], 2), "expected a mapping"),
    ],
)
def test_bad_definitions(make, match):
    with pytest.raises(diffana.DataError, match=match):
        make()
