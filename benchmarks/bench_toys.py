"""Toy-based hypothesis tests: diffana against pyhf's toy calculator, in one run.

For each model, `hypotest(mu, data, model, calctype="toybased", return_tail_probs=True,
return_expected_set=True)` (qtilde) with

- diffana: a first call (compilation included; `--ntoys` toys, or one chunk of
  `--chunk-large` toys on the published workspaces), then `--ntoys` toys with another
  key, timed ("warm": the compiled functions reused),
- with `--repeats R`, each tool's timed run is repeated R times on the same toys and the
  best is reported (all times are in the JSON): on a machine whose speed drifts by tens
  of percent within minutes, the best of a few runs of each is the fairer comparison
  (without `--pyhf-warmup`, pyhf-jax's first run compiles and the later ones do not),
- pyhf 0.7.6 with the numpy and the jax backends (`track_progress=False`), fewer toys
  (`--pyhf-ntoys`, `--pyhf-ntoys-large` for the published workspaces): pyhf fits every
  toy one after the other, so its time per toy is measured on fewer toys and the ratio
  is taken per toy (extrapolated, as said in the table). pyhf's fits of a toy can fail
  (scipy's SLSQP raising `FailedMinimization`, seen on 1Lbb); the script then records the
  failure and reruns pyhf with the next numpy seed (at most three attempts).

pyhf's toy calculator calls `np.percentile(..., interpolation=...)` (numpy backend) and
`jnp.percentile(..., interpolation=...)` (jax backend), a keyword numpy 2 and current
JAX no longer take; the script patches both backends' `percentile` to pass `method=`
instead (the same shim as `tests/infer/make_pyhf_toy_reference.py`, there for numpy).

Models: the 3-bin model of the tests, a 10-bin model (signal, background with a shapesys
per bin: 11 parameters), and the published sbottom (67 parameters) and 1Lbb (126)
workspaces from `../shared/data/workspaces` (skipped when absent).

Usage:

    python benchmarks/bench_toys.py [--ntoys 10000] [--ntoys-large 1000] [--json out.json]
    python benchmarks/bench_toys.py --only sbottom --ntoys-large 2000 \
        --pyhf-ntoys-large 100 --pyhf-backends jax     # agreement with pyhf on sbottom
    python benchmarks/bench_toys.py --only sbottom --ntoys-large 2000 \
        --pyhf-ntoys-large 200 --pyhf-backends jax --pyhf-warmup   # warm pyhf-jax
    python benchmarks/bench_toys.py --only sbottom 1Lbb --ntoys-large 1000 \
        --pyhf-ntoys-large 100 --pyhf-backends jax --pyhf-warmup --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from diffana import hf, infer

ROOT = Path(__file__).resolve().parents[1]
WORKSPACES = ROOT.parent / "shared" / "data" / "workspaces"
PUBLISHED = {
    "sbottom": "atlas_sbottom_multib_SUSY-2018-31_RegionA_synthsig.json",
    "1Lbb": "atlas_1Lbb_SUSY-2019-08_C1N2_Wh_hbb_600_300.json",
}


def shim_pyhf_percentile() -> None:
    """Make pyhf 0.7.6's `percentile` work with numpy >= 2 and current JAX, which take
    `method=` where pyhf passes `interpolation=`."""
    import pyhf

    def percentile_numpy(self, tensor_in, q, axis=None, interpolation="linear"):
        return np.percentile(tensor_in, q, axis=axis, method=interpolation)

    def percentile_jax(self, tensor_in, q, axis=None, interpolation="linear"):
        return jnp.percentile(tensor_in, q, axis=axis, method=interpolation)

    pyhf.tensor.numpy_backend.percentile = percentile_numpy
    pyhf.tensor.jax_backend.percentile = percentile_jax


def small_models() -> dict:
    three = hf.uncorrelated_background([5.0, 8.0, 4.0], [20.0, 30.0, 15.0], [3.0, 4.0, 2.5])
    ten_sig = np.linspace(2.0, 10.0, 10)
    ten_bkg = np.linspace(50.0, 20.0, 10)
    ten = hf.uncorrelated_background(ten_sig.tolist(), ten_bkg.tolist(), (0.1 * ten_bkg).tolist())
    three_obs = [22.0, 33.0, 14.0]
    ten_obs = (ten_bkg + 1.0).round().tolist()
    return {  # pyhf workspaces with the same observations
        "3-bin": (three.to_pyhf(three_obs), three, three_obs),
        "10-bin": (ten.to_pyhf(ten_obs), ten, ten_obs),
    }


def published_models() -> dict:
    out = {}
    for name, file in PUBLISHED.items():
        path = WORKSPACES / file
        if not path.is_file():
            print(f"# {name}: {path} not found, skipped", file=sys.stderr)
            continue
        spec = json.loads(path.read_text())
        model = hf.Model.from_pyhf(spec)
        data = hf.workspace_data(spec, model, include_auxdata=False)
        out[name] = (spec, model, np.asarray(data).tolist())
    return out


def _unconverged(caught) -> int:
    n = 0
    for w in caught:
        m = re.search(r"\((\d+) of \d+\)", str(w.message))
        if m and "toy fits" in str(w.message):
            n += int(m.group(1))
    return n


def time_diffana(
    model, observed, ntoys: int, chunk: int, first_ntoys: int, repeats: int = 1
) -> dict:
    data = jnp.asarray(list(observed) + model.auxdata.tolist())

    def run(n, seed):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            out = infer.hypotest(
                1.0,
                data,
                model,
                calctype="toybased",
                ntoys=n,
                key=jax.random.key(seed),
                chunk_size=chunk,
                return_tail_probs=True,
                return_expected_set=True,
            )
            jax.block_until_ready(out)
            seconds = time.perf_counter() - start
        return seconds, out, _unconverged(caught)

    first, _, _ = run(first_ntoys, 0)
    runs = [run(ntoys, 1) for _ in range(repeats)]  # the same toys: the same work
    times = [r[0] for r in runs]
    warm, (cls, tails, band), bad = min(times), runs[0][1], runs[0][2]
    return {
        "ntoys": ntoys,
        "chunk": chunk,
        "first_call_s": first,
        "first_call_ntoys": first_ntoys,
        "warm_s": warm,
        "warm_s_all": times,
        "per_toy_ms": 1e3 * warm / ntoys,
        "cls": float(cls),
        "tail_probs": np.asarray(tails).tolist(),
        "expected_set": np.asarray(band).tolist(),
        "unconverged_toy_fits": bad,
        "toy_fits": 4 * ntoys,
    }


def time_pyhf(
    spec, observed, ntoys: int, backend: str, warmup: bool = False, repeats: int = 1
) -> dict:
    """pyhf's toy-based `hypotest`, timed (the best of `repeats` runs of the same toys).
    With `warmup`, one untimed toy first: its fits compile pyhf's jitted objective (jax
    backend), which the timed toys then reuse, as diffana's warm timing reuses its
    compiled chunk."""
    import pyhf

    pyhf.set_backend(backend)
    if "measurements" in spec:
        ws = pyhf.Workspace(spec)
        model = ws.model()
        data = ws.data(model)
    else:
        model = pyhf.Model(spec)
        data = list(observed) + model.config.auxdata
    warmup_s = math.nan
    if warmup:
        np.random.seed(1000)  # noqa: NPY002 (pyhf samples with numpy's global generator)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                pyhf.infer.hypotest(
                    1.0, data, model, calctype="toybased", ntoys=1, track_progress=False
                )
            except Exception as err:  # a failed fit of the warm-up toy: compiled anyway
                print(f"# pyhf warm-up toy failed: {err!r}"[:200], file=sys.stderr)
        warmup_s = time.perf_counter() - start

    def run(seed):
        np.random.seed(seed)  # noqa: NPY002 (pyhf samples with numpy's global generator)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls, tails = pyhf.infer.hypotest(
                1.0,
                data,
                model,
                calctype="toybased",
                ntoys=ntoys,
                track_progress=False,
                return_tail_probs=True,
            )
        return time.perf_counter() - start, cls, tails

    failures = []
    for seed in range(3):  # pyhf's fits of a toy may fail; record it and try other toys
        start = time.perf_counter()
        try:
            seconds, cls, tails = run(seed)
            times = [seconds] + [run(seed)[0] for _ in range(repeats - 1)]
        except Exception as err:  # pyhf.exceptions.FailedMinimization and the like
            failures.append(
                {"seed": seed, "after_s": time.perf_counter() - start, "error": repr(err)[:200]}
            )
            continue
        seconds = min(times)
        return {
            "ntoys": ntoys,
            "seconds": seconds,
            "seconds_all": times,
            "per_toy_ms": 1e3 * seconds / ntoys,
            "cls": float(cls),
            "tail_probs": [float(t) for t in tails],
            "failed_attempts": failures,
            "warmup_s": warmup_s,
        }
    return {
        "ntoys": ntoys,
        "seconds": math.nan,
        "seconds_all": [],
        "per_toy_ms": math.nan,
        "failed_attempts": failures,
        "warmup_s": warmup_s,
    }


BACKENDS = ("numpy", "jax")
_NOT_RUN = {"ntoys": 0, "seconds": math.nan, "per_toy_ms": math.nan, "failed_attempts": []}


def _failures(row: dict) -> list:
    return [
        (backend, f["seed"], f["error"][:60])
        for backend in BACKENDS
        for f in row[f"pyhf_{backend}"]["failed_attempts"]
    ]


def agreement(ours: dict, theirs: dict) -> str:
    """CLs+b and CLb of both, and their difference in combined binomial standard
    deviations (pooled p)."""
    if "tail_probs" not in theirs:
        return "not run" if not theirs["failed_attempts"] else "pyhf failed"
    n1, n2 = ours["ntoys"], theirs["ntoys"]
    parts = []
    pairs = zip(ours["tail_probs"], theirs["tail_probs"], strict=True)
    for label, (p1, p2) in zip(("CLs+b", "CLb"), pairs, strict=True):
        p = (n1 * p1 + n2 * p2) / (n1 + n2)
        sd = math.sqrt(max(p * (1 - p), 1e-12) * (1 / n1 + 1 / n2))
        parts.append(f"{label} {p1:.4f} vs {p2:.4f} ({(p1 - p2) / sd:+.2f} sd)")
    return ", ".join(parts)


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ntoys", type=int, default=10000, help="diffana toys, small models")
    parser.add_argument("--ntoys-large", type=int, default=1000, help="diffana toys, workspaces")
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--chunk-large", type=int, default=250)
    parser.add_argument("--pyhf-ntoys", type=int, default=200)
    parser.add_argument("--pyhf-ntoys-large", type=int, default=10)
    parser.add_argument("--only", nargs="*", default=None, help="model names to run")
    parser.add_argument(
        "--pyhf-backends",
        default="numpy,jax",
        help='comma-separated pyhf backends to run ("" for none: diffana alone)',
    )
    parser.add_argument(
        "--pyhf-warmup",
        action="store_true",
        help="run one untimed pyhf toy first (compiles pyhf-jax's objective), then time",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="timed runs of the same toys per tool (diffana's warm call, pyhf's toys); "
        "the best is reported, all are in the JSON",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1; got {args.repeats}")
    backends = [b for b in args.pyhf_backends.split(",") if b]  # "" runs diffana alone
    if unknown := set(backends) - set(BACKENDS):
        parser.error(f"--pyhf-backends: unknown {sorted(unknown)}; known: {BACKENDS}")

    shim_pyhf_percentile()
    import pyhf

    info = {"machine": machine(), "pyhf": pyhf.__version__, "models": {}}
    models = {**small_models(), **published_models()}
    for name, (spec, model, observed) in models.items():
        if args.only and name not in args.only:
            continue
        large = name in PUBLISHED
        ntoys = args.ntoys_large if large else args.ntoys
        chunk = args.chunk_large if large else args.chunk
        n_pyhf = args.pyhf_ntoys_large if large else args.pyhf_ntoys
        row = {"npars": int(model.npars), "nbins": int(model.nbins)}
        # the first call compiles; on a published workspace it runs one chunk only
        first_ntoys = chunk if large else ntoys
        row["diffana"] = time_diffana(model, observed, ntoys, chunk, first_ntoys, args.repeats)
        print(name, "diffana", row["diffana"], file=sys.stderr, flush=True)
        for backend in BACKENDS:
            if backend not in backends:
                row[f"pyhf_{backend}"] = _NOT_RUN
                row[f"ratio_{backend}"] = math.nan
                continue
            row[f"pyhf_{backend}"] = time_pyhf(
                spec, observed, n_pyhf, backend, warmup=args.pyhf_warmup, repeats=args.repeats
            )
            row[f"ratio_{backend}"] = (
                row[f"pyhf_{backend}"]["per_toy_ms"] / row["diffana"]["per_toy_ms"]
            )
            print(name, backend, row[f"pyhf_{backend}"], file=sys.stderr, flush=True)
        info["models"][name] = row

    print(
        "| model | params | diffana toys | diffana warm (s) | diffana first call (s) | "
        "unconverged toy fits | pyhf toys | pyhf numpy (s) | pyhf jax (s) | "
        "speed-up vs numpy (per toy) | speed-up vs jax (per toy) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, row in info["models"].items():
        d = row["diffana"]
        print(
            f"| {name} | {row['npars']} | {d['ntoys']} | {d['warm_s']:.2f} | "
            f"{d['first_call_s']:.1f} ({d['first_call_ntoys']} toys) | "
            f"{d['unconverged_toy_fits']} of {d['toy_fits']} | {row['pyhf_numpy']['ntoys']} | "
            f"{row['pyhf_numpy']['seconds']:.1f} | {row['pyhf_jax']['seconds']:.1f} | "
            f"{row['ratio_numpy']:.0f}x | {row['ratio_jax']:.0f}x |"
            + (" pyhf failed: " + str(fails) if (fails := _failures(row)) else "")
        )
    print()
    print("Agreement of the tail probabilities (CLs+b, CLb) with pyhf's toys, in combined")
    print("binomial standard deviations sqrt(p (1 - p) (1/n_diffana + 1/n_pyhf)):")
    for name, row in info["models"].items():
        for backend in BACKENDS:
            print(f"  {name}, pyhf {backend}: {agreement(row['diffana'], row[f'pyhf_{backend}'])}")
    if args.json:
        args.json.write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
