"""Speed of diffana.infer against pyhf (jax and numpy backends) on the same model.

A 10-bin model with a signal normfactor and two background systematics (a histosys and
a normsys). Measured in one run, after warm-up, as the median of repeated calls:

* latency of one jitted `hypotest` (CLs with the expected band), and of value + grad of
  CLs with respect to the signal yields (diffana only: pyhf cannot differentiate its
  fits);
* throughput of `hypotest` over batches of 100 and 1000 pseudo-datasets: one vmapped,
  jitted call for diffana (compiled with JAX's defaults, and with
  `compiler_options=diffana.compiler_options()`); pyhf has no batched fit, so its
  throughput is that of repeated single calls (measured on a subset of the batch and
  scaled).

Run: `python benchmarks/bench_infer.py [--repeats 7] [--json out.json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pyhf

import diffana
import diffana.hf as hf
import diffana.infer as infer

NBINS = 10


def workspace_spec() -> dict:
    x = np.linspace(0.0, 1.0, NBINS)
    signal = 12.0 * np.exp(-0.5 * ((x - 0.6) / 0.12) ** 2) + 0.5
    background = 80.0 * np.exp(-2.0 * x) + 10.0
    hi = background * (1.0 + 0.08 * (1.0 - x))
    lo = background * (1.0 - 0.06 * (1.0 - x))
    r = lambda a: [float(v) for v in a]  # noqa: E731
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": r(signal),
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": r(background),
                        "modifiers": [
                            {
                                "name": "bkg_shape",
                                "type": "histosys",
                                "data": {"hi_data": r(hi), "lo_data": r(lo)},
                            },
                            {
                                "name": "bkg_norm",
                                "type": "normsys",
                                "data": {"hi": 1.05, "lo": 0.95},
                            },
                        ],
                    },
                ],
            }
        ],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
        "observations": [{"name": "SR", "data": r(np.round(background + 0.5 * signal))}],
        "version": "1.0.0",
    }


def median_time(fn, repeats: int, number: int = 1) -> float:
    """Median wall time of `number` calls of `fn`, over `repeats` repetitions (seconds/call)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pyhf-calls", type=int, default=10, help="pyhf calls per batch estimate")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pyhf logs about qmu bounds etc.

    spec = workspace_spec()
    model = hf.Model.from_pyhf(spec)
    data = hf.workspace_data(spec, model)
    poi = 1.0
    key = jax.random.PRNGKey(0)
    lam = model.expected_actualdata(model.init.at[model.poi_index].set(0.0))
    results: dict[str, float] = {}

    # ---- diffana -----------------------------------------------------------------------
    single = jax.jit(lambda d: infer.hypotest(poi, d, model, return_expected_set=True))
    jax.block_until_ready(single(data))
    results["diffana_latency_s"] = median_time(
        lambda: jax.block_until_ready(single(data)), args.repeats, number=20
    )
    sig0 = model.nominal[model.samples.index("signal")]

    def cls_of_signal(s):
        return infer.hypotest(poi, data, model.with_yields({("SR", "signal"): s}))

    vg = jax.jit(jax.value_and_grad(cls_of_signal))
    jax.block_until_ready(vg(sig0))
    results["diffana_value_grad_latency_s"] = median_time(
        lambda: jax.block_until_ready(vg(sig0)), args.repeats, number=20
    )

    def hypotests(d):
        return infer.hypotest(poi, d, model, return_expected_set=True)

    # JAX's default compilation, and with the options diffana recommends for batched fits
    jitted = {
        "": jax.jit(jax.vmap(hypotests)),
        "_opt": jax.jit(jax.vmap(hypotests), compiler_options=diffana.compiler_options()),
    }
    for n in (100, 1000):
        toys = jax.random.poisson(jax.random.fold_in(key, n), lam, (n, model.nbins))
        batch = jnp.concatenate(
            [toys.astype(jnp.float64), jnp.broadcast_to(model.auxdata, (n, model.nauxdata))], 1
        )
        for sfx, batched in jitted.items():
            jax.block_until_ready(batched(batch))
            t = median_time(lambda b=batch, f=batched: jax.block_until_ready(f(b)), args.repeats)
            results[f"diffana_throughput{sfx}_{n}_per_s"] = n / t

    # ---- pyhf ----------------------------------------------------------------------------
    np_data = np.asarray(data)
    toys_np = np.asarray(jax.random.poisson(key, lam, (args.pyhf_calls, model.nbins)), float)
    for backend in ("jax", "numpy"):
        pyhf.set_backend(backend)
        ws = pyhf.Workspace(spec)
        pmodel = ws.model()
        pdata = pyhf.tensorlib.astensor(ws.data(pmodel))
        aux = list(pmodel.config.auxdata)

        def call(d=pdata, m=pmodel):
            out = pyhf.infer.hypotest(poi, d, m, return_expected_set=True)
            return float(out[0])

        call()  # warm-up (jit tracing in the jax backend)
        results[f"pyhf_{backend}_latency_s"] = median_time(call, args.repeats)
        batch = [pyhf.tensorlib.astensor(list(t) + aux) for t in toys_np]
        for d in batch[:2]:
            call(d)
        per_call = median_time(lambda b=batch: [call(d) for d in b], max(3, args.repeats // 2))
        results[f"pyhf_{backend}_throughput_per_s"] = len(batch) / per_call
    pyhf.set_backend("numpy")

    # cross-check: the same CLs
    pyhf_cls = pyhf.infer.hypotest(poi, np_data, pyhf.Workspace(spec).model())
    results["cls_diffana"] = float(single(data)[0])
    results["cls_pyhf_numpy"] = float(pyhf_cls)

    # ---- report -------------------------------------------------------------------------
    dev = jax.devices()[0]
    print(
        f"device: {dev.platform} ({dev.device_kind}); model: {NBINS} bins, 2 systematics,"
        f" {model.npars} parameters"
    )
    print(f"CLs(mu=1): diffana {results['cls_diffana']:.6f}, pyhf {results['cls_pyhf_numpy']:.6f}")
    lat = results["diffana_latency_s"]
    print(f"hypotest latency      diffana {lat * 1e3:8.3f} ms")
    for b in ("jax", "numpy"):
        pl = results[f"pyhf_{b}_latency_s"]
        print(f"                      pyhf[{b:5s}] {pl * 1e3:8.3f} ms   ratio {pl / lat:8.1f}x")
    vgl = results["diffana_value_grad_latency_s"]
    print(f"value+grad latency    diffana {vgl * 1e3:8.3f} ms   (pyhf: not differentiable)")
    for n in (100, 1000):
        for sfx, label in (("", "diffana "), ("_opt", "diffana+")):
            thr = results[f"diffana_throughput{sfx}_{n}_per_s"]
            print(f"throughput n={n:<5d}  {label}{thr:10.1f} hypotests/s")
            for b in ("jax", "numpy"):
                pt = results[f"pyhf_{b}_throughput_per_s"]
                print(f"{'':22s}pyhf[{b:5s}] {pt:10.1f} hypotests/s   ratio {thr / pt:8.1f}x")
    print("(diffana+: jitted with compiler_options=diffana.compiler_options())")
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
