"""Forward+backward throughput of `diffana.relax.hist` against this machine's limit and relaxed.

For each (events, bins) the script times `jax.value_and_grad` of a linear function of the
kernel-density histogram with respect to the events, the edges and the bandwidth (the
arguments `relaxed.hist` also has), in float64, jitted: one warm-up call, then the median
of `--repeats` calls. It reports

* events/s of diffana's forward+backward pass;
* the fraction of this machine's limit, measured in the same run: the time of a bare
  jitted `jax.scipy.special.ndtr` pass over events x edges values (summed, so that no
  output is written), divided by the time of diffana's forward+backward. The limit is
  measured on at most 2**24 values and scaled linearly (it is linear: one elementwise pass),
  so that it never needs events x edges memory. diffana evaluates the normal CDF through
  `erfc`, which is cheaper than `ndtr` on CPU, so the fraction can exceed 1; the bare
  `erfc` pass (the kernel diffana actually uses) is reported too;
* `relaxed.hist` (relaxed 0.4, which needs an old JAX stack): in this interpreter when
  `import relaxed` works, else in another one given with `--python`, e.g. a venv made
  from `benchmarks/requirements-relaxed.txt`; the same events are sent to it through a
  temporary file and its counts and gradients are compared with diffana's. relaxed
  materialises events x edges arrays, so it is run only up to `--relaxed-max-values`.

Usage:

    python benchmarks/bench_relax.py                       # full grid, 1e4..1e7 events
    python benchmarks/bench_relax.py --quick               # small grid, a minute
    python benchmarks/bench_relax.py --python /tmp/relaxed-venv/bin/python --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LIMIT_MAX_VALUES = 2**24


def _median_time(fn, args, repeats):
    import jax

    jax.block_until_ready(fn(*args))  # warm-up (compiles)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _data(n_events, n_bins, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size=n_events)
    edges = np.linspace(-3.0, 3.0, n_bins + 1)
    coef = rng.uniform(0.5, 1.5, size=n_bins)
    bandwidth = 0.5 * (edges[1] - edges[0])
    return x, edges, coef, bandwidth


def _value_and_grad(hist_fn, coef):
    import jax
    import jax.numpy as jnp

    def loss(x, edges, bandwidth):
        return jnp.sum(hist_fn(x, edges, bandwidth) * coef)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def _limit_time(kind, n_values, repeats):
    """Seconds for one bare jitted pass of `kind` over n_values float64 values."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import erfc, ndtr

    m = min(n_values, LIMIT_MAX_VALUES)
    z = jnp.asarray(np.random.default_rng(1).normal(0.0, 3.0, size=m))
    op = {"ndtr": ndtr, "erfc": erfc}[kind]
    t = _median_time(jax.jit(lambda z: jnp.sum(op(z))), (z,), repeats)
    return t * n_values / m


