"""How diffana's step cost and memory scale with events, bins, nuisance parameters, channels.

Curves (jitted value + gradient, warm-up then the median of `--repeats` calls; the
compiled program's peak temporary memory from XLA's `memory_analysis()`):

* **events** (total over the four neos samples, 1e3 .. `--max-events`):
  - the neos step with a small network (2 -> 16 -> 16 -> 1, float32) so that the analysis
    part is visible next to the network;
  - the analysis part alone: given per-event summaries -> KDE histograms (4 bins) ->
    HistFactory model -> expected CLs, gradient w.r.t. the summaries; the same with
    relaxed 0.4.0 (`--python`, alternating with diffana) up to `--relaxed-max-events`;
  - the log-log slope of time and memory against events (1 = linear).
* **bins** (4 .. 200) at 1e5 events per sample: analysis part; also the memory at 1e6
  events per sample, which stays bounded (no events x edges arrays: the histogram is
  accumulated in chunks).
* **nuisance parameters** (1 .. 500): a 10-bin model with a signal normfactor and K
  background modifiers (histosys and normsys alternating), expected-CLs value + gradient
  w.r.t. the signal and background templates.
* **channels** (1 .. 20) of 4 bins each, a histosys shared by all channels.

Writes ``scaling.json`` and PNG plots into the output folder (default outside the
repository, ``/tmp/diffana-scaling``).

Usage:

    python benchmarks/bench_scaling.py [OUTDIR] [--quick] [--max-events 1e7]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

YIELDS = np.array([20.0, 100.0, 100.0, 100.0])
BANDWIDTH = 0.09


def _timed(fn, repeats):
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times


def _memory(jitted, *args):
    m = jitted.lower(*args).compile().memory_analysis()
    if m is None:
        return None
    return {
        "temp_bytes": int(m.temp_size_in_bytes),
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
    }


def summaries(n_per_sample: int):
    """Per-event summaries in [0, 1] of the four samples (the relaxed worker draws the same)."""
    rng = np.random.default_rng(0)
    s = rng.uniform(0.0, 1.0, (4, n_per_sample))
    s[0] = np.sqrt(s[0])  # signal peaks towards 1
    return s


def analysis_vg(n_per_sample: int, n_bins: int):
    """Jitted value+grad of summaries -> hist -> neos model -> CLs (diffana)."""
    import jax
    import jax.numpy as jnp

    from diffana import hf, losses, relax

    s = jnp.asarray(summaries(n_per_sample))
    edges = jnp.linspace(0.0, 1.0, n_bins + 1)
    scale = jnp.asarray(YIELDS / n_per_sample)

    def loss(s):
        h = jax.vmap(lambda v: relax.hist(v, edges, BANDWIDTH))(s) * scale[:, None] + 1e-3
        return losses.cls_loss(hf.correlated_background(h[0], h[1], h[2], h[3]))

    return jax.jit(jax.value_and_grad(loss)), (s,)


def step_vg(n_per_sample: int, hidden: int = 16):
    """Jitted value+grad of the neos step with a small float32 network (diffana)."""
    import jax
    import jax.numpy as jnp
    from bench_step import MEANS, make_inputs, neos_loss, network

    from diffana import relax

    inputs = make_inputs(1, layers=(2, hidden, hidden, 1))
    params = [
        (jnp.asarray(inputs[f"W{i}"], jnp.float32), jnp.asarray(inputs[f"b{i}"], jnp.float32))
        for i in range(3)
    ]
    rng = np.random.default_rng(0)
    x = jnp.asarray((rng.standard_normal((4, n_per_sample, 2)) + MEANS[:, None, :]), jnp.float32)
    edges = jnp.linspace(0.0, 1.0, 5)
    scale = jnp.asarray(YIELDS / n_per_sample)

    def loss(params, x):
        s = network(params, x.reshape(-1, 2)).astype(jnp.float64).reshape(4, n_per_sample)
        h = jax.vmap(lambda v: relax.hist(v, edges, BANDWIDTH))(s) * scale[:, None]
        return neos_loss(h)

    return jax.jit(jax.value_and_grad(loss)), (params, x)


def nuisance_vg(n_mod: int, n_bins: int = 10):
    import jax
    import jax.numpy as jnp

    from diffana import hf, losses

    x = np.linspace(0.0, 1.0, n_bins)
    sig = 10.0 * np.exp(-0.5 * ((x - 0.7) / 0.15) ** 2) + 0.5
    bkg = 60.0 * np.exp(-1.5 * x) + 8.0
    mods = []
    for k in range(n_mod):
        if k % 2 == 0:
            shape = 0.03 * np.cos((k // 2 + 1) * np.pi * x)
            hi, lo = bkg * (1 + shape), bkg * (1 - 0.8 * shape)
            mods.append(hf.histosys_from_variations(f"h{k}", hi.tolist(), lo.tolist()))
        else:
            mods.append({"name": f"n{k}", "type": "normsys", "data": {"hi": 1.02, "lo": 0.98}})
    spec = {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": sig.tolist(),
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {"name": "background", "data": bkg.tolist(), "modifiers": mods},
                ],
            }
        ]
    }
    model = hf.Model.from_pyhf(spec)

    def loss(y):
        m = model.with_yields({("SR", "signal"): y[0], ("SR", "background"): y[1]})
        return losses.cls_loss(m)

    return jax.jit(jax.value_and_grad(loss)), (jnp.asarray(np.stack([sig, bkg])),), model.npars


def channels_vg(n_channels: int, n_bins: int = 4):
    import jax
    import jax.numpy as jnp

    from diffana import hf, losses

    x = np.linspace(0.0, 1.0, n_bins)
    channels = []
    for c in range(n_channels):
        sig = (2.0 + c % 3) * (x + 0.2)
        bkg = 20.0 * np.exp(-x) + 2.0 + c
        hi, lo = bkg * (1 + 0.05 * (1 - x)), bkg * (1 - 0.04 * (1 - x))
        channels.append(
            {
                "name": f"ch{c:02d}",
                "samples": [
                    {
                        "name": "signal",
                        "data": sig.tolist(),
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": bkg.tolist(),
                        "modifiers": [hf.histosys_from_variations("shape", hi, lo)],
                    },
                ],
            }
        )
    model = hf.Model.from_pyhf({"channels": channels})
    names = [ch["name"] for ch in channels]
    sig0 = jnp.asarray([ch["samples"][0]["data"] for ch in channels])

    def loss(sig):
        m = model.with_yields({(n, "signal"): sig[i] for i, n in enumerate(names)})
        return losses.cls_loss(m)

    return jax.jit(jax.value_and_grad(loss)), (sig0,)


def _log_slope(xs, ys):
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    ok = (xs > 0) & (ys > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(xs[ok]), np.log(ys[ok]), 1)[0])


def run(args) -> dict:
    import jax

    import diffana  # noqa: F401

    res: dict = {
        "settings": {k: v for k, v in vars(args).items()},
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "load_average_at_start": os.getloadavg(),
    }
    reps = args.repeats
    totals = [int(t) for t in np.logspace(3, np.log10(args.max_events), args.points)]
    worker = None
    if args.python:
        from _relaxed_ref import RelaxedWorker

        worker = RelaxedWorker(args.python)

    # ---- events ---------------------------------------------------------------------------
    rows = []
    for total in totals:
        n = max(total // 4, 1)
        row = {"events": 4 * n}
        step, step_args = step_vg(n)
        row["step_s"], _ = _timed(lambda f=step, a=step_args: f(*a), reps)
        row["step_memory"] = _memory(step, *step_args)
        ana, ana_args = analysis_vg(n, 4)
        row["analysis_s"], ana_times = _timed(lambda f=ana, a=ana_args: f(*a), reps)
        row["analysis_memory"] = _memory(ana, *ana_args)
        if worker is not None and 4 * n <= args.relaxed_max_events:
            worker.call("setup_analysis", n_events=n, n_bins=4, bandwidth=BANDWIDTH)
            rel = worker.call("time", what="analysis", reps=reps)["times"]
            ours = _timed(lambda f=ana, a=ana_args: f(*a), reps)[1]  # alternate
            row["relaxed_analysis_s"] = float(np.median(rel))
            row["analysis_s"] = float(np.median([*ana_times, *ours]))
        rows.append(row)
        print(
            f"events {4 * n:>9}: step {1e3 * row['step_s']:9.2f} ms "
            f"(temp {row['step_memory']['temp_bytes'] / 2**20:8.1f} MiB)  analysis "
            f"{1e3 * row['analysis_s']:9.2f} ms "
            f"(temp {row['analysis_memory']['temp_bytes'] / 2**20:8.1f} MiB)"
            + (
                f"  relaxed analysis {1e3 * row['relaxed_analysis_s']:9.2f} ms"
                if "relaxed_analysis_s" in row
                else ""
            ),
            flush=True,
        )
        del step, step_args, ana, ana_args
        jax.clear_caches()
    res["events"] = rows
    big = [r for r in rows if r["events"] >= 1e5] or rows
    res["events_slopes"] = {
        "step_time": _log_slope([r["events"] for r in big], [r["step_s"] for r in big]),
        "analysis_time": _log_slope([r["events"] for r in big], [r["analysis_s"] for r in big]),
        "step_memory": _log_slope(
            [r["events"] for r in big], [r["step_memory"]["temp_bytes"] for r in big]
        ),
    }
    print(f"log-log slopes above 1e5 events (1 = linear): {res['events_slopes']}")

    # ---- bins -----------------------------------------------------------------------------
    rows = []
    for nb in args.bins:
        ana, ana_args = analysis_vg(args.bins_events, nb)
        t, _ = _timed(lambda f=ana, a=ana_args: f(*a), reps)
        big_ana, big_args = analysis_vg(args.bins_memory_events, nb)
        mem = _memory(big_ana, *big_args)
        rows.append({"bins": nb, "analysis_s": t, "memory_at_big": mem})
        dense = 4 * args.bins_memory_events * (nb + 1) * 8
        print(
            f"bins {nb:>4}: analysis {1e3 * t:9.2f} ms at {4 * args.bins_events} events; "
            f"temp memory at {4 * args.bins_memory_events} events "
            f"{mem['temp_bytes'] / 2**20:8.1f} MiB (an events x edges array: "
            f"{dense / 2**20:.0f} MiB)",
            flush=True,
        )
        jax.clear_caches()
    res["bins"] = rows

    # ---- nuisance parameters ----------------------------------------------------------------
    rows = []
    for k in args.nuisances:
        fn, fargs, npars = nuisance_vg(k)
        t, _ = _timed(lambda f=fn, a=fargs: f(*a), reps)
        rows.append({"modifiers": k, "npars": npars, "cls_vg_s": t})
        print(f"nuisance parameters {k:>4} ({npars} pars): cls value+grad {1e3 * t:9.2f} ms")
        jax.clear_caches()
    res["nuisances"] = rows

    # ---- channels ---------------------------------------------------------------------------
    rows = []
    for c in args.channels:
        fn, fargs = channels_vg(c)
        t, _ = _timed(lambda f=fn, a=fargs: f(*a), reps)
        rows.append({"channels": c, "bins": 4 * c, "cls_vg_s": t})
        print(f"channels {c:>3} ({4 * c} bins): cls value+grad {1e3 * t:9.2f} ms", flush=True)
        jax.clear_caches()
    res["channels"] = rows
    if worker is not None:
        worker.close()
    res["load_average_at_end"] = os.getloadavg()
    return res


def plot(res, outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    ev = res["events"]
    n = np.array([r["events"] for r in ev], float)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=90)
    ax = axes[0]
    ax.loglog(n, [r["step_s"] for r in ev], "o-", label="step (net 2-16-16-1)")
    ax.loglog(n, [r["analysis_s"] for r in ev], "s-", label="analysis part (diffana)")
    rel = [(r["events"], r["relaxed_analysis_s"]) for r in ev if "relaxed_analysis_s" in r]
    if rel:
        ax.loglog(*zip(*rel, strict=True), "^--", label="analysis part (relaxed 0.4)")
    ref = np.array([r["step_s"] for r in ev])
    ax.loglog(n, ref[-1] * n / n[-1], ":", color="gray", label="linear")
    ax.set_xlabel("events (4 samples)")
    ax.set_ylabel("value + gradient [s]")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.loglog(n, [r["step_memory"]["temp_bytes"] / 2**20 for r in ev], "o-", label="step")
    ax.loglog(n, [r["analysis_memory"]["temp_bytes"] / 2**20 for r in ev], "s-", label="analysis")
    ax.set_xlabel("events (4 samples)")
    ax.set_ylabel("peak temporary memory [MiB]")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(outdir / "scaling_events.png")
    fig.savefig(paths[-1])
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), dpi=90)
    b = res["bins"]
    axes[0].plot([r["bins"] for r in b], [1e3 * r["analysis_s"] for r in b], "o-")
    axes[0].set_xlabel("bins")
    axes[0].set_ylabel(f"analysis value+grad [ms], {4 * res['settings']['bins_events']} events")
    k = res["nuisances"]
    axes[1].loglog([r["npars"] for r in k], [1e3 * r["cls_vg_s"] for r in k], "o-")
    axes[1].set_xlabel("parameters (10 bins)")
    axes[1].set_ylabel("expected CLs value+grad [ms]")
    c = res["channels"]
    axes[2].plot([r["channels"] for r in c], [1e3 * r["cls_vg_s"] for r in c], "o-")
    axes[2].set_xlabel("channels (4 bins each)")
    axes[2].set_ylabel("expected CLs value+grad [ms]")
    fig.tight_layout()
    paths.append(outdir / "scaling_model.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", nargs="?", default="/tmp/diffana-scaling")
    parser.add_argument("--quick", action="store_true", help="small grids (a few minutes)")
    parser.add_argument("--max-events", type=float, default=1e7)
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bins", type=int, nargs="+", default=[4, 10, 20, 50, 100, 200])
    parser.add_argument("--bins-events", type=int, default=25_000, help="events per sample")
    parser.add_argument("--bins-memory-events", type=int, default=250_000)
    parser.add_argument("--nuisances", type=int, nargs="+", default=[1, 5, 20, 50, 100, 200, 500])
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 2, 5, 10, 20])
    parser.add_argument("--python", default="/tmp/relaxed-venv/bin/python")
    parser.add_argument("--relaxed-max-events", type=float, default=1e6)
    args = parser.parse_args(argv)
    if args.quick:
        args.max_events = min(args.max_events, 1e5)
        args.points, args.repeats = 3, max(3, min(args.repeats, 3))
        args.bins, args.nuisances, args.channels = [4, 20, 100], [1, 20, 100], [1, 5]
        args.bins_events, args.bins_memory_events = 5_000, 50_000
    if args.python and not Path(args.python).exists():
        print(f"no relaxed interpreter at {args.python}; skipping relaxed", file=sys.stderr)
        args.python = ""
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    res = run(args)
    tmp = outdir / "scaling.json.tmp"
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, outdir / "scaling.json")
    for p in plot(res, outdir):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
