"""The neos training step: diffana against its network floor and against relaxed 0.4.0.

The step of the neos "gaussian blobs" demo (arXiv:2203.05570): four samples (signal,
background, background up/down) of `--events` events each, a network 2 -> 1024 -> 1024 -> 1
with ReLU and a sigmoid output, a KDE histogram of its output with 4 bins on [0, 1] and
bandwidth 0.09, the yields scaled to 20 signal and 100 background events (+1e-3 per bin as
in neos), a HistFactory model with a normfactor `mu` on the signal and a histosys on the
background, the expected CLs at `mu = 1` on background-only Asimov data as the loss, and
an adam update. Measured, jitted, each as the median of `--repeats` calls after warm-up:

* ``step``: value and gradient of the loss plus the adam update;
* ``vg``: value and gradient of the loss alone;
* ``floor``: value and gradient of the network's own forward+backward pass (the sum of its
  outputs on the same events), i.e. what any training on these events costs;
* ``analysis``: the analysis part alone - histograms, model, fits, CLs and their
  gradients with respect to given network outputs (the same number of events) - and its
  cost relative to the floor; also ``vg / floor - 1``, the same overhead seen through the
  whole step (noisier: a difference of two large numbers).

The same step built on relaxed 0.4.0 (relaxed.hist, relaxed.infer.hypotest with jaxopt
fits, optax 0.1.7) runs in its own interpreter (``--python``, a venv made from
``benchmarks/requirements-relaxed.txt``) on the same events and network weights. diffana
and relaxed are timed alternately, `--rounds` times, so that both see the same machine
load; the medians over all rounds are compared.

Precision policies: the network in float32 or float64 (``--net-dtypes``); the statistics
(histograms, model, fits) are float64 in both libraries. relaxed needs 64-bit mode for its
fits, which also makes its network float64 unless it is cast explicitly.

Usage:

    python benchmarks/bench_step.py --python /tmp/relaxed-venv/bin/python
    python benchmarks/bench_step.py --events 500 2000 10000 --json step.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MEANS = np.array([[-1.0, 1.0], [1.0, -1.0], [2.5, 2.0], [-2.5, -1.5]])  # sig, bkg, up, down
YIELDS = np.array([20.0, 100.0, 100.0, 100.0])
LAYERS = (2, 1024, 1024, 1)
N_BINS = 4
BANDWIDTH = 0.09


def make_inputs(n_events: int, seed: int = 0, layers=LAYERS) -> dict[str, np.ndarray]:
    """Events, network weights (He-uniform, float64) and histogram settings."""
    rng = np.random.default_rng(seed)
    out = {
        "x": rng.standard_normal((4, n_events, 2)) + MEANS[:, None, :],
        "scale": YIELDS / n_events,
        "edges": np.linspace(0.0, 1.0, N_BINS + 1),
    }
    for i in range(len(layers) - 1):
        limit = np.sqrt(6.0 / layers[i])
        out[f"W{i}"] = rng.uniform(-limit, limit, (layers[i], layers[i + 1]))
        out[f"b{i}"] = np.zeros(layers[i + 1])
    return out


def network(params, x):
    """The MLP on a batch `(events, features)`: ReLU hidden layers, sigmoid output."""
    import jax

    h = x.astype(params[0][0].dtype)
    for w, b in params[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = params[-1]
    return jax.nn.sigmoid(h @ w + b)[:, 0]


def neos_loss(hists):
    """Expected CLs of the neos model built from the four histograms (diffana)."""
    from diffana import hf, losses

    h = hists + 1e-3
    return losses.cls_loss(hf.correlated_background(h[0], h[1], h[2], h[3]))


def diffana_functions(inputs, net_dtype: str, bandwidth=BANDWIDTH, mesh=None):
    """Jitted `step`, `vg` and `floor` of the diffana neos step, as thunks.

    With a `mesh` (see `diffana.parallel`), the events are sharded over its devices and
    XLA partitions the step (histograms summed with an all-reduce).
    """
    import jax
    import jax.numpy as jnp
    import optax

    from diffana import parallel, relax

    dt = jnp.dtype(net_dtype)
    n_layers = sum(1 for k in inputs if k.startswith("W"))
    params = [
        (jnp.asarray(inputs[f"W{i}"], dt), jnp.asarray(inputs[f"b{i}"], dt))
        for i in range(n_layers)
    ]
    x = jnp.asarray(inputs["x"])
    if mesh is not None:
        x = parallel.shard_events(x, mesh, axis=1)
        params = parallel.replicate(params, mesh)
    n_samples, n_events = x.shape[:2]
    scale = jnp.asarray(inputs["scale"])
    edges = jnp.asarray(inputs["edges"])

    def histograms(params, x):
        s = network(params, x.reshape(-1, x.shape[-1])).astype(jnp.float64)
        h = jax.vmap(lambda s: relax.hist(s, edges, bandwidth))(s.reshape(n_samples, n_events))
        return h * scale[:, None]

    def loss(params, x):
        return neos_loss(histograms(params, x))

    def floor(params, x):
        return jnp.sum(network(params, x.reshape(-1, x.shape[-1])))

    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state, x):
        value, grad = jax.value_and_grad(loss)(params, x)
        updates, state = opt.update(grad, state, params)
        return optax.apply_updates(params, updates), state, value

    def analysis(s):
        h = jax.vmap(lambda s: relax.hist(s, edges, bandwidth))(s) * scale[:, None]
        return neos_loss(h)

    vg = jax.jit(jax.value_and_grad(loss))
    vg_floor = jax.jit(jax.value_and_grad(floor))
    vg_analysis = jax.jit(jax.value_and_grad(analysis))
    s0 = jnp.asarray(analysis_summaries(n_samples, n_events))
    return {
        "step": lambda: step(params, state, x),
        "vg": lambda: vg(params, x),
        "floor": lambda: vg_floor(params, x),
        "analysis": lambda: vg_analysis(s0),
    }


def analysis_summaries(n_samples: int, n_events: int) -> np.ndarray:
    """Network outputs in [0, 1] for the analysis part alone (relaxed's worker draws the
    same: uniform, the signal's square-rooted)."""
    rng = np.random.default_rng(0)
    s = rng.uniform(0.0, 1.0, (n_samples, n_events))
    s[0] = np.sqrt(s[0])
    return s


def _time(fn, reps):
    import jax

    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return times


def machine_info() -> dict:
    import jax

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "load_average_at_start": os.getloadavg(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            models = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if models:
            info["cpu_model"] = models[0]
    except OSError:
        pass
    return info


def run(args) -> dict:

    import diffana  # noqa: F401  (float64 statistics)
    from diffana import parallel

    mesh = None
    if args.devices:
        parallel.use_cpu_devices(args.devices)  # before JAX starts (CPU hosts)
        mesh = parallel.event_mesh(args.devices)

    worker = worker32 = None
    if args.python:
        from _relaxed_ref import RelaxedWorker

        worker = RelaxedWorker(args.python)
        if args.relaxed_float32:
            worker32 = RelaxedWorker(args.python, x64=False)
    results = {"machine": machine_info(), "settings": vars(args).copy(), "rows": []}
    try:
        for n_events in args.events:
            inputs = make_inputs(n_events, seed=args.seed)
            with tempfile.TemporaryDirectory() as tmp:
                npz = os.path.join(tmp, "inputs.npz")
                np.savez(npz, **inputs)
                for net_dtype in args.net_dtypes:
                    row = _measure(args, inputs, npz, n_events, net_dtype, worker, worker32, mesh)
                    results["rows"].append(row)
    finally:
        for w in (worker, worker32):
            if w is not None:
                w.close()
    results["machine"]["load_average_at_end"] = os.getloadavg()
    return results


def _measure(args, inputs, npz, n_events, net_dtype, worker, worker32, mesh) -> dict:
    import jax

    fns = diffana_functions(inputs, net_dtype, mesh=mesh)
    t0 = time.perf_counter()
    value, _ = jax.block_until_ready(fns["vg"]())
    first_call = time.perf_counter() - t0
    for fn in fns.values():  # warm-up (compiles)
        jax.block_until_ready(fn())
    row = {
        "events_per_sample": n_events,
        "net_dtype": net_dtype,
        "devices": mesh.size if mesh is not None else 1,
        "diffana": {"loss": float(value), "first_call_s": first_call},
    }
    kinds = ("step", "vg", "floor", "analysis")
    times = {("diffana", k): [] for k in kinds}
    if worker is not None:
        row["relaxed"] = worker.call(
            "setup_step", npz=npz, net_dtype=net_dtype, bandwidth=BANDWIDTH
        )
        worker.call("setup_analysis", n_events=n_events, n_bins=N_BINS, bandwidth=BANDWIDTH)
        times.update({("relaxed", k): [] for k in kinds})
    workers = {"relaxed": worker}
    if worker32 is not None and net_dtype == "float32":
        # relaxed in JAX's default 32-bit mode: network *and* statistics in float32
        row["relaxed_x32"] = worker32.call(
            "setup_step", npz=npz, net_dtype=net_dtype, bandwidth=BANDWIDTH
        )
        times.update({("relaxed_x32", k): [] for k in kinds if k != "analysis"})
        workers["relaxed_x32"] = worker32
    for _ in range(args.rounds):  # alternate: all libraries see the same load
        for k in kinds:
            times[("diffana", k)] += _time(fns[k], args.repeats)
            for lib, w in workers.items():
                if (lib, k) in times:
                    times[(lib, k)] += w.call("time", what=k, reps=args.repeats)["times"]
    for (lib, k), ts in times.items():
        row[lib][f"{k}_ms"] = 1e3 * float(np.median(ts))
        row[lib][f"{k}_all_ms"] = [1e3 * t for t in ts]
    for lib in ("diffana", "relaxed", "relaxed_x32"):
        if lib in row:
            r = row[lib]
            r["analysis_overhead"] = r["vg_ms"] / r["floor_ms"] - 1.0
            if "analysis_ms" in r:
                r["analysis_fraction_of_floor"] = r["analysis_ms"] / r["floor_ms"]
    for lib in ("relaxed", "relaxed_x32"):
        if lib in row:
            row[f"speedup_step_{lib}"] = row[lib]["step_ms"] / row["diffana"]["step_ms"]
            row[f"speedup_vg_{lib}"] = row[lib]["vg_ms"] / row["diffana"]["vg_ms"]
    _print_row(row)
    return row


def _print_row(row) -> None:
    d = row["diffana"]
    line = (
        f"events/sample={row['events_per_sample']:>6} net={row['net_dtype']}: "
        f"diffana step {d['step_ms']:8.1f} ms  vg {d['vg_ms']:8.1f} ms  "
        f"floor {d['floor_ms']:8.1f} ms  vg/floor-1 {100 * d['analysis_overhead']:+5.1f}%  "
        f"analysis alone {d['analysis_ms']:7.2f} ms = {100 * d['analysis_fraction_of_floor']:.2f}%"
        " of the floor"
    )
    print(line, flush=True)
    for lib in ("relaxed", "relaxed_x32"):
        if lib in row:
            r = row[lib]
            print(
                f"{'':>33}{lib:>11} step {r['step_ms']:8.1f} ms  vg {r['vg_ms']:8.1f} ms  "
                f"floor {r['floor_ms']:8.1f} ms  vg/floor-1 {100 * r['analysis_overhead']:+5.1f}%"
                + (f"  analysis alone {r['analysis_ms']:7.2f} ms" if "analysis_ms" in r else "")
                + f"  -> {lib}/diffana step {row[f'speedup_step_{lib}']:.2f}x, "
                f"CLs {r['loss']:.6g} (diffana {d['loss']:.6g})",
                flush=True,
            )


def summary(results) -> list[str]:
    """Headline ratios: like-for-like and diffana's policy (f32 net) vs relaxed (f64 net)."""
    lines = []
    by = {(r["events_per_sample"], r["net_dtype"]): r for r in results["rows"]}
    for (n, dt), row in sorted(by.items()):
        if dt != "float32":
            continue
        ref = by.get((n, "float64"))
        if ref is not None and "relaxed" in ref:
            lines.append(
                f"events/sample={n}: diffana (float32 network, float64 statistics) "
                f"{row['diffana']['step_ms']:.1f} ms vs relaxed (float64 throughout) "
                f"{ref['relaxed']['step_ms']:.1f} ms per step: "
                f"{ref['relaxed']['step_ms'] / row['diffana']['step_ms']:.2f}x"
            )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[2000])
    parser.add_argument("--net-dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternations diffana/relaxed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--python",
        default="/tmp/relaxed-venv/bin/python",
        help="interpreter with relaxed 0.4.0 (requirements-relaxed.txt); '' to skip",
    )
    parser.add_argument(
        "--relaxed-float32",
        action="store_true",
        help="also time relaxed in JAX's 32-bit mode (float32 statistics) for float32 networks",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=0,
        help="shard the events over this many devices (CPU: split the host into devices)",
    )
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.python and not Path(args.python).exists():
        print(f"no relaxed interpreter at {args.python}; measuring diffana only", file=sys.stderr)
        args.python = ""
    results = run(args)
    for line in summary(results):
        print(line)
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
