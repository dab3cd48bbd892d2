"""Speed of diffana.hf against pyhf (jax and numpy backends), measured in the same run.

Two workspaces:

- small: 1 channel x 10 bins, signal + background, 2 systematics (normsys, histosys);
- large: 4 channels x 50 bins, 3 samples each, 10 normsys + 10 histosys shared across
  channels, lumi, a staterror per channel (>= 200 nuisance parameters).

Timed: the jitted logpdf and its jitted gradient (value_and_grad), and building the model
(eagerly from a spec of numbers; diffana also inside jit from traced yields, alone and with
the gradient of the logpdf with respect to all yields - which pyhf cannot do). Each figure
is the median (and the fastest) over repeats of the mean time per call, after a warm-up
(compilation excluded). pyhf's numpy backend has no gradient.

Run: ``python benchmarks/bench_hf.py [--repeats 7] [--json results.json]``
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pyhf

import diffana.hf as hf


def small_workspace() -> dict:
    rng = np.random.default_rng(1)
    bkg = rng.uniform(20.0, 100.0, 10)
    sig = rng.uniform(1.0, 10.0, 10)
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
                    {
                        "name": "background",
                        "data": bkg.tolist(),
                        "modifiers": [
                            {"name": "xsec", "type": "normsys", "data": {"hi": 1.1, "lo": 0.92}},
                            {
                                "name": "jes",
                                "type": "histosys",
                                "data": {
                                    "hi_data": (bkg * rng.uniform(1.0, 1.1, 10)).tolist(),
                                    "lo_data": (bkg * rng.uniform(0.9, 1.0, 10)).tolist(),
                                },
                            },
                        ],
                    },
                ],
            }
        ]
    }
    return _as_workspace(spec, rng)


def large_workspace(n_channels: int = 4, nbins: int = 50, n_norm: int = 10, n_hist: int = 10):
    rng = np.random.default_rng(2)
    channels = []
    for c in range(n_channels):
        samples = []
        for s, scale in (("signal", 5.0), ("bkg1", 60.0), ("bkg2", 30.0)):
            nominal = rng.uniform(0.2, 1.0, nbins) * scale
            mods = []
            if s == "signal":
                mods.append({"name": "mu", "type": "normfactor", "data": None})
            mods.append({"name": "lumi", "type": "lumi", "data": None})
            for k in range(n_norm):
                if rng.uniform() < 0.6:
                    lo, hi = rng.uniform(0.85, 0.99), rng.uniform(1.01, 1.15)
                    mods.append(
                        {"name": f"norm{k}", "type": "normsys", "data": {"hi": hi, "lo": lo}}
                    )
            for k in range(n_hist):
                if rng.uniform() < 0.6:
                    hi = nominal * rng.uniform(1.0, 1.08, nbins)
                    lo = nominal * rng.uniform(0.92, 1.0, nbins)
                    mods.append(
                        {"name": f"shape{k}", "type": "histosys",
                         "data": {"hi_data": hi.tolist(), "lo_data": lo.tolist()}}
                    )  # fmt: skip
            if s != "signal":
                unc = np.sqrt(nominal) * 0.5
                mods.append({"name": f"stat_ch{c}", "type": "staterror", "data": unc.tolist()})
            samples.append({"name": s, "data": nominal.tolist(), "modifiers": mods})
        channels.append({"name": f"ch{c}", "samples": samples})
    spec = {
        "channels": channels,
        "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "inits": [1.0],
             "bounds": [[0.9, 1.1]]}
        ],
    }  # fmt: skip
    return _as_workspace(spec, rng)


def _as_workspace(spec: dict, rng: np.random.Generator) -> dict:
    model = hf.Model.from_pyhf(spec)
    observed = rng.poisson(np.asarray(model.expected_actualdata(model.init))).astype(float)
    return {
        "channels": spec["channels"],
        "measurements": [
            {"name": "meas", "config": {"poi": "mu", "parameters": spec.get("parameters", [])}}
        ],
        "observations": [
            {"name": c, "data": observed[sl].tolist()} for c, sl in model.channel_slices.items()
        ],
        "version": "1.0.0",
    }


class Timing(NamedTuple):
    """Seconds per call: median over repeats, and the fastest repeat."""

    median: float
    fastest: float


def timeit(fn: Callable[[], object], repeats: int, min_time: float = 0.2) -> Timing:
    """Mean seconds per call over `repeats` repeats, after a warm-up."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    jax.block_until_ready(fn())
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(min_time / once))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            out = fn()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / number)
    return Timing(statistics.median(times), min(times))


