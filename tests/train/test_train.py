"""Training loop, annealing, run tracking and the trainable pipelines."""

from __future__ import annotations

import itertools
import json
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffana.problems import CutVariable, Sample
from diffana.testing import assert_grad_matches_fd
from diffana.train import (
    Annealing,
    RunTracker,
    as_annealing,
    atomic_write_json,
    atomic_write_text,
    make_optimizer,
    read_metrics,
    run_training,
)
from diffana.train._pipelines import (
    Classifier,
    CutSelection,
    KDEBins,
    Network,
    SoftmaxBins,
    standardisation,
)


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    return Sample(jnp.asarray(x), jnp.full(400, 0.25))


def net(key=0, outputs=1, dtype=jnp.float64):
    return Network(2, outputs, (8, 8), key=jax.random.key(key), dtype=dtype)


def test_annealing_endpoints_and_kinds():
    for kind in ("geometric", "linear", "cosine"):
        a = Annealing(1.0, 0.01, kind)
        assert a(0, 50) == pytest.approx(1.0) and a(49, 50) == pytest.approx(0.01)
        vals = [a(i, 50) for i in range(50)]
        assert all(v2 <= v1 for v1, v2 in itertools.pairwise(vals))
    assert Annealing(0.1, 10.0)(5, 11) == pytest.approx(1.0)
    assert as_annealing(0.3) == Annealing(0.3, 0.3)
    assert as_annealing({"start": 1, "end": 2, "kind": "linear"}) == Annealing(1, 2, "linear")
    with pytest.raises(ValueError, match="positive"):
        Annealing(0.0, 1.0)
    with pytest.raises(ValueError, match="kind"):
        Annealing(1.0, 1.0, "exponential")
    with pytest.raises(ValueError, match="'start' and 'end'"):
        as_annealing({"start": 1})


def test_optimizer_and_schedule():
    _opt, sched = make_optimizer("adam", 0.1, 100, "cosine")
    assert sched(0) == pytest.approx(0.1) and sched(100) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer("lbfgs", 0.1, 10)
    with pytest.raises(ValueError, match="schedule"):
        make_optimizer("adam", 0.1, 10, "step")


def test_fit_minimises_and_tracks(tmp_path, sample):
    target = jnp.asarray([0.5, -0.2])

    def loss(params, batch, relax):
        mean = jnp.sum(batch["a"].w[:, None] * batch["a"].x, axis=0) / jnp.sum(batch["a"].w)
        value = jnp.sum((params - target) ** 2) + 0.0 * jnp.sum(mean)
        return value, relax

    with RunTracker(tmp_path / "run", {"method": "toy", "seed": 1}, tensorboard=False) as tr:
        res = run_training(
            loss, jnp.zeros(2), {"a": sample}, steps=200, batch_size=16,
            key=jax.random.key(0), learning_rate=0.05, relax={"start": 1.0, "end": 0.1},
            tracker=tr,
        )  # fmt: skip
    np.testing.assert_allclose(res.pipeline, target, atol=1e-3)
    assert res.history["loss"][-1] < 1e-5 < res.history["loss"][0]
    assert res.skipped_steps == 0 and res.train_time > 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config == {"method": "toy", "seed": 1}
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(records) == 200
    assert set(records[0]) == {"step", "loss", "fom", "learning_rate", "relax"}
    assert records[0]["relax"] == pytest.approx(1.0) and records[-1]["relax"] == pytest.approx(0.1)
    assert records[-1]["fom"] == pytest.approx(0.1)
    assert not [p for p in os.listdir(tmp_path / "run") if p.endswith(".tmp")]


def test_fit_skips_non_finite_updates(sample):
    def loss(params, batch, relax):
        value = jnp.sum(params**2)
        bad = jnp.where(batch["a"].x[0, 0] > 0, jnp.nan, 0.0)
        return value + bad, value

    res = run_training(loss, jnp.ones(2), {"a": sample}, steps=40, batch_size=1,
                       key=jax.random.key(1), learning_rate=0.05)  # fmt: skip
    assert 0 < res.skipped_steps < 40
    assert np.all(np.isfinite(np.asarray(res.pipeline)))


def test_fit_rejects_bad_arguments(sample):
    with pytest.raises(ValueError, match="batch_size"):
        run_training(lambda p, b, r: (p, p), jnp.zeros(()), {"a": sample}, steps=1, batch_size=0,
            key=jax.random.key(0))  # fmt: skip


