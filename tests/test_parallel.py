"""Sharding the event axis over devices, and streaming events from ROOT files.

Both must reproduce the single-device, all-in-memory loss and gradients of a neos-style
step (network -> KDE histograms -> HistFactory model -> expected CLs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import diffana.io as dio
from diffana import hf, losses, parallel, relax

EDGES = jnp.linspace(0.0, 1.0, 5)
BANDWIDTH = 0.09
YIELDS = jnp.array([20.0, 100.0, 100.0, 100.0])  # signal, background, up, down

# A neos-style step on 4 CPU devices, run in a fresh interpreter (XLA fixes the device
# count at start-up). It prints the largest relative deviations from the single-device
# numbers as JSON; the test asserts on them.
SHARDED_SCRIPT = textwrap.dedent(
    """
    import json
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np, optax
    from diffana import hf, losses, parallel, relax
    from diffana.testing import assert_grad_matches_fd

    jax.config.update("jax_numpy_rank_promotion", "raise")
    out = {"devices": len(jax.devices())}
    mesh = parallel.event_mesh()
    edges, yields = jnp.linspace(0.0, 1.0, 5), jnp.array([20.0, 100.0, 100.0, 100.0])
    n = 203  # per sample: not a multiple of 4, so the sharded events are padded
    rng = np.random.default_rng(1)
    means = np.array([[-1.0, 1.0], [1.0, -1.0], [2.5, 2.0], [-2.5, -1.5]])
    x = rng.standard_normal((4, n, 2)) + means[:, None, :]
    w = np.broadcast_to((yields / n)[:, None], (4, n)).copy()
    net = eqx.nn.MLP(2, 1, 8, 2, activation=jax.nn.relu, key=jax.random.key(0),
                     dtype=jnp.float64)
    params, static = eqx.partition(net, eqx.is_array)
    opt = optax.adam(1e-2)

    def hists(params, ev):
        s = jax.nn.sigmoid(jax.vmap(jax.vmap(eqx.combine(params, static)))(ev["x"])[..., 0])
        return jax.vmap(lambda s, w: relax.hist(s, edges, 0.09, weights=w))(s, ev["w"])

    def cls(h):
        h = h + 1e-3
        spec = {"channels": [{"name": "c", "samples": [
            {"name": "signal", "data": h[0],
             "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
            {"name": "background", "data": h[1], "modifiers": [
                {"name": "shape", "type": "histosys",
                 "data": {"hi_data": h[2], "lo_data": h[3]}}]}]}]}
        return losses.cls_loss(hf.Model.from_pyhf(spec))

    summed = parallel.sum_over_devices(hists, mesh, axis=1)

    def make_step(histograms):
        def step(params, ev):
            value, grad = jax.value_and_grad(lambda p: cls(histograms(p, ev)))(params)
            updates, _ = opt.update(grad, opt.init(params), params)
            return value, grad, optax.apply_updates(params, updates)
        return jax.jit(step)

    def rel(a, b):
        a, b = jax.tree.leaves(a), jax.tree.leaves(b)
        return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))
                         / max(np.max(np.abs(np.asarray(v))), 1e-300)) for u, v in zip(a, b))

    single_ev = {"x": jnp.asarray(x), "w": jnp.asarray(w)}
    ref = make_step(hists)(params, single_ev)  # one device
    sharded_ev = parallel.shard_events({"x": x, "w": w}, mesh, axis=1, pad=True)
    out["padded_events"] = int(sharded_ev["w"].shape[1])
    out["shards"] = len(sharded_ev["x"].sharding.device_set)
    out["loss_value"] = float(ref[0])
    # Automatic partitioning: XLA sums the histograms over devices with an all-reduce.
    hist_vjp = jax.jit(lambda p, ev: jax.vjp(lambda p: hists(p, ev), p)[1](jnp.ones((4, 4))))
    hist_ref = (hists(params, single_ev), hist_vjp(params, single_ev))
    compiled = hist_vjp.lower(params, sharded_ev).compile()
    hlo = compiled.as_text()
    out["auto_all_reduce"] = hlo.count("all-reduce(")
    out["auto_all_gather"] = hlo.count("all-gather(")
    out["auto"] = {"hist": rel(jax.jit(hists)(params, sharded_ev), hist_ref[0]),
                   "vjp": rel(compiled(params, sharded_ev), hist_ref[1])}
    # Explicit per-device sums: the full step (loss, gradients, optimiser update).
    value, grad, new = make_step(summed)(params, sharded_ev)
    out["explicit"] = {"loss": rel(value, ref[0]), "grad": rel(grad, ref[1]),
                       "step": rel(new, ref[2])}

    # Large samples: relax.hist accumulates chunks in a scan; the per-device sums stay
    # exact and no device gathers the events of the others.
    big = jnp.asarray(rng.random(600_000))
    def big_hist(a, x):
        return relax.hist(jax.nn.sigmoid(a * (x - 0.5)), edges, 0.09)
    big_sum = parallel.sum_over_devices(big_hist, mesh)
    big_sharded = parallel.shard_events(big, mesh)
    vg = lambda fn: jax.jit(jax.value_and_grad(lambda a, x: jnp.sum(fn(a, x) ** 2)))
    ref_big = vg(big_hist)(1.3, big)
    big_compiled = vg(big_sum).lower(1.3, big_sharded).compile()
    out["big_explicit_all_gather"] = big_compiled.as_text().count("all-gather(")
    out["big"] = rel(big_compiled(1.3, big_sharded), ref_big)
    # ... and the gradient through sum_over_devices matches finite differences
    assert_grad_matches_fd(lambda a: jnp.sum(big_sum(a[0], big_sharded) ** 2),
                           jnp.array([1.3]), rtol=1e-6)
    out["fd_checked"] = True

    # diffana.train.run_training with a mesh: every batch split over the devices, same training.
    from diffana.problems import Sample
    from diffana.train import _loop, run_training
    data = {f"s{i}": Sample(jnp.asarray(x[i]), jnp.asarray(w[i])) for i in range(4)}
    def fit_loss(net, batch, r):
        h = jnp.stack([relax.hist(jax.nn.sigmoid(jax.vmap(net)(batch[f"s{i}"].x)[:, 0]),
                                  edges, 0.09, weights=batch[f"s{i}"].w) for i in range(4)])
        value = cls(h)
        return value, value
    runs = [run_training(fit_loss, net, data, steps=3, batch_size=64, key=jax.random.key(2),
                learning_rate=1e-2, mesh=m) for m in (None, mesh)]
    arrays = lambda r: eqx.filter(r.pipeline, eqx.is_array)
    out["fit"] = {"loss": rel(runs[1].history["loss"], runs[0].history["loss"]),
                  "params": rel(arrays(runs[1]), arrays(runs[0]))}
    p, s = eqx.partition(net, eqx.is_inexact_array)
    opt_fit, _ = _loop.make_optimizer("adam", 1e-2, 3)
    step = jax.jit(lambda p, st, d, k: _loop._train_step(
        p, st, d, k, 1.0, s, fit_loss, opt_fit, 64, parallel.event_sharding(mesh)))
    lowered = step.lower(*parallel.replicate((p, opt_fit.init(p), data), mesh), jax.random.key(0))
    out["fit_all_reduce"] = lowered.compile().as_text().count("all-reduce(")
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module", autouse=True)
def _sharded_process(request):
    """Start the 4-device run in the background as soon as this module's tests begin, so
    that it overlaps with the in-process tests (it compiles for ~30 s of CPU time)."""
    wanted = any(
        item.module is request.module and "sharded_result" in item.fixturenames
        for item in request.session.items
    )
    if not wanted:
        yield None
        return
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env.pop("DIFFANA_DISABLE_X64", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", SHARDED_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def sharded_result(_sharded_process):
    stdout, stderr = _sharded_process.communicate(timeout=900)
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT")]
    assert _sharded_process.returncode == 0 and lines, f"sharded run failed:\n{stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT") :])