def bench(name: str, workspace: dict, repeats: int) -> dict:
    results: dict[str, Timing | float | int | str] = {"workspace": name}
    model = hf.Model.from_pyhf(workspace)
    data = hf.workspace_data(workspace, model)
    pars = model.init + 0.01
    results.update(npars=model.npars, nbins=model.nbins)

    logpdf = jax.jit(lambda p, d: model.logpdf(p, d))
    value_and_grad = jax.jit(jax.value_and_grad(lambda p, d: model.logpdf(p, d)))
    results["diffana logpdf"] = timeit(lambda: logpdf(pars, data), repeats)
    results["diffana grad"] = timeit(lambda: value_and_grad(pars, data), repeats)
    results["diffana build"] = timeit(lambda: hf.Model.from_pyhf(workspace), repeats)

    # building inside jit from traced yields (the differentiable-analysis path)
    nominal = {
        (c["name"], s["name"]): jnp.asarray(s["data"])
        for c in workspace["channels"]
        for s in c["samples"]
    }

    @jax.jit
    def build_and_evaluate(yields: dict) -> jax.Array:
        spec = copy.copy(workspace)
        spec["channels"] = [
            {**c, "samples": [{**s, "data": yields[(c["name"], s["name"])]} for s in c["samples"]]}
            for c in workspace["channels"]
        ]
        m = hf.Model.from_pyhf(spec)
        return m.logpdf(pars, data)

    results["diffana jit(build+logpdf)"] = timeit(lambda: build_and_evaluate(nominal), repeats)
    grad_yields = jax.jit(jax.value_and_grad(build_and_evaluate))
    results["diffana jit(grad yields)"] = timeit(lambda: grad_yields(nominal), repeats)

    values = {"diffana": float(logpdf(pars, data))}
    for backend in ("jax", "numpy"):
        timings, value = _bench_pyhf(
            backend, workspace, np.asarray(pars), np.asarray(data), repeats
        )
        results.update(timings)
        values[f"pyhf-{backend}"] = value
    spread = max(values.values()) - min(values.values())
    results["max |logpdf difference|"] = spread
    if spread > 1e-8 * abs(values["diffana"]):
        raise AssertionError(f"{name}: logpdf values disagree: {values}")
    return results


def _bench_pyhf(
    backend: str, workspace: dict, pars: np.ndarray, data: np.ndarray, repeats: int
) -> tuple[dict[str, Timing], float]:
    pyhf.set_backend(backend, precision="64b")
    ws = pyhf.Workspace(copy.deepcopy(workspace))
    model = ws.model()
    timings: dict[str, Timing] = {f"pyhf-{backend} build": timeit(ws.model, max(repeats // 2, 3))}
    if backend == "jax":
        p, d = jnp.asarray(pars), jnp.asarray(data)
        logpdf = jax.jit(lambda p, d: model.logpdf(p, d)[0])
        value_and_grad = jax.jit(jax.value_and_grad(lambda p, d: model.logpdf(p, d)[0]))
        timings["pyhf-jax logpdf"] = timeit(lambda: logpdf(p, d), repeats)
        timings["pyhf-jax grad"] = timeit(lambda: value_and_grad(p, d), repeats)
        value = float(logpdf(p, d))
    else:
        timings["pyhf-numpy logpdf"] = timeit(lambda: model.logpdf(pars, data), repeats)
        value = float(model.logpdf(pars, data)[0])
    pyhf.set_backend("numpy", precision="64b")
    return timings, value


def report(results: dict) -> None:
    name = results["workspace"]
    print(f"\n== {name}: {results['npars']} parameters, {results['nbins']} bins ==")
    print(f"{'':28s}{'median':>14s}{'fastest':>14s}   (per call)")
    for key, value in results.items():
        if isinstance(value, Timing):
            print(f"{key:28s}{value.median * 1e6:11.1f} us{value.fastest * 1e6:11.1f} us")
    print("ratios pyhf / diffana (> 1: diffana is faster), of medians [of fastest]")
    for what in ("logpdf", "grad", "build"):
        ours = results[f"diffana {what}"]
        for backend in ("jax", "numpy"):
            key = f"pyhf-{backend} {what}"
            if key in results:
                theirs = results[key]
                print(
                    f"  {what:8s} vs {key:20s} {theirs.median / ours.median:8.1f}x"
                    f"  [{theirs.fastest / ours.fastest:.1f}x]"
                )
    print(f"  logpdf values agree to {results['max |logpdf difference|']:.1e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timing repeats (>= 5)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    repeats = max(args.repeats, 5)
    print(f"jax {jax.__version__} ({jax.default_backend()}), pyhf {pyhf.__version__}, "
          f"{os.cpu_count()} CPU cores")  # fmt: skip
    all_results = [
        bench("small", small_workspace(), repeats),
        bench("large", large_workspace(), repeats),
    ]
    for results in all_results:
        report(results)
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(
                [{k: (v._asdict() if isinstance(v, Timing) else v) for k, v in r.items()}
                 for r in all_results],
                handle,
                indent=2,
            )  # fmt: skip
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