def test_atomic_writes_replace_whole_files(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": float("nan"), "y": np.float64(2.0), "z": np.arange(2)})
    assert json.loads(path.read_text()) == {"x": None, "y": 2.0, "z": [0, 1]}
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["a.json"]


def test_tensorboard_required_but_missing(tmp_path):
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="tensorboardX"):
            RunTracker(tmp_path, {}, tensorboard=True)
        RunTracker(tmp_path, {}, tensorboard=None).close()  # silently skipped
    else:  # pragma: no cover - depends on the environment
        with RunTracker(tmp_path, {}, tensorboard=True) as tr:
            tr.log(0, loss=1.0)
        assert (tmp_path / "tensorboard").is_dir()


def test_standardisation_and_network_dtype(sample):
    shift, scale = standardisation(np.asarray(sample.x) * 3 + 1)
    assert len(shift) == 2 and all(s > 0 for s in scale)
    n32 = Network(2, 3, (4, 4), key=jax.random.key(0), shift=shift, scale=scale)
    out = n32(sample.x)
    assert out.shape == (400, 3) and out.dtype == jnp.float64
    with pytest.raises(ValueError, match="hidden"):
        Network(2, 1, (4, 5), key=jax.random.key(0))


def _hard_vs_soft(pipe, sample, small):
    soft = np.asarray(pipe.histogram(sample, small))
    hard = np.asarray(pipe.hard_histogram(sample))
    total = float(jnp.sum(sample.w))
    assert hard.sum() == pytest.approx(total) or hard.shape == (1,)
    return soft, hard


def test_softmax_bins_hard_limit_and_counts(sample):
    pipe = SoftmaxBins(net(outputs=4))
    soft, hard = _hard_vs_soft(pipe, sample, 1e-5)
    np.testing.assert_allclose(soft, hard, atol=0.25 * 2)
    counts = np.asarray(pipe.hard_histogram(Sample(sample.x, jnp.ones(400))))
    np.testing.assert_array_equal(counts, np.rint(counts))
    assert counts.sum() == 400


def test_kde_bins_hard_limit_and_edges(sample):
    pipe = KDEBins(net(), 4, trainable_edges=True)
    np.testing.assert_allclose(pipe.edges(), np.linspace(0, 1, 5))
    soft, hard = _hard_vs_soft(pipe, sample, 1e-6)
    np.testing.assert_allclose(soft, hard, atol=1e-6)
    assert KDEBins(net(), 4, trainable_edges=False).edge_params is None


def test_classifier_hard_limit(sample):
    clf = Classifier(net(), 5)
    soft, hard = _hard_vs_soft(clf, sample, 1e-6)
    np.testing.assert_allclose(soft, hard, atol=1e-6)


def test_cut_selection_hard_limit_and_units(sample):
    cuts = (CutVariable("a_min", 0, ">"), CutVariable("b_max", 1, "<"))
    sel = CutSelection(jnp.asarray([0.5, 0.0]), cuts, (1.0, 0.0), (2.0, 1.0))
    np.testing.assert_allclose(sel.physical_thresholds(), [2.0, 0.0])
    x = np.asarray(sample.x)
    expected = 0.25 * np.sum((x[:, 0] > 2.0) & (x[:, 1] < 0.0))
    assert float(sel.hard_histogram(sample)[0]) == pytest.approx(expected)
    assert float(sel.histogram(sample, 1e-6)[0]) == pytest.approx(expected, abs=1e-6)


def test_pipeline_gradients_match_finite_differences(sample):
    # Thresholds of soft cuts.
    cuts = (CutVariable("a_min", 0, ">"), CutVariable("b_max", 1, "<"))

    def selected(t):
        sel = CutSelection(t, cuts, (0.0, 0.0), (1.0, 1.0))
        return sel.histogram(sample, 0.3)[0]

    assert_grad_matches_fd(selected, jnp.asarray([0.2, 0.1]))

    # Trainable bin edges of a KDE histogram, through a fixed float64 network.
    pipe = KDEBins(net(), 3)

    def binned(edge_params):
        p = eqx.tree_at(lambda m: m.edge_params, pipe, edge_params)
        h = p.histogram(sample, 0.1)
        return jnp.sum(h * jnp.asarray([1.0, 2.0, 5.0]))

    assert_grad_matches_fd(binned, jnp.asarray([0.1, -0.2, 0.3]))

    # Softmax bins, through the last layer's bias.
    sm = SoftmaxBins(net(outputs=3))

    def soft_counts(bias):
        p = eqx.tree_at(lambda m: m.net.mlp.layers[-1].bias, sm, bias)
        return jnp.sum(p.histogram(sample, 0.5) ** 2)

    assert_grad_matches_fd(soft_counts, jnp.asarray([0.1, 0.0, -0.1]))


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    from diffana.io import atomic_path
    from diffana.train import atomic_write_text

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"y")
    finally:
        os.umask(mask)
    for name in ("a.txt", "b.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]
