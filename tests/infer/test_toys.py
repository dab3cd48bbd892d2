"""Pseudo-experiments: sampling, the toy-based calculator against pyhf's, intervals,
coverage and the FAIR Universe score.

pyhf's toys (minutes) are stored by `tests/infer/make_pyhf_toy_reference.py` in
`tests/data/pyhf_toy_reference.json`; diffana's toys are compared with them within
Monte-Carlo error. Every toy computation here shares one chunk size and one model
structure (three bins, a shapesys per bin), so that the suite compiles the toy fits once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
import pytest

from diffana import hf, infer

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = json.loads((ROOT / "tests" / "data" / "pyhf_toy_reference.json").read_text())
CHUNK = 1000
NTOYS = 4000


def _binomial_sigma(p: float, n: int) -> float:
    return math.sqrt(max(p * (1.0 - p), 1.0 / n) / n)


@pytest.fixture(scope="module")
def low_count():
    """The model and data of the stored pyhf reference (a few tens of events per bin)."""
    m = REFERENCE["model"]
    model = hf.uncorrelated_background(m["signal"], m["background"], m["uncertainty"])
    data = jnp.asarray(REFERENCE["observed"] + model.auxdata.tolist())
    return model, data


@pytest.fixture(scope="module")
def high_count():
    """Same structure, thousands of events per bin (asymptotic formulae hold), data
    with a signal-like excess (`mu_hat` about 1, two standard deviations from 0)."""
    model = hf.uncorrelated_background(
        [60.0, 90.0, 75.0], [1000.0, 1500.0, 1200.0], [10.0, 15.0, 12.0]
    )
    data = jnp.asarray([1055.0, 1595.0, 1270.0, *model.auxdata.tolist()])
    return model, data


@pytest.fixture(scope="module")
def low_count_toys(low_count):
    """diffana's toy hypothesis tests of the reference cases (one compilation)."""
    model, data = low_count
    out = {}
    for i, (name, case) in enumerate(REFERENCE["cases"].items()):
        out[name] = infer.hypotest(
            case["poi_value"],
            data,
            model,
            test_stat=name,
            calctype="toybased",
            ntoys=NTOYS,
            key=jax.random.key(100 + i),
            chunk_size=CHUNK,
            return_tail_probs=True,
            return_expected_set=True,
        )
    return out


# --------------------------------------------------------------------------------------
# sampling


def _lumi_workspace() -> dict:
    lumi = {"name": "lumi", "type": "lumi", "data": None}
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [8.0, 12.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}, lumi],
                    },
                    {
                        "name": "background",
                        "data": [40.0, 25.0],
                        "modifiers": [
                            lumi,
                            {"name": "stat", "type": "staterror", "data": [3.0, 2.5]},
                            {"name": "norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.92}},
                            {"name": "shape", "type": "shapesys", "data": [4.0, 5.0]},
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [45.0, 40.0]}],
        "measurements": [
            {
                "name": "meas",
                "config": {
                    "poi": "mu",
                    "parameters": [
                        {
                            "name": "lumi",
                            "auxdata": [1.0],
                            "sigmas": [0.03],
                            "bounds": [[0.8, 1.2]],
                            "inits": [1.0],
                        }
                    ],
                },
            }
        ],
        "version": "1.0.0",
    }