# ---------------------------------------------------------------------------------------
# in-process checks (one device)
# ---------------------------------------------------------------------------------------
def test_mesh_and_sharding_errors():
    mesh = parallel.event_mesh()
    assert mesh.axis_names == (parallel.EVENT_AXIS,)
    assert mesh.size == len(jax.devices())
    with pytest.raises(ValueError, match="devices requested"):
        parallel.event_mesh(len(jax.devices()) + 1)
    with pytest.raises(ValueError, match=">= 1"):
        parallel.event_mesh(0)
    with pytest.raises(ValueError, match="no event axis 1"):
        parallel.shard_events({"x": jnp.zeros((3, 2)), "w": jnp.zeros(3)}, mesh, axis=1)
    with pytest.raises(ValueError, match=r"\['x'\] has 3 events along axis 0, the others 4"):
        parallel.shard_events({"x": jnp.zeros(3), "w": jnp.zeros(4)}, mesh)
    with pytest.raises(ValueError, match="holds no arrays"):
        parallel.shard_events({"name": "signal"}, mesh)
    with pytest.raises(ValueError, match="multiple"):
        parallel.pad_to_multiple(jnp.zeros(3), 0)
    with pytest.raises(ValueError, match="n must be an int"):
        parallel.use_cpu_devices(0)
    with pytest.raises(RuntimeError, match="already started"):
        parallel.use_cpu_devices(len(jax.devices("cpu")) + 1)