def _relaxed_worker(in_path, out_path, repeats):
    """Runs in the relaxed interpreter: time relaxed.hist and return its numbers."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import relaxed

    data = np.load(in_path)
    x, edges, coef = data["x"], data["edges"], data["coef"]
    bandwidth = float(data["bandwidth"])
    vg = _value_and_grad(relaxed.hist, coef)
    t = _median_time(vg, (x, edges, bandwidth), repeats)
    counts = np.asarray(relaxed.hist(x, edges, bandwidth))
    _, (gx, ge, gh) = vg(x, edges, bandwidth)
    np.savez(
        out_path, time=t, counts=counts, gx=np.asarray(gx), ge=np.asarray(ge), gh=np.asarray(gh)
    )
    json.dump({"relaxed": relaxed.__version__, "jax": jax.__version__}, sys.stdout)


def _relaxed_in_subprocess(python, x, edges, coef, bandwidth, repeats):
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, x=x, edges=edges, coef=coef, bandwidth=bandwidth)
        cmd = [python, __file__, "--relaxed-worker", str(src), str(dst), "--repeats"]
        proc = subprocess.run(
            [*cmd, str(repeats)], capture_output=True, text=True, cwd=tmp, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"relaxed worker failed:\n{proc.stderr[-2000:]}")
        out = dict(np.load(dst))
        out["versions"] = json.loads(proc.stdout.strip().splitlines()[-1])
        return out


def _relaxed_in_process(x, edges, coef, bandwidth, repeats):
    import relaxed

    vg = _value_and_grad(relaxed.hist, coef)
    t = _median_time(vg, (x, edges, bandwidth), repeats)
    _, (gx, ge, gh) = vg(x, edges, bandwidth)
    counts = np.asarray(relaxed.hist(x, edges, bandwidth))
    import jax

    return {
        "time": t,
        "counts": counts,
        "gx": np.asarray(gx),
        "ge": np.asarray(ge),
        "gh": np.asarray(gh),
        "versions": {"relaxed": relaxed.__version__, "jax": jax.__version__},
    }


def _relaxed_backend(python):
    if python:
        return "subprocess"
    try:
        import relaxed  # noqa: F401
    except Exception:
        return None
    return "in-process"


def _max_rel_diff(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = max(np.max(np.abs(b)), 1e-300)
    return float(np.max(np.abs(a - b)) / scale)


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=float, nargs="+", default=[1e4, 1e5, 1e6, 1e7])
    parser.add_argument("--bins", type=int, nargs="+", default=[5, 20, 100])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--python", help="interpreter with relaxed installed (old JAX stack)")
    parser.add_argument("--relaxed-max-values", type=float, default=5e7)
    parser.add_argument("--quick", action="store_true", help="1e4..1e6 events, 5 and 20 bins")
    parser.add_argument("--json", help="write the results to this file (atomically)")
    parser.add_argument("--relaxed-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 5 and not args.relaxed_worker:
        parser.error("--repeats must be >= 5 (median of at least five runs)")
    if args.relaxed_worker:
        _relaxed_worker(*args.relaxed_worker, args.repeats)
        return
    if args.quick:
        args.events, args.bins = [1e4, 1e5, 1e6], [5, 20]

    import jax

    import diffana
    from diffana.relax import hist

    assert diffana.x64_enabled()
    backend = _relaxed_backend(args.python)
    device = jax.devices()[0]
    print(
        f"diffana {diffana.__version__}, jax {jax.__version__}, device {device.platform} "
        f"({device.device_kind}), {os.cpu_count()} CPU cores, {platform.processor() or '?'}"
    )
    print("relaxed: " + ({None: "not available"}.get(backend) or f"{backend}"))
    header = (
        f"{'events':>9} {'bins':>5} {'fwd+bwd s':>10} {'events/s':>10} {'ndtr lim s':>10} "
        f"{'frac ndtr':>9} {'frac erfc':>9} {'relaxed s':>10} {'speed-up':>8} "
        f"{'max rel diff':>12} {'peak RSS MiB':>12}"
    )
    print(header)
    print("-" * len(header))
    rows, versions = [], None
    for n_events in (int(n) for n in args.events):
        for n_bins in args.bins:
            x, edges, coef, bandwidth = _data(n_events, n_bins)
            vg = _value_and_grad(hist, coef)
            t = _median_time(vg, (x, edges, bandwidth), args.repeats)
            n_values = n_events * (n_bins + 1)
            t_ndtr = _limit_time("ndtr", n_values, args.repeats)
            t_erfc = _limit_time("erfc", n_values, args.repeats)
            row = {
                "events": n_events,
                "bins": n_bins,
                "diffana_s": t,
                "events_per_s": n_events / t,
                "ndtr_limit_s": t_ndtr,
                "fraction_of_ndtr_limit": t_ndtr / t,
                "fraction_of_erfc_pass": t_erfc / t,
            }
            rel = "n/a"
            if backend and n_values <= args.relaxed_max_values:
                run = (
                    _relaxed_in_subprocess(args.python, x, edges, coef, bandwidth, args.repeats)
                    if backend == "subprocess"
                    else _relaxed_in_process(x, edges, coef, bandwidth, args.repeats)
                )
                versions = run["versions"]
                _, (gx, ge, gh) = vg(x, edges, bandwidth)
                diff = max(
                    _max_rel_diff(hist(x, edges, bandwidth), run["counts"]),
                    _max_rel_diff(gx, run["gx"]),
                    _max_rel_diff(ge, run["ge"]),
                    _max_rel_diff(gh, run["gh"]),
                )
                row.update(relaxed_s=float(run["time"]), max_rel_diff=diff)
                rel = f"{row['relaxed_s']:10.4f} {row['relaxed_s'] / t:8.2f} {diff:12.1e}"
            elif backend:
                rel = f"{'skipped (memory: events x edges arrays)':>32}"
            row["peak_rss_mib"] = _peak_rss_mib()
            rows.append(row)
            print(
                f"{n_events:9.0e} {n_bins:5d} {t:10.4f} {n_events / t:10.3e} {t_ndtr:10.4f} "
                f"{t_ndtr / t:9.2f} {t_erfc / t:9.2f} {rel:>32} {row['peak_rss_mib']:12.0f}",
                flush=True,
            )
    if versions:
        print(f"relaxed reference: relaxed {versions['relaxed']}, jax {versions['jax']}")
    print(
        "fwd+bwd: value_and_grad wrt events, edges and bandwidth (float64, jitted), median of "
        f"{args.repeats}; frac ndtr = (bare ndtr pass over events x edges values) / fwd+bwd; "
        "speed-up = relaxed / diffana."
    )
    if args.json:
        result = {
            "device": f"{device.platform} ({device.device_kind})",
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "relaxed": versions,
            "repeats": args.repeats,
            "rows": rows,
        }
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