def test_samples_follow_pyhfs_probability_model():
    """Main bins and every kind of auxdata (lumi, staterror, normsys: Gaussian; shapesys:
    Poisson counts) have pyhf's means and spreads at a point away from the nominal."""
    ws = _lumi_workspace()
    model = hf.Model.from_pyhf(ws)
    pyhf.set_backend("numpy")
    pmodel = pyhf.Workspace(ws).model()
    assert tuple(pmodel.config.par_order) == model.par_order
    pars = np.asarray(model.init).copy()
    for name, value in {
        "mu": 1.4,
        "lumi": 1.02,
        "norm": 0.6,
        "stat[1]": 1.05,
        "shape[0]": 0.9,
    }.items():
        base, _, index = name.partition("[")
        pars[model.par_slices[base]][int(index[:-1]) if index else 0] = value
    n = 20000
    ours = np.asarray(infer.sample_data(model, pars, n, key=jax.random.key(7)))
    np.random.seed(7)  # noqa: NPY002 (pyhf samples with numpy's global generator)
    theirs = np.asarray(pmodel.make_pdf(pyhf.tensorlib.astensor(pars)).sample((n,)))
    assert ours.shape == theirs.shape == (n, model.nbins + model.nauxdata)
    expected = np.asarray(model.expected_data(pars))
    np.testing.assert_allclose(expected, np.asarray(pmodel.expected_data(pars)), rtol=1e-12)
    spread = theirs.std(axis=0)
    np.testing.assert_allclose(ours.mean(axis=0), expected, atol=5 * spread.max() / math.sqrt(n))
    np.testing.assert_allclose(ours.std(axis=0), spread, rtol=0.04)
    # counts are integers where pyhf's are (main bins, shapesys auxdata)
    integral = np.all(theirs == np.round(theirs), axis=0)
    assert np.all(ours[:, integral] == np.round(ours[:, integral]))


def test_sampling_is_deterministic_and_independent_of_the_batch():
    model = hf.uncorrelated_background([5.0, 10.0], [50.0, 60.0], [5.0, 12.0])
    a = infer.sample_data(model, model.init, 20, key=jax.random.key(3))
    b = infer.sample_data(model, model.init, 10, key=jax.random.key(3))
    c = infer.sample_data(model, model.init, 10, key=jax.random.key(4))
    np.testing.assert_array_equal(np.asarray(a[:10]), np.asarray(b))
    assert not np.array_equal(np.asarray(b), np.asarray(c))
    legacy = infer.sample_data(model, model.init, 10, key=jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(legacy), np.asarray(b))


# --------------------------------------------------------------------------------------
# the toy calculator


@pytest.mark.parametrize("test_stat", ["qtilde", "q", "q0"])
def test_toy_tail_probabilities_agree_with_pyhf(low_count_toys, test_stat):
    ref = REFERENCE["cases"][test_stat]
    cls, tails, band = low_count_toys[test_stat]
    n_ref = REFERENCE["ntoys"]
    if test_stat == "q0":  # p0 (CLs+b of the mu = 0 toys), then [CLb]
        assert tails.shape == (1,) and len(ref["tail_probs"]) == 1
        pairs = [(float(cls), ref["cls"]), (float(tails[0]), ref["tail_probs"][0])]
    else:  # CLs, then [CLs+b, CLb]
        np.testing.assert_allclose(cls, tails[0] / tails[1], rtol=1e-12)
        pairs = list(zip(np.asarray(tails).tolist(), ref["tail_probs"], strict=True))
    for ours, theirs in pairs:
        sigma = math.hypot(_binomial_sigma(theirs, n_ref), _binomial_sigma(theirs, NTOYS))
        assert abs(ours - theirs) < 4 * sigma, (test_stat, ours, theirs, sigma)
    # the median expected value and the band's order (pyhf's: +2 sigma first)
    assert np.all(np.diff(np.asarray(band)) >= 0)
    assert abs(float(band[2]) - ref["expected_set"][2]) < 0.03


def test_q0_returns_the_background_only_p_value(low_count):
    model, data = low_count
    p0, tails = infer.hypotest(
        0.0,
        data,
        model,
        test_stat="q0",
        calctype="toybased",
        ntoys=CHUNK,
        key=jax.random.key(5),
        chunk_size=CHUNK,
        return_tail_probs=True,
    )
    dists = infer.toy_distributions(
        0.0, data, model, CHUNK, key=jax.random.key(5), test_stat="q0", chunk_size=CHUNK
    )
    expected = np.mean(np.asarray(dists.signal_plus_background) >= float(dists.observed))
    assert float(p0) == pytest.approx(expected, abs=1e-15)
    assert float(tails[0]) == pytest.approx(
        np.mean(np.asarray(dists.background_only) >= float(dists.observed)), abs=1e-15
    )


