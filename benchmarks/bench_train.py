"""Speed of the training and scanning machinery behind `diffana bench`.

1. Figure-of-merit evaluations of a cut scan: expected discovery significance Z0 of
   hard cut-and-count selections (normsys + histosys + staterror, profiled), diffana
   (jitted, vmapped over candidates) against pyhf (the standard tool, one candidate at a
   time, numpy backend + scipy), on the same candidates; the Z0 values are compared too.
2. Training steps per second of each method on its problem (no reference exists that
   trains through a profile-likelihood fit; reported for tracking).

Warm-up first, then the median of >= 5 repetitions. Run: ``python benchmarks/bench_train.py``
(``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import jax
import numpy as np

import diffana
from diffana.bench._methods import _cut_selection, _scan_fom, method_settings
from diffana.problems import load_problem
from diffana.problems._workspace import to_json_compatible
from diffana.train import run_training


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_scan(n_candidates: int, repeats: int) -> None:
    import pyhf
    import scipy.stats

    pyhf.set_backend("numpy", "scipy")
    problem = load_problem("cut_scan", mode="quick")
    train = problem.generate(0, "train")
    scenario = "k4"
    sel, ranges = _cut_selection(problem, scenario, train)
    rng = np.random.default_rng(0)
    cand = ranges[:, 0] + rng.uniform(size=(n_candidates, len(sel.cuts))) * np.ptp(ranges, 1)
    fom = _scan_fom(problem, scenario, sel, train)
    t_diffana = _median_time(lambda: fom(cand), repeats) / n_candidates

    # pyhf: hard yields with numpy, one workspace and one q0 test per candidate.
    templates = problem.templates(train)
    sign = np.asarray([1.0 if c.direction == ">" else -1.0 for c in sel.cuts])
    shift, scale = np.asarray(sel.shift), np.asarray(sel.scale)

    def pyhf_z0(t):
        yields = {}
        for key, s in templates.items():
            x = np.asarray(s.x)
            keep = np.ones(len(x), dtype=bool)
            for i, c in enumerate(sel.cuts):
                keep &= sign[i] * (x[:, c.feature] - shift[c.feature]) / scale[c.feature] > (
                    sign[i] * t[i]
                )
            yields[key] = np.asarray([np.sum(np.asarray(s.w)[keep])])
        ws = to_json_compatible(problem.workspace(yields, scenario))
        model = pyhf.Workspace(ws).model()
        pars = np.asarray(model.config.suggested_init())
        data = model.expected_data(pars)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                p0 = float(pyhf.infer.hypotest(0.0, data, model, test_stat="q0"))
            except pyhf.exceptions.FailedMinimization:
                return float("nan")  # scipy's SLSQP gave up on this candidate
        return float(scipy.stats.norm.isf(p0))

    n_ref = min(n_candidates, 20)
    t_pyhf = _median_time(lambda: [pyhf_z0(c) for c in cand[:n_ref]], max(repeats, 5)) / n_ref
    ours = fom(cand[:n_ref])
    ref = np.asarray([pyhf_z0(c) for c in cand[:n_ref]])
    agree = np.nanmax(np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-3))
    print(
        f"cut-scan Z0 per candidate: diffana {t_diffana * 1e3:.3f} ms (vmapped, "
        f"{n_candidates} per call), pyhf {t_pyhf * 1e3:.1f} ms; ratio pyhf/diffana = "
        f"{t_pyhf / t_diffana:.1f}; max relative Z0 difference {agree:.1e} "
        f"({int(np.isnan(ref).sum())} of {n_ref} pyhf fits failed)"
    )


def bench_training(steps: int, repeats: int) -> None:
    from diffana.bench._methods import _network_pipeline, _relax_setting, hf_loss

    cases = [("gaussian_blobs", "neos", "default"), ("inferno3d", "inferno", "b2")]
    for name, method, scenario in cases:
        problem = load_problem(name, mode="default")
        cfg = method_settings(problem, method)
        train = problem.generate(0, "train")
        pipe = _network_pipeline(problem, cfg, train, jax.random.key(0))
        if cfg["loss"] == "native":
            from diffana.bench._methods import _native_loss

            loss_fn = _native_loss(problem, method, scenario)
        else:
            loss_fn = hf_loss(problem, scenario, cfg["loss"])

        def run(n, loss_fn=loss_fn, pipe=pipe, train=train, cfg=cfg):
            return run_training(
                loss_fn, pipe, train, steps=n, batch_size=cfg["batch_size"],
                key=jax.random.key(1), relax=_relax_setting(cfg, pipe),
            )  # fmt: skip

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run(2)  # compile
            rates = [run(steps).steps_per_second for _ in range(repeats)]
        print(
            f"training {name}/{method} (hidden {cfg['hidden']}, batch {cfg['batch_size']}): "
            f"{statistics.median(rates):.1f} steps/s (median of {repeats})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer candidates and steps")
    args = parser.parse_args()
    print(f"diffana {diffana.__version__}, jax {jax.__version__}, devices {jax.devices()}")
    bench_scan(256 if args.quick else 1024, 5)
    bench_training(10 if args.quick else 50, 5)


if __name__ == "__main__":
    main()
