"""Several processes on JAX's distributed runtime (`jax.distributed`), on this host.

Two processes connect over 127.0.0.1 (gloo collectives on CPU), each reads only its own
share of the events, and together they must reproduce what one process computes on all
events: a neos training step (network -> KDE histograms -> HistFactory model -> CLs),
the streamed loss and gradient over ROOT files, the hard evaluation, and a whole
``diffana bench`` run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffana import parallel

TIMEOUT_S = 600  # generous for a busy 2-core machine; a hang fails instead of blocking CI

# The analysis shared by the worker processes and the single-process reference below.
PIPELINE = textwrap.dedent(
    """
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np, optax
    import diffana.io as dio
    from diffana import hf, losses, parallel, relax

    EDGES = np.linspace(0.0, 1.0, 5)  # numpy: no JAX computation before initialize
    YIELDS = np.array([20.0, 100.0, 100.0, 100.0])  # signal, background, up, down
    N = 203  # events per sample: odd, so the processes' shares are padded
    SCHEMA = dio.Schema(columns=["x0", "x1", "sample"], weight="weight")
    OPT = optax.adam(1e-2)


    def make_events():
        rng = np.random.default_rng(1)
        means = np.array([[-1.0, 1.0], [1.0, -1.0], [2.5, 2.0], [-2.5, -1.5]])
        x = rng.standard_normal((4, N, 2)) + means[:, None, :]
        return {"x": x, "w": np.broadcast_to((YIELDS / N)[:, None], (4, N)).copy()}


    def make_net():
        return eqx.nn.MLP(2, 1, 8, 2, activation=jax.nn.relu, key=jax.random.key(0),
                          dtype=jnp.float64)


    def cls(h):
        h = h + 1e-3
        return losses.cls_loss(hf.correlated_background(h[0], h[1], h[2], h[3]))


    def hists(net, ev, hist=lambda s, w: relax.hist(s, EDGES, 0.09, weights=w)):
        s = jax.nn.sigmoid(jax.vmap(jax.vmap(net))(ev["x"])[..., 0])
        return jax.vmap(hist)(s, ev["w"])


    @eqx.filter_jit
    def neos_step(net, ev):
        value, grad = eqx.filter_value_and_grad(lambda n: cls(hists(n, ev)))(net)
        params = eqx.filter(net, eqx.is_array)
        updates, _ = OPT.update(grad, OPT.init(params), params)
        return value, grad, eqx.apply_updates(net, updates)


    @eqx.filter_jit
    def hard_hists(net, ev):
        return hists(net, ev, lambda s, w: relax.hard_hist(s, EDGES, weights=w))


    def summary(net, events):  # per chunk of a ROOT file: (4 samples, bins)
        s = jax.nn.sigmoid(jax.vmap(net)(jnp.stack([events["x0"], events["x1"]], 1))[:, 0])
        return jnp.stack([relax.hist(s, EDGES, 0.09,
                                     weights=events.weights * (events["sample"] == k))
                          for k in range(4)])


    def hard_summary(net, events):
        s = jax.nn.sigmoid(jax.vmap(net)(jnp.stack([events["x0"], events["x1"]], 1))[:, 0])
        return jnp.stack([relax.hard_hist(s, EDGES,
                                          weights=events.weights * (events["sample"] == k))
                          for k in range(4)])


    def streamed(files, across_processes=False):
        stream = dio.iterate_events(files, SCHEMA, step_size=128)
        loss, grad = dio.loss_and_grad_over_chunks(
            summary, jax.jit(cls), make_net(), stream, across_processes=across_processes)
        hard = dio.sum_over_chunks(hard_summary, make_net(), stream,
                                   across_processes=across_processes)
        return loss, grad, hard


    def arrays(tree):
        return [np.asarray(a).tolist() for a in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]
    """
)

# Each worker connects first (before any JAX computation: importing some libraries
# computes), then runs the pipeline on its own share of the events.
WORKER = (
    textwrap.dedent(
        """
        import json, sys, time
        from pathlib import Path

        import jax
        from diffana import parallel

        pid, port, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        parallel.initialize_distributed(f"127.0.0.1:{port}", 2, pid, timeout_s=300)
        parallel.initialize_distributed(f"127.0.0.1:{port}", 2, pid)  # again: a no-op
        jax.config.update("jax_enable_x64", True)  # as in the test process (conftest.py)
        jax.config.update("jax_numpy_rank_promotion", "raise")
        """
    )
    + PIPELINE
    + textwrap.dedent(
        """
        mesh = parallel.event_mesh()  # one CPU device per process
        out = {"process": jax.process_index(), "processes": jax.process_count(),
               "devices": mesh.size, "share": list(parallel.process_share(N))}

        # Each process takes its own share of the events (102 of 203, the second one
        # padded with a zero-weight event); the global arrays are assembled from them.
        ev = parallel.shard_events(parallel.take_process_share(make_events(), axis=1),
                                   mesh, axis=1)
        out["global_events"] = int(ev["w"].shape[1])
        out["local_events"] = [int(s.data.shape[1]) for s in ev["w"].addressable_shards]
        net = parallel.replicate(make_net(), mesh)
        value, grad, new = neos_step(net, ev)
        hard = hard_hists(new, ev)
        value, grad, new, hard = parallel.process_local((value, grad, new, hard))
        t0 = time.perf_counter()
        for _ in range(3):
            jax.block_until_ready(neos_step(net, ev))
        out["step_s"] = (time.perf_counter() - t0) / 3
        out["loss"], out["grad"], out["params"] = float(value), arrays(grad), arrays(new)
        out["hard"] = np.asarray(hard).tolist()
        # a PRNG key already on this process's device, replicated over all processes
        key = parallel.replicate(jax.random.split(jax.random.key(3))[1], mesh)
        out["uniform"] = float(jax.jit(jax.random.uniform)(key))

        # Streamed: each process reads its own ROOT file, chunk by chunk.
        files = sorted(Path(folder).glob("*.root"))[jax.process_index()::jax.process_count()]
        loss, grad, hard = streamed(files, across_processes=True)
        out["streamed"] = {"loss": float(loss), "grad": arrays(grad),
                           "hard": np.asarray(hard).tolist()}
        (Path(folder) / f"result{pid}.json").write_text(json.dumps(out))
        """
    )
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"  # the test is about CPU hosts (gloo), also on GPU machines
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)  # one CPU device per process
    env.pop("DIFFANA_DISABLE_X64", None)
    src = str(Path(parallel.__file__).resolve().parents[1])  # this checkout's diffana
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    return env


class Processes:
    """Subprocesses started together, waited for with one deadline, killed on failure."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, args: list[str]) -> None:
        log = self.folder / f"{name}.log"
        with open(log, "w") as f:
            proc = subprocess.Popen(
                [sys.executable, *args], stdout=f, stderr=subprocess.STDOUT, env=_env(),
                cwd=self.folder,
            )  # fmt: skip
        self.procs.append((name, proc, log))

    def wait(self, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        for name, proc, log in self.procs:
            try:
                rc = proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"{name} did not finish in {timeout} s:\n{log.read_text()[-3000:]}")
            if rc != 0:
                self.kill()
                pytest.fail(f"{name} failed (exit {rc}):\n{log.read_text()[-3000:]}")

    def kill(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    procs.kill()  # whatever happened, no process outlives the test


def _write_root_files(folder: Path, ns: dict) -> None:
    """The events of PIPELINE's samples, shuffled into two ROOT files."""
    import uproot  # a dependency of diffana.io: never skipped

    ev = ns["make_events"]()
    x = ev["x"].reshape(-1, 2)
    sample = np.repeat(np.arange(4), ns["N"]).astype(np.float64)
    weight = ev["w"].reshape(-1)
    order = np.random.default_rng(7).permutation(sample.size)
    for i, part in enumerate(np.array_split(order, 2)):  # 406 + 406 events
        with uproot.recreate(folder / f"blobs{i}.root") as f:
            f["events"] = {"x0": x[part, 0], "x1": x[part, 1], "sample": sample[part],
                           "weight": weight[part]}  # fmt: skip


def _close(a, b, rtol=1e-9, atol=1e-13):
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def test_two_processes_reproduce_one(processes, tmp_path):
    ns: dict = {}
    exec(PIPELINE, ns)  # the same code as the workers
    _write_root_files(tmp_path, ns)
    port = _free_port()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    for pid in range(2):
        processes.start(f"process {pid}", [str(script), str(pid), str(port), str(tmp_path)])

    # Meanwhile the reference: one process, all events, all files.
    ev = {k: jnp.asarray(v) for k, v in ns["make_events"]().items()}
    value, grad, new = ns["neos_step"](ns["make_net"](), ev)
    t0 = time.perf_counter()
    for _ in range(3):
        jax.block_until_ready(ns["neos_step"](ns["make_net"](), ev))
    step_s = (time.perf_counter() - t0) / 3
    hard = ns["hard_hists"](new, ev)
    s_loss, s_grad, s_hard = ns["streamed"](sorted(tmp_path.glob("*.root")))
    processes.wait()

    results = [json.loads((tmp_path / f"result{i}.json").read_text()) for i in range(2)]
    print(f"\nneos step: {step_s * 1e3:.1f} ms in one process, "
          f"{[round(r['step_s'] * 1e3, 1) for r in results]} ms in two")  # fmt: skip
    for i, r in enumerate(results):
        assert (r["process"], r["processes"], r["devices"]) == (i, 2, 2)
        assert r["share"] == [[0, 102, 102], [102, 203, 102]][i]
        assert r["global_events"] == 204 and r["local_events"] == [102]
        # the neos step on the processes' shares = the step on all events in one process
        np.testing.assert_allclose(r["loss"], float(value), rtol=1e-11)
        _close(r["grad"], ns["arrays"](grad))
        _close(r["params"], ns["arrays"](new))
        np.testing.assert_allclose(r["hard"], hard, rtol=1e-12, atol=1e-12)
        assert r["uniform"] == float(jax.random.uniform(jax.random.split(jax.random.key(3))[1]))
        # the streamed loss, gradient and hard evaluation over each process's own file
        np.testing.assert_allclose(r["streamed"]["loss"], float(s_loss), rtol=1e-11)
        _close(r["streamed"]["grad"], ns["arrays"](s_grad))
        np.testing.assert_allclose(r["streamed"]["hard"], s_hard, rtol=1e-12, atol=1e-12)
    # and the in-memory and streamed numbers agree with each other
    np.testing.assert_allclose(float(s_loss), float(value), rtol=1e-11)
    np.testing.assert_allclose(np.sum(s_hard, axis=1), ns["YIELDS"], rtol=1e-12)
    assert results[0]["grad"] == results[1]["grad"]  # bitwise the same in both processes


def _bench_args(out: str) -> list[str]:
    return ["-m", "diffana.cli", "bench", "gaussian_blobs", "--quick", "--no-referee",
            "--no-toys", "--no-plots", "--steps", "3", "--out", out]  # fmt: skip


def _runs(out: Path) -> dict[str, dict]:
    results = json.loads((out / "results.json").read_text())
    runs = {}
    for entry in results["problems"]["gaussian_blobs"]["runs"]:
        runs[entry["label"]] = json.loads((out / entry["dir"] / "result.json").read_text())
    return runs


def _start_two(processes: Processes, name: str) -> None:
    port = _free_port()
    for pid in range(2):
        processes.start(
            f"{name} {pid}",
            [*_bench_args("multi"), "--coordinator", f"127.0.0.1:{port}",
             "--num-processes", "2", "--process-id", str(pid)],
        )  # fmt: skip


def test_bench_on_two_processes_equals_one(processes, tmp_path):
    processes.start("single process", _bench_args("single"))
    _start_two(processes, "bench process")
    processes.wait()
    single, multi = _runs(tmp_path / "single"), _runs(tmp_path / "multi")
    meta = json.loads((tmp_path / "multi" / "results.json").read_text())["meta"]
    assert meta["processes"] == 2 and len(meta["environment"]["devices"]) == 2
    assert sorted(single) == sorted(multi) == ["bce", "neos@default"]
    for label, one in single.items():
        two = multi[label]
        np.testing.assert_allclose(two["history"]["loss"], one["history"]["loss"], rtol=1e-8)
        assert sorted(two["hard_yields"]) == sorted(one["hard_yields"])
        for key, counts in one["hard_yields"].items():
            np.testing.assert_allclose(two["hard_yields"][key], counts, rtol=1e-9, atol=1e-9)
        for scen, ev in one["evaluation"].items():
            for key in ("cls", "z0", "sigma_poi_fisher", "sigma_poi_profile"):
                assert two["evaluation"][scen][key] == pytest.approx(ev[key], rel=1e-7), key
    # process 0 alone wrote the outputs; process 1 wrote nothing beside them
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == sorted(
        p.name for p in (tmp_path / "single").iterdir()
    )
    assert "results in" in (tmp_path / "bench process 0.log").read_text()
    assert "results in" not in (tmp_path / "bench process 1.log").read_text()
    # rerun: process 0 finds the finished runs and both processes skip them
    processes.procs.clear()
    _start_two(processes, "resumed process")
    processes.wait()
    assert "2 runs (0 ran, 2 reused" in (tmp_path / "resumed process 0.log").read_text()


def test_process_share_and_argument_errors():
    shares = [parallel.process_share(203, multiple=2, process_index=i, process_count=3)
              for i in range(3)]  # fmt: skip
    assert [tuple(s) for s in shares] == [(0, 68, 68), (68, 136, 68), (136, 203, 68)]
    assert shares[2].slice == slice(136, 203)
    assert tuple(parallel.process_share(1, multiple=1, process_index=1, process_count=2)) == (
        1, 1, 1,
    )  # fmt: skip
    # one process: everything, unchanged
    tree = {"x": np.arange(6.0).reshape(3, 2), "w": np.ones(3)}
    taken = parallel.take_process_share(tree, multiple=1)
    np.testing.assert_array_equal(taken["x"], tree["x"])
    assert parallel.sum_over_processes(tree) is tree
    local = parallel.process_local({"a": jnp.ones(2), "f": jax.nn.relu})
    assert local["f"] is jax.nn.relu
    with pytest.raises(ValueError, match="process_index"):
        parallel.process_share(10, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="n must be"):
        parallel.process_share(-1)
    with pytest.raises(ValueError, match="together"):
        parallel.initialize_distributed("127.0.0.1:1234")
    with pytest.raises(ValueError, match="host:port"):
        parallel.initialize_distributed("localhost", 2, 0)
    with pytest.raises(ValueError, match="< num_processes"):
        parallel.initialize_distributed("127.0.0.1:1234", 2, 2)
    # JAX has computed in this process already: a clear error, not JAX's
    with pytest.raises(RuntimeError, match="before any JAX operation"):
        parallel.initialize_distributed("127.0.0.1:1234", 2, 0, timeout_s=5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--coordinator", "127.0.0.1:1"], "--num-processes, --process-id missing"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "below"),
        (["--distributed", "--devices", "2"], "drop --devices"),
        (
            ["--distributed", "--coordinator", "h:1", "--num-processes", "2", "--process-id", "0"],
            "do not combine",
        ),
        (
            ["--coordinator", "nowhere", "--num-processes", "2", "--process-id", "0"],
            "host:port",
        ),
        # no cluster environment here (or JAX has started in this process already)
        (["--distributed"], "initialize_distributed:"),
    ],
)
def test_bench_process_options_are_validated(args, message, tmp_path):
    from click.testing import CliRunner

    from diffana.cli import main

    res = CliRunner().invoke(main, ["bench", "gaussian_blobs", "--out", str(tmp_path), *args])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0]  # a one-line error
    assert not any(tmp_path.iterdir())