def test_toy_cls_matches_asymptotics_at_high_counts(high_count):
    model, data = high_count
    cls_toys, tails = infer.hypotest(
        1.2,
        data,
        model,
        calctype="toybased",
        ntoys=NTOYS,
        key=jax.random.key(11),
        chunk_size=CHUNK,
        return_tail_probs=True,
    )
    cls_asym, tails_asym = infer.hypotest(1.2, data, model, return_tail_probs=True)
    clsb, clb = (float(x) for x in tails)
    assert 0.02 < float(cls_asym) < 0.5  # a CLs worth testing
    for ours, asym in zip((clsb, clb), np.asarray(tails_asym), strict=True):
        assert abs(ours - asym) < 4 * _binomial_sigma(asym, NTOYS), (ours, asym)
    # CLs = CLs+b / CLb: relative errors add (correlated toys aside, a bound)
    rel = _binomial_sigma(clsb, NTOYS) / clsb + _binomial_sigma(clb, NTOYS) / clb
    assert abs(float(cls_toys) - float(cls_asym)) < 3 * rel * float(cls_asym)


def test_toys_are_deterministic_for_a_key(low_count):
    model, data = low_count
    kwargs = {"ntoys": CHUNK + 10, "chunk_size": CHUNK}
    a = infer.toy_distributions(1.0, data, model, key=jax.random.key(1), **kwargs)
    b = infer.toy_distributions(1.0, data, model, key=jax.random.key(1), **kwargs)
    c = infer.toy_distributions(1.0, data, model, key=jax.random.key(2), **kwargs)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a.signal_plus_background.shape == (CHUNK + 10,)
    assert not np.array_equal(np.asarray(a.background_only), np.asarray(c.background_only))
    assert bool(np.all(a.converged_sb)) and bool(np.all(a.converged_b))
    assert float(a.observed) >= 0.0


def test_toy_statistics_equal_those_of_separate_fits(low_count):
    """The toy fits (the free fit started where the conditional one ended, no polishing
    step) give the test statistics of ordinary fits of the same pseudo-datasets, each
    started at the model's initial values: to 1e-8 with the ordinary fits' accuracy,
    to 1e-5 with the toys' default (`toy_tol` 1e-6), which ends some fits earlier."""
    model, data = low_count
    key = jax.random.key(1)
    kwargs = {"ntoys": CHUNK + 10, "chunk_size": CHUNK}
    dists = infer.toy_distributions(1.0, data, model, key=key, toy_tol=1e-10, **kwargs)
    default = infer.toy_distributions(1.0, data, model, key=key, **kwargs)
    gen = infer.fixed_poi_fit(1.0, data, model).pars
    toys = infer.sample_data(model, gen, 12, key=jax.random.split(key)[0])
    expected = []
    for toy in toys:
        cond = infer.fixed_poi_fit(1.0, toy, model)
        free = infer.fit(toy, model)
        q = 2.0 * float(cond.nll - free.nll)
        expected.append(0.0 if float(free.pars[model.poi_index]) > 1.0 else max(q, 0.0))
    got = np.asarray(dists.signal_plus_background[:12])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8)
    assert np.count_nonzero(got) >= 6  # most of these toys test something
    loose = np.asarray(default.signal_plus_background[:12])
    np.testing.assert_allclose(loose, expected, rtol=0, atol=1e-5)
    assert not np.array_equal(loose, got)  # the default stops some fits earlier
    assert float(default.observed) == float(dists.observed)  # observed fits keep `tol`