def test_pad_to_multiple_appends_zero_weight_events():
    tree = {"x": np.ones((5, 2)), "w": jnp.ones(5), "tag": "bkg"}
    padded = parallel.pad_to_multiple(tree, 4)
    assert padded["x"].shape == (8, 2) and isinstance(padded["x"], np.ndarray)
    assert padded["w"].tolist() == [1.0] * 5 + [0.0] * 3
    assert padded["tag"] == "bkg"
    assert parallel.pad_to_multiple(tree, 5) is tree
    counts = relax.hist(padded["x"][:, 0] * 0.5, EDGES, BANDWIDTH, weights=padded["w"])
    np.testing.assert_allclose(
        counts, relax.hist(tree["x"][:, 0] * 0.5, EDGES, BANDWIDTH, weights=tree["w"]), rtol=1e-14
    )


# ---------------------------------------------------------------------------------------
# out of memory: chunks streamed from a ROOT file
# ---------------------------------------------------------------------------------------
SCHEMA = dio.Schema(columns=["x0", "x1", "sample"], weight="weight")
N_PER_SAMPLE = 150


@pytest.fixture(scope="module")
def blobs_file(tmp_path_factory):
    """Four 2-D Gaussian samples, shuffled into one tree, each weighted to its yield."""
    uproot = pytest.importorskip("uproot")
    rng = np.random.default_rng(7)
    means = np.array([[-1.0, 1.0], [1.0, -1.0], [2.5, 2.0], [-2.5, -1.5]])
    x = (rng.standard_normal((4, N_PER_SAMPLE, 2)) + means[:, None, :]).reshape(-1, 2)
    sample = np.repeat(np.arange(4), N_PER_SAMPLE)
    weight = np.asarray(YIELDS)[sample] / N_PER_SAMPLE
    order = rng.permutation(sample.size)
    path = tmp_path_factory.mktemp("blobs") / "blobs.root"
    with uproot.recreate(path) as f:
        f["events"] = {
            "x0": x[order, 0],
            "x1": x[order, 1],
            "sample": sample[order].astype(np.float64),
            "weight": weight[order],
        }
    return path


def _features(events):
    return jnp.stack([events["x0"], events["x1"]], axis=1)


def _summary(net, events):
    """Soft histograms of the four samples, `(4, bins)`: additive over events."""
    s = jax.nn.sigmoid(jax.vmap(net)(_features(events))[:, 0])
    rows = [
        relax.hist(s, EDGES, BANDWIDTH, weights=events.weights * (events["sample"] == k))
        for k in range(4)
    ]
    return jnp.stack(rows)


def _hard_summary(net, events):
    s = jax.nn.sigmoid(jax.vmap(net)(_features(events))[:, 0])
    rows = [
        relax.hard_hist(s, EDGES, weights=events.weights * (events["sample"] == k))
        for k in range(4)
    ]
    return jnp.stack(rows)


@jax.jit
def _cls(h):
    h = h + 1e-3
    model = hf.correlated_background(h[0], h[1], h[2], h[3])
    return losses.cls_loss(model)


@pytest.fixture(scope="module")
def net():
    return eqx.nn.MLP(2, 1, 8, 2, activation=jax.nn.relu, key=jax.random.key(3), dtype=jnp.float64)


def _in_memory_loss(net, events):
    return _cls(_summary(net, events))


