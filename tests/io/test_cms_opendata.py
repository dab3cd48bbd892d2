"""Real CMS open-data files: muon collections, soft selections and their gradients."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import uproot

import diffana.io as dio
from diffana.relax import cut, hard_cut, hist
from diffana.testing import assert_grad_matches_fd

HZZ = dio.Schema(
    collections=[dio.Collection("Muon", ["Px", "Py", "Pz", "E", "Iso", "Charge"], n_max=4)],
    columns=["MET_px", "MET_py"],
    weight="EventWeight",
)
NANO = dio.Schema(
    collections=[dio.Collection("Muon", ["pt", "eta", "phi", "charge"], n_max=3, sort_by="pt")],
    columns=["MET_pt"],
    weight="genWeight",
)
MASS_EDGES = jnp.linspace(60.0, 160.0, 11)


@pytest.fixture(scope="module")
def hzz_path(cms_opendata):
    return cms_opendata / "uproot-HZZ.root"


@pytest.fixture(scope="module")
def hzz(hzz_path):
    return dio.read_events(hzz_path, HZZ)


def _pt(muons):
    return jnp.hypot(muons["Px"], muons["Py"])


def at_least_two(w):
    """Soft probability that at least two of the (independent) objects pass."""
    none = jnp.prod(1.0 - w, axis=1)
    diagonal = jnp.eye(w.shape[1], dtype=bool)[None, :, :]
    others = jnp.prod(jnp.where(diagonal, 1.0, (1.0 - w)[:, None, :]), axis=2)  # j != i
    exactly_one = jnp.sum(w * others, axis=1)
    return 1.0 - none - exactly_one


@functools.partial(jax.jit, static_argnames=("hard",))
def selection(theta, events, hard=False, sharpness=1.0):
    """Per-event weight for >= 2 muons with pT > theta[0] GeV and Iso < theta[1] GeV."""
    muons = events["Muon"]
    c = hard_cut if hard else cut
    pt_cut = c(_pt(muons), theta[0], 1.5 / sharpness)
    w = pt_cut * c(muons["Iso"], theta[1], 0.5 / sharpness, "<") * muons.mask
    return at_least_two(w)


def dimuon_mass(events):
    m = events["Muon"]
    e = m["E"][:, 0] + m["E"][:, 1]
    px, py, pz = (m[k][:, 0] + m[k][:, 1] for k in ("Px", "Py", "Pz"))
    m2 = e**2 - px**2 - py**2 - pz**2
    ok = m2 > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, m2, 1.0)), 0.0)


@jax.jit
def selected_count(theta, events):
    return jnp.sum(events.weights * selection(theta, events))


@jax.jit
def mass_hist(theta, events):
    return hist(
        dimuon_mass(events), MASS_EDGES, 3.0, weights=events.weights * selection(theta, events)
    )


THETA = jnp.array([20.0, 3.0])


def test_hzz_muons_load_as_in_file(hzz, hzz_path):
    raw = uproot.open(hzz_path)["events"].arrays(["Muon_Px", "NMuon", "EventWeight"])
    assert hzz.n_events == 2421
    counts = np.asarray(hzz["Muon"].counts)
    np.testing.assert_array_equal(counts, np.minimum(raw["NMuon"].to_numpy(), 4))
    first = np.asarray(hzz["Muon.Px"][:, 0])
    has = counts > 0
    np.testing.assert_allclose(
        first[has], [row[0] for row in raw["Muon_Px"][has].tolist()], rtol=1e-7
    )
    np.testing.assert_allclose(np.asarray(hzz.weights), raw["EventWeight"].to_numpy(), rtol=1e-7)
    # padded slots are masked and hold the fill value
    assert np.all(np.asarray(hzz["Muon.E"])[~np.asarray(hzz["Muon"].mask)] == 0.0)


def test_hzz_soft_count_gradient_matches_fd(hzz):
    hard = jnp.sum(hzz.weights * selection(THETA, hzz, hard=True))
    sharp = jnp.sum(hzz.weights * selection(THETA, hzz, sharpness=100.0))
    assert abs(sharp - hard) < 0.01 * hard  # the soft selection tends to its hard twin
    grad = assert_grad_matches_fd(lambda t: selected_count(t, hzz), THETA, rtol=1e-5, eps=1e-5)
    assert grad[0] < 0 < grad[1]  # higher pT threshold removes, looser isolation adds events


def test_hzz_mass_histogram_gradient_matches_fd(hzz):
    h = mass_hist(THETA, hzz)
    assert int(jnp.argmax(h)) in (2, 3)  # the Z peak (m_μμ ≈ 91 GeV)
    assert_grad_matches_fd(lambda t: mass_hist(t, hzz)[3], THETA, rtol=1e-5, eps=1e-5)


def test_hzz_streaming_matches_whole_file(hzz, hzz_path):
    stream = dio.iterate_events(hzz_path, HZZ, tree="events", step_size=700)
    assert len(list(stream)) == 4
    np.testing.assert_allclose(
        dio.sum_over_chunks(mass_hist, THETA, stream), mass_hist(THETA, hzz), rtol=1e-12
    )
    value, grad = dio.value_and_grad_over_chunks(selected_count, THETA, stream)
    ref_value, ref_grad = jax.value_and_grad(selected_count)(THETA, hzz)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10)

    def loss(h):  # signal-like peak bins over the side bins: not additive over events
        return -(h[3] ** 2) / (h[0] + h[1] + h[5] + h[6] + 1.0)

    value, grad = dio.loss_and_grad_over_chunks(mass_hist, loss, THETA, stream)
    ref_value, ref_grad = jax.value_and_grad(lambda t: loss(mass_hist(t, hzz)))(THETA)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-9)


def test_nanoaod_ttbar_soft_selection(cms_opendata):
    path = cms_opendata / "nanoAOD_2015_CMS_Open_Data_ttbar.root"
    events = dio.read_events(path, NANO)
    assert events.n_events == 200
    pts = np.asarray(events["Muon.pt"])
    assert np.all(np.diff(pts, axis=1) <= 0)  # sorted by pT, leading first
    assert dio.list_trees(path) == {"Events": "TTree"}

    @functools.partial(jax.jit, static_argnames=("hard",))
    def count(theta, sharpness=1.0, hard=False):
        c = hard_cut if hard else cut
        pt_cut = c(events["Muon.pt"], theta[0], 2.0 / sharpness)
        eta_cut = c(jnp.abs(events["Muon.eta"]), theta[1], 0.1 / sharpness, "<")
        w = pt_cut * eta_cut * events["Muon"].mask
        return jnp.sum(events.weights * (1.0 - jnp.prod(1.0 - w, axis=1)))

    theta = jnp.array([25.0, 2.1])
    assert_grad_matches_fd(count, theta, rtol=1e-5, eps=1e-5)
    # the hard twin counts events with a muon passing both cuts (weights are ±w0, NLO)
    pts, etas = np.asarray(events["Muon.pt"]), np.abs(np.asarray(events["Muon.eta"]))
    passed = np.any((pts > 25.0) & (etas < 2.1), axis=1)
    hard = np.sum(np.asarray(events.weights)[passed])
    np.testing.assert_allclose(count(theta, hard=True), hard, rtol=1e-12)
    w0 = abs(float(events.weights[0]))
    assert abs(float(count(theta, sharpness=1000.0)) - hard) < 0.01 * w0
    stream = dio.iterate_events(path, NANO, step_size=64)
    np.testing.assert_allclose(
        dio.sum_over_chunks(
            lambda t, ev: jnp.sum(ev.weights * (ev["Muon"].counts > 0)), theta, stream
        ),
        jnp.sum(events.weights * (events["Muon"].counts > 0)),
        rtol=1e-12,
    )


def test_real_file_errors(cms_opendata):
    import diffana

    path = cms_opendata / "nanoAOD_2015_CMS_Open_Data_ttbar.root"
    with pytest.raises(diffana.DataError, match=r"no branch 'Muon_Pt'.*'Muon_pt'"):
        dio.read_events(path, dio.Schema([dio.Collection("Muon", ["Pt"], n_max=2)]))
    with pytest.raises(diffana.DataError, match=r"'Muon_pt' is jagged"):
        dio.read_events(path, dio.Schema(columns=["Muon_pt"]))
    with pytest.raises(diffana.DataError, match=r"no tree 'events'.*'Events'"):
        dio.read_events(path, NANO, tree="events")