@pytest.mark.parametrize("test_stat", ["qtilde", "q0"])
def test_free_fits_on_the_zero_side_of_the_statistic_stop_at_once(low_count, test_stat):
    """Where the POI's slope at the conditional minimum points to where the statistic is
    zero by definition (`mu_hat` above the tested value for `q~_mu`, below zero for
    `q0`), the free fit returns the conditional minimum without iterating; every
    statistic equals that of a conditional and a free fit run in full."""
    from diffana.infer import _toys
    from diffana.infer._mle import DEFAULT_MAXITER, DEFAULT_TOL, floating

    model, data = low_count
    mu, is_q0 = (0.0, True) if test_stat == "q0" else (1.0, False)
    poi = model.poi_index
    fixed = np.array(model.fixed)
    fixed[poi] = True
    gen = infer.fit(data, model, init=model.init.at[poi].set(mu), fixed=fixed.tolist()).pars
    toys = infer.sample_data(model, gen, 24, key=jax.random.key(5))
    free = floating(model, jnp.asarray(model.fixed))
    bounds = jnp.asarray(model.bounds)
    starts = jnp.broadcast_to(gen, (24, gen.shape[0]))

    @jax.jit
    def both(toys, starts):
        def one(d, x0):
            cond_nll, free_nll, mu_hat, conv, n_iter = _toys._fit_pair(
                model, d, x0, free, bounds, poi, DEFAULT_TOL, DEFAULT_MAXITER, is_q0
            )
            stat = _toys.statistic_from_fits(cond_nll, free_nll, mu_hat, mu, is_q0)
            # the same fits in full: the free fit from the conditional minimum
            cond = _toys.toy_fit(model, d, x0, bounds, free.at[poi].set(False),
                                 DEFAULT_TOL, DEFAULT_MAXITER)  # fmt: skip
            full = _toys.toy_fit(model, d, cond.x, bounds, free, DEFAULT_TOL, DEFAULT_MAXITER)
            stat_full = _toys.statistic_from_fits(cond.value, full.value, full.x[poi], mu, is_q0)
            return stat, stat_full, n_iter, cond.n_iter + full.n_iter, conv

        return jax.vmap(one)(toys, starts)

    stat, stat_full, n_iter, n_iter_full, conv = both(toys, starts)
    assert bool(jnp.all(conv))
    np.testing.assert_allclose(stat, stat_full, rtol=0, atol=1e-8)
    stopped = np.asarray(n_iter < n_iter_full)
    assert 4 <= stopped.sum() <= 20  # some free fits stop at once, not all
    assert np.all(np.asarray(stat)[stopped] == 0.0)
    assert np.count_nonzero(np.asarray(stat)) >= 4