def _arrays(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def test_streamed_loss_and_gradient_equal_in_memory(blobs_file, net):
    whole = dio.read_events(blobs_file, SCHEMA)
    # all events at once (eager autodiff through the jitted pieces)
    ref_loss, ref_grad = eqx.filter_value_and_grad(_in_memory_loss)(net, whole)
    stream = dio.iterate_events(blobs_file, SCHEMA, step_size=128)  # 5 chunks, last padded
    assert len(list(stream)) == 5
    loss, grad = dio.loss_and_grad_over_chunks(_summary, _cls, net, stream)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    for g, r in zip(_arrays(grad), _arrays(ref_grad), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-14)
    # evaluation: the hard twin's counts over chunks are the in-memory counts
    hard = dio.sum_over_chunks(_hard_summary, net, stream)
    np.testing.assert_allclose(hard, _hard_summary(net, whole), rtol=1e-12)
    np.testing.assert_allclose(jnp.sum(hard, axis=1), YIELDS, rtol=1e-12)


def test_streamed_training_equals_in_memory(blobs_file, net):
    whole = dio.read_events(blobs_file, SCHEMA)
    stream = dio.iterate_events(blobs_file, SCHEMA, step_size=256)
    opt = optax.adam(3e-2)
    vg = eqx.filter_value_and_grad(_in_memory_loss)

    def train(grad_fn, steps=3):
        params, state, values = net, opt.init(eqx.filter(net, eqx.is_array)), []
        for _ in range(steps):
            value, grad = grad_fn(params)
            updates, state = opt.update(grad, state, params)
            params = eqx.apply_updates(params, updates)
            values.append(float(value))
        return params, values

    ref_params, ref_values = train(lambda p: vg(p, whole))
    params, values = train(lambda p: dio.loss_and_grad_over_chunks(_summary, _cls, p, stream))
    np.testing.assert_allclose(values, ref_values, rtol=1e-11)
    assert values[-1] < values[0]  # the loss goes down
    for p, r in zip(_arrays(params), _arrays(ref_params), strict=True):
        np.testing.assert_allclose(p, r, rtol=1e-9, atol=1e-12)


def test_streamed_gradient_matches_finite_differences(blobs_file, net):
    stream = dio.iterate_events(blobs_file, SCHEMA, step_size=256)
    last = lambda m: m.layers[-1].bias  # noqa: E731

    def loss_of(bias):
        return dio.loss_and_grad_over_chunks(_summary, _cls, eqx.tree_at(last, net, bias), stream)

    bias = net.layers[-1].bias
    _, grad = loss_of(bias)
    eps = 1e-5
    fd = (float(loss_of(bias + eps)[0]) - float(loss_of(bias - eps)[0])) / (2 * eps)
    np.testing.assert_allclose(float(grad.layers[-1].bias[0]), fd, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# 4 devices (the background run started at the top of the module)
# ---------------------------------------------------------------------------------------
def test_events_are_split_over_four_devices(sharded_result):
    assert sharded_result["devices"] == 4
    assert sharded_result["shards"] == 4
    assert sharded_result["padded_events"] == 204  # 203 padded with one zero-weight event
    assert 0.0 < sharded_result["loss_value"] < 1.0


def test_sharded_step_equals_single_device(sharded_result):
    res = sharded_result["explicit"]
    assert res["loss"] < 1e-12
    assert res["grad"] < 1e-9
    assert res["step"] < 1e-12


def test_automatic_partitioning_reduces_histograms_with_all_reduce(sharded_result):
    assert sharded_result["auto_all_reduce"] >= 1
    assert sharded_result["auto_all_gather"] == 0  # no device collects all events
    assert sharded_result["auto"]["hist"] < 1e-12
    assert sharded_result["auto"]["vjp"] < 1e-10


def test_training_with_a_mesh_equals_one_device(sharded_result):
    # Three adam steps of a neos-style loss with every batch split over 4 devices.
    assert sharded_result["fit"]["loss"] < 1e-9
    assert sharded_result["fit"]["params"] < 1e-9
    assert sharded_result["fit_all_reduce"] >= 1  # histograms summed across devices


def test_sum_over_devices_gradient_and_large_samples(sharded_result):
    assert sharded_result["fd_checked"]
    assert sharded_result["big"] < 1e-10
    assert sharded_result["big_explicit_all_gather"] == 0
