"""Chunked streaming: the same histograms and gradients as reading everything at once."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffana
import diffana.io as dio
from diffana.relax import cut, hist

SCHEMA = dio.Schema(
    collections=[dio.Collection("Muon", ["pt", "eta"], n_max=3, sort_by="pt")],
    columns=["MET_pt"],
    weight="genWeight",
)
EDGES = jnp.linspace(0.0, 150.0, 11)


def soft_hist(theta, events):
    """Soft histogram of the leading muon pT, weighted by a soft pT and MET selection."""
    pt = events["Muon.pt"]
    mu_w = cut(pt, theta[0], 2.0) * events["Muon"].mask
    passed = 1.0 - jnp.prod(1.0 - mu_w, axis=1)  # at least one muon passes
    w = events.weights * passed * cut(events["MET_pt"], theta[1], 3.0)
    return hist(pt[:, 0], EDGES, 4.0, weights=w)


def soft_count(theta, events):
    return jnp.sum(soft_hist(theta, events))


def nonlinear_loss(h):
    """A loss that is not additive over events: -sum(h²)/sum(h)."""
    return -jnp.sum(h**2) / jnp.sum(h)


THETA = jnp.array([22.0, 15.0])


@pytest.fixture(scope="module")
def two_files(make_nano, tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    return [make_nano(d / "a.root", 530, 1), make_nano(d / "b.root", 290, 2)]


@pytest.fixture(scope="module")
def whole(two_files):
    parts = [dio.read_events(f, SCHEMA) for f in two_files]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def test_stream_shapes_and_padding(two_files):
    stream = dio.iterate_events(two_files, SCHEMA, step_size=200)
    chunks = list(stream)
    assert len(chunks) == 3 + 2  # 530 -> 200, 200, 130(+70); 290 -> 200, 90(+110)
    assert all(c.n_events == 200 for c in chunks)
    assert stream.num_entries == 820
    last = chunks[-1]
    assert np.all(np.asarray(last.weights[90:]) == 0.0)
    assert not np.any(np.asarray(last["Muon"].mask[90:]))
    assert len(list(stream)) == 5  # re-iterable: reads the files again
    unpadded = list(dio.iterate_events(two_files, SCHEMA, step_size=200, pad_last=False))
    assert [c.n_events for c in unpadded] == [200, 200, 130, 200, 90]


def test_histograms_accumulate_exactly(two_files, whole):
    direct = soft_hist(THETA, whole)
    for step in (200, 1000):
        stream = dio.iterate_events(two_files, SCHEMA, step_size=step)
        np.testing.assert_allclose(
            dio.sum_over_chunks(soft_hist, THETA, stream), direct, rtol=1e-12
        )
    hard = dio.sum_over_chunks(
        lambda t, ev: jnp.histogram(ev["Muon.pt"][:, 0], EDGES, weights=ev.weights)[0],
        THETA,
        dio.iterate_events(two_files, SCHEMA, step_size=128),
    )
    ref = jnp.histogram(whole["Muon.pt"][:, 0], EDGES, weights=whole.weights)[0]
    np.testing.assert_allclose(hard, ref, rtol=1e-12)


def test_additive_gradient_accumulates(two_files, whole):
    stream = dio.iterate_events(two_files, SCHEMA, step_size=200)
    value, grad = dio.value_and_grad_over_chunks(soft_count, THETA, stream)
    ref_value, ref_grad = jax.value_and_grad(soft_count)(THETA, whole)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10)
    assert np.all(np.asarray(grad) < 0)  # tighter cuts select fewer events


def test_nonlinear_loss_gradient_accumulates(two_files, whole):
    stream = dio.iterate_events(two_files, SCHEMA, step_size=200)
    loss, grad = dio.loss_and_grad_over_chunks(soft_hist, nonlinear_loss, THETA, stream)
    ref_loss, ref_grad = jax.value_and_grad(lambda t: nonlinear_loss(soft_hist(t, whole)))(THETA)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-14)
    diffana.testing.assert_grad_matches_fd(
        lambda t: nonlinear_loss(soft_hist(t, whole)), THETA, rtol=1e-5
    )


def test_pytree_parameters(two_files, whole):
    params = {"pt": jnp.array(22.0), "met": jnp.array(15.0)}

    def f(p, ev):
        return soft_hist(jnp.stack([p["pt"], p["met"]]), ev)

    stream = dio.iterate_events(two_files, SCHEMA, step_size=300)
    _, grad = dio.loss_and_grad_over_chunks(f, nonlinear_loss, params, stream)
    _, ref = jax.value_and_grad(lambda p: nonlinear_loss(f(p, whole)))(params)
    np.testing.assert_allclose(grad["pt"], ref["pt"], rtol=1e-9)
    np.testing.assert_allclose(grad["met"], ref["met"], rtol=1e-9)


def test_two_pass_needs_reiterable(two_files):
    gen = iter(dio.iterate_events(two_files, SCHEMA, step_size=200))
    with pytest.raises(diffana.DataError, match="re-iterable"):
        dio.loss_and_grad_over_chunks(soft_hist, nonlinear_loss, THETA, gen)
    with pytest.raises(diffana.DataError, match="no chunks"):
        dio.sum_over_chunks(soft_hist, THETA, [])


@pytest.mark.parametrize("step", [0, 2.5, "10 MB"])
def test_bad_step_size(two_files, step):
    with pytest.raises(diffana.DataError, match="step_size"):
        dio.iterate_events(two_files, SCHEMA, step_size=step)


def test_rntuple_streams_like_ttree(nano_file, rntuple_file):
    schema = dio.Schema([dio.Collection("Muon", ["pt"], n_max=2)], ["MET_pt"], "genWeight")
    a = dio.sum_over_chunks(
        lambda t, ev: hist(
            ev["Muon.pt"][:, 0], EDGES, 4.0, weights=ev.weights * ev["Muon"].mask[:, 0]
        ),
        THETA,
        dio.iterate_events(nano_file, schema, step_size=300),
    )
    b = dio.sum_over_chunks(
        lambda t, ev: hist(
            ev["Muon.pt"][:, 0], EDGES, 4.0, weights=ev.weights * ev["Muon"].mask[:, 0]
        ),
        THETA,
        dio.iterate_events(rntuple_file, schema, step_size=300),
    )
    np.testing.assert_allclose(a, b, rtol=1e-12)