def test_toy_fits_start_at_the_linearised_conditional_minimum(high_count):
    """The toys' conditional fits start at a fraction of the linearised (Fisher-scoring)
    move of the minimum from the generating parameters. At high counts the whole move
    lands near each toy's conditional minimum (within 5% of the generating parameters'
    distance from it); for toys drawn at mu = 0 and fitted at mu = 1 (the POI's step)
    within 10% in the median, and with Gaussian constraints within 5% in the median;
    the default start is half of it; a bin without expected events gives finite
    starts."""
    from diffana.infer import _toys

    model, data = high_count
    poi = model.poi_index
    move = _toys.floating(model, jnp.asarray(model.fixed)).at[poi].set(False)
    for gen_mu in (1.0, 0.0):
        gen = infer.fixed_poi_fit(gen_mu, data, model).pars
        toys = infer.sample_data(model, gen, 6, key=jax.random.key(5))
        whole = _toys.start_response(model, gen, move, poi, 1.0, fraction=1.0)
        starts = _toys.response_starts(gen, whole, toys)
        half = _toys.response_starts(gen, _toys.start_response(model, gen, move, poi, 1.0), toys)
        np.testing.assert_allclose(half - gen[None], 0.5 * (starts - gen[None]), atol=1e-13)
        ratios = []
        for toy, start in zip(toys, starts, strict=True):
            cond = infer.fixed_poi_fit(1.0, toy, model).pars
            missed = np.linalg.norm(start.at[poi].set(1.0) - cond)
            ratios.append(missed / np.linalg.norm(gen.at[poi].set(1.0) - cond))
        if gen_mu == 1.0:
            assert max(ratios) < 0.05
        else:
            # The POI's step is a larger move, less linear: over 24 toys of four keys
            # the start missed by 1.5-9% of the distance, once by 44%.
            assert np.median(ratios) < 0.1 and max(ratios) < 0.5

    # Gaussian constraints (lumi, staterror, normsys) beside a Poisson one (shapesys),
    # a hundred times the counts of the lumi workspace
    spec = _lumi_workspace()
    for sample in spec["channels"][0]["samples"]:
        sample["data"] = [100.0 * x for x in sample["data"]]
        for mod in sample["modifiers"]:
            if mod["type"] in ("staterror", "shapesys"):
                mod["data"] = [10.0 * x for x in mod["data"]]
    spec["observations"][0]["data"] = [100.0 * x for x in spec["observations"][0]["data"]]
    model = hf.Model.from_pyhf(spec)
    poi = model.poi_index
    gen = infer.fixed_poi_fit(1.0, hf.workspace_data(spec, model), model).pars
    move = _toys.floating(model, jnp.asarray(model.fixed)).at[poi].set(False)
    whole = _toys.start_response(model, gen, move, poi, 1.0, fraction=1.0)
    toys = infer.sample_data(model, gen, 6, key=jax.random.key(5))
    ratios = []
    for toy, start in zip(toys, _toys.response_starts(gen, whole, toys), strict=True):
        cond = infer.fixed_poi_fit(1.0, toy, model).pars
        ratios.append(np.linalg.norm(start - cond) / np.linalg.norm(gen - cond))
    # over 24 toys of four keys: 0.1-6% of the distance, once 12%
    assert np.median(ratios) < 0.05 and max(ratios) < 0.25

    empty = hf.uncorrelated_background([5.0, 0.0], [20.0, 0.0], [2.0, 0.0])
    gen = jnp.asarray(empty.init)
    move = _toys.floating(empty, jnp.asarray(empty.fixed)).at[empty.poi_index].set(False)
    response = _toys.start_response(empty, gen, move, empty.poi_index, 1.0)
    toys = infer.sample_data(empty, gen, 4, key=jax.random.key(6))
    starts = _toys.response_starts(gen, response, toys)
    assert np.all(np.isfinite(starts))
    # the filled bin's parameter still moves with the toys (no fallback to `gen`)
    gamma = move.tolist().index(True)
    assert np.ptp(np.asarray(starts[:, gamma])) > 0


CPU_ONLY = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="toys run on threads on a CPU only"
)


@CPU_ONLY
def test_toys_fitted_on_several_threads_equal_those_fitted_on_one(low_count, monkeypatch):
    """Large models' chunks of toys run on several threads at once on a CPU; the toys and
    their statistics are those of the chunks run one after the other. The model is
    small, with its toys fitted one after the other as a large model's are."""
    from diffana.infer import _toys

    model, data = low_count
    monkeypatch.setattr(_toys, "VMAP_MAX_PARS", 0)
    pools = []

    class CountingPool(_toys.ThreadPoolExecutor):
        def __init__(self, max_workers):
            pools.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(_toys, "ThreadPoolExecutor", CountingPool)
    # chunks of 13 toys, the last one with 2 padded toys (not fitted)
    kwargs = {"ntoys": 37, "chunk_size": 13, "key": jax.random.key(5)}
    monkeypatch.setenv("DIFFANA_TOY_THREADS", "1")
    one = infer.toy_distributions(1.0, data, model, **kwargs)
    assert pools == []
    monkeypatch.setenv("DIFFANA_TOY_THREADS", "3")
    three = infer.toy_distributions(1.0, data, model, **kwargs)
    assert pools == [3]
    for x, y in zip(one, three, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert np.count_nonzero(np.asarray(one.signal_plus_background)) >= 10


@pytest.mark.parametrize(
    ("v2", "v1", "limit"),
    [
        ("250000 100000\n", None, 2.5),
        ("max 100000\n", ("-1", "100000"), None),
        (None, ("150000", "100000"), 1.5),
        (None, ("-1", "100000"), None),
        (None, None, None),
        ("garbage\n", ("x", "100000"), None),
    ],
)
def test_cgroup_cpu_quota_limits_the_usable_cores(monkeypatch, tmp_path, v2, v1, limit):
    from diffana.infer import _toys

    def write(name, text):
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        return str(path)

    monkeypatch.setattr(_toys, "CGROUP_CPU_MAX", write("cpu.max", v2))
    quota, period = v1 if v1 is not None else (None, None)
    monkeypatch.setattr(_toys, "CGROUP_V1_QUOTA", (write("quota", quota), write("period", period)))
    assert _toys.cgroup_cpu_limit() == limit
    monkeypatch.setattr(_toys.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert _toys.usable_cores() == (8 if limit is None else math.ceil(limit))


def test_toy_threads_and_chunks(monkeypatch):
    from diffana.infer import _toys

    monkeypatch.delenv("DIFFANA_TOY_THREADS", raising=False)
    assert _toys.toy_threads(True, "here") == 1  # vmapped chunks: one thread
    assert _toys.toy_threads(False, "here") == _toys.usable_cores()
    monkeypatch.setenv("DIFFANA_TOY_THREADS", "2")
    assert _toys.toy_threads(False, "here") == 2
    for bad in ("0", "two"):
        monkeypatch.setenv("DIFFANA_TOY_THREADS", bad)
        for vmapped in (False, True):  # refused even where it would not be used
            with pytest.raises(ValueError, match="here: the environment variable DIFFANA_TOY"):
                _toys.toy_threads(vmapped, "here")
    # vmapped chunks: up to chunk_size; one after the other: a length fixed for any ntoys
    assert _toys.chunk_length(10, 2048, vmapped=True) == 10
    assert _toys.chunk_length(5000, 2048, vmapped=True) == 2048
    for ntoys in (3, 250, 1000):
        assert _toys.chunk_length(ntoys, 2048, vmapped=False) == _toys.SEQUENTIAL_CHUNK
    assert _toys.chunk_length(1000, 8, vmapped=False) == 8


def test_threaded_calls_keep_order_precision_and_stop_on_errors():
    import threading
    import time

    from diffana.infer import _toys

    done = []
    with jax.enable_x64(False):  # a per-thread setting, carried to the workers
        out = _toys.run_calls(
            [lambda i=i: (i, jnp.asarray(1.0).dtype) for i in range(5)], 2, done.append
        )
    assert out == [(i, jnp.float32) for i in range(5)] and sorted(done) == list(range(5))
    # progress follows the calls as they finish: call 0 waits until call 1 is reported
    first_reported = threading.Event()
    reported = []

    def report(i):
        reported.append(i)
        if i == 1:
            first_reported.set()

    slow = [lambda: first_reported.wait(timeout=10), lambda: "fast"]
    assert _toys.run_calls(slow, 2, report) == [True, "fast"] and reported == [1, 0]
    started, release = [], threading.Event()
    lock = threading.Lock()

    def call(i):
        with lock:
            started.append(i)
        if i == 0:
            raise RuntimeError("chunk 0 failed")
        release.wait(timeout=10)  # the other worker's call stays busy until released

    calls = [lambda i=i: call(i) for i in range(40)]
    with pytest.raises(RuntimeError, match="chunk 0 failed"):
        _toys.run_calls(calls, 2, lambda i: None)
    release.set()
    time.sleep(0.3)  # the 37 queued calls would all have run by now without cancelling
    assert len(started) <= 3  # chunk 0, the busy one, and one picked up before the error


def test_hypotest_layout_and_progress_bar(low_count, capsys):
    model, data = low_count
    out = infer.hypotest(
        1.0,
        data,
        model,
        calctype="toybased",
        ntoys=CHUNK,
        key=jax.random.key(0),
        chunk_size=CHUNK,
        return_tail_probs=True,
        return_expected=True,
        return_expected_set=True,
        progress=True,
    )
    cls, tails, expected, band = out
    assert cls.shape == () and tails.shape == (2,) and expected.shape == () and band.shape == (5,)
    assert float(expected) == float(band[2])
    assert capsys.readouterr().out == ""  # the bar goes to stderr


def test_bad_inputs_are_refused(low_count):
    model, data = low_count
    toy = {"calctype": "toybased", "ntoys": 10}
    with pytest.raises(TypeError, match="random key"):
        infer.hypotest(1.0, data, model, **toy)
    with pytest.raises(TypeError, match="JAX random key"):
        infer.hypotest(1.0, data, model, key=42, **toy)
    with pytest.raises(TypeError, match="single key"):
        infer.hypotest(1.0, data, model, key=jax.random.split(jax.random.key(0), 3), **toy)
    with pytest.raises(TypeError, match="dtype"):
        infer.hypotest(1.0, data, model, key=jnp.zeros(3), **toy)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="at least 1"):
        infer.hypotest(1.0, data, model, calctype="toybased", ntoys=0, key=key)
    with pytest.raises(TypeError, match="integer"):
        infer.hypotest(1.0, data, model, calctype="toybased", ntoys=2.5, key=key)
    with pytest.raises(ValueError, match="outside the bounds"):
        infer.hypotest(-1.0, data, model, key=key, **toy)
    with pytest.raises(ValueError, match="calctype"):
        infer.hypotest(1.0, data, model, calctype="toys")
    with pytest.raises(ValueError, match="toybased"):
        infer.hypotest(1.0, data, model, key=key)
    with pytest.raises(ValueError, match="calc_base_dist"):
        infer.hypotest(1.0, data, model, key=key, calc_base_dist="clipped_normal", **toy)
    with pytest.raises(ValueError, match="test_stat"):
        infer.hypotest(1.0, data, model, key=key, test_stat="t", **toy)
    with pytest.raises(ValueError, match="chunk_size"):
        infer.toy_distributions(1.0, data, model, 10, key=key, chunk_size=0)
    for toy_tol in (0.0, 1e-3):
        with pytest.raises(ValueError, match="toy_tol"):
            infer.toy_distributions(1.0, data, model, 10, key=key, toy_tol=toy_tol)
    for toy_tol in ("small", [1e-7], True):
        with pytest.raises(TypeError, match="toy_tol"):
            infer.hypotest(1.0, data, model, key=key, toy_tol=toy_tol, **toy)
    with pytest.raises(ValueError, match="toybased"):
        infer.hypotest(1.0, data, model, toy_tol=1e-7)
    with pytest.raises(ValueError, match="level"):
        infer.poi_interval(data, model, level=1.5)
    with pytest.raises(ValueError, match="outside the bounds"):
        infer.coverage(model, [1.0, 20.0], 10, key=key)
    with pytest.raises(TypeError, match="random key"):
        infer.coverage(model, [1.0], 10, key=None)
    with pytest.raises(TypeError, match=r"diffana\.hf\.Model"):
        infer.sample_data(object(), jnp.zeros(2), 3, key=key)


# --------------------------------------------------------------------------------------
# intervals and coverage


def test_interval_ends_cross_the_chi2_quantile(high_count):
    model, data = high_count
    for level in (0.6827, 0.95):
        res = infer.poi_interval(data, model, level=level)
        assert bool(res.converged)
        threshold = float(jax.scipy.special.ndtri(0.5 * (1 + level))) ** 2
        for end in (res.lower, res.upper):
            t = infer.tmu(float(end), data, model)
            assert float(t) == pytest.approx(threshold, abs=1e-7)
        assert float(res.lower) < float(res.mu_hat) < float(res.upper)
        free = infer.fit(data=data, model=model)
        assert float(res.mu_hat) == pytest.approx(float(free.pars[model.poi_index]), abs=1e-8)


def test_interval_stops_at_the_poi_bound(high_count):
    model, _ = high_count
    # a deficit: mu_hat at its lower bound 0, where t_mu stays below the threshold
    data = jnp.asarray([990.0, 1480.0, 1190.0, *model.auxdata.tolist()])
    res = infer.poi_interval(data, model)
    assert bool(res.converged)
    assert float(res.mu_hat) == 0.0 and float(res.lower) == 0.0
    assert float(infer.tmu(float(res.upper), data, model)) == pytest.approx(1.0000434, abs=1e-6)


def test_coverage_of_the_68_percent_interval(high_count):
    model, data = high_count
    ntoys = 600
    res = infer.coverage(model, [1.0, 2.0], ntoys, key=jax.random.key(21), chunk_size=ntoys)
    assert res.lower.shape == (2, ntoys) and bool(np.all(res.converged))
    sigma = math.sqrt(0.6827 * 0.3173 / ntoys)
    np.testing.assert_array_less(np.abs(np.asarray(res.coverage) - 0.6827), 3 * sigma)
    np.testing.assert_allclose(res.coverage_error, sigma, rtol=0.1)
    # the width is twice the asymptotic uncertainty on mu
    sigma_mu = float(infer.poi_uncertainty(model))
    np.testing.assert_allclose(res.mean_width, 2 * sigma_mu, rtol=0.1)
    for j, mu in enumerate(np.asarray(res.poi_values)):
        s = infer.fair_universe_score(mu, res.lower[j], res.upper[j])
        assert float(s.score) == pytest.approx(float(res.score[j]), abs=1e-12)
    # profiling on data gives the same kind of answer
    with_data = infer.coverage(
        model, [1.0], ntoys, key=jax.random.key(22), data=data, chunk_size=ntoys
    )
    assert abs(float(with_data.coverage[0]) - 0.6827) < 3 * sigma


@CPU_ONLY
def test_coverage_toys_fitted_one_after_the_other_on_threads(high_count, monkeypatch):
    """Large models' coverage toys are fitted one after the other, on several threads at
    once, and padded toys are skipped; each toy's interval is `poi_interval` of its
    pseudo-data (drawn as `sample_data` draws it)."""
    from diffana.infer import _toys

    model, data = high_count
    key = jax.random.key(3)
    monkeypatch.setattr(_toys, "VMAP_MAX_PARS", 0)
    monkeypatch.setenv("DIFFANA_TOY_THREADS", "2")
    # chunks of 3 toys, one toy padded, the chunks of both true values in one queue
    res = infer.coverage(model, [1.0, 1.5], 8, key=key, data=data, chunk_size=3)
    assert res.lower.shape == (2, 8) and bool(np.all(res.converged))
    for j, mu in enumerate((1.0, 1.5)):
        gen = infer.fixed_poi_fit(mu, data, model).pars
        toys = infer.sample_data(model, gen, 8, key=jax.random.fold_in(key, j))
        for i, toy in enumerate(toys):
            alone = infer.poi_interval(toy, model)
            assert float(res.lower[j, i]) == pytest.approx(float(alone.lower), abs=1e-7)
            assert float(res.upper[j, i]) == pytest.approx(float(alone.upper), abs=1e-7)


def test_fair_universe_score_as_published():
    n = 1000
    sigma68 = math.sqrt(0.6827 * 0.3173 / n)
    truth = np.zeros(n)
    width = 0.4

    def intervals(n_inside):
        lower = np.where(np.arange(n) < n_inside, -0.2, 0.1)
        return lower, lower + width

    # inside the +-2 sigma68 window: no penalty
    s = infer.fair_universe_score(truth, *intervals(683))
    assert float(s.coverage) == pytest.approx(0.683)
    assert float(s.mean_width) == pytest.approx(width)
    assert float(s.score) == pytest.approx(-math.log(width + 1e-3))
    # under-coverage: fourth power; over-coverage: third power, beyond the window
    for inside, power, edge in ((600, 4, 0.6827 - 2 * sigma68), (800, 3, 0.6827 + 2 * sigma68)):
        s = infer.fair_universe_score(truth, *intervals(inside))
        penalty = 1 + abs((inside / n - edge) / sigma68) ** power
        assert float(s.score) == pytest.approx(-math.log((width + 1e-3) * penalty), rel=1e-12)
