"""The cost of one evaluation and of one Newton iteration of toy fits on published workspaces.

Two measurements, one thread, in this process:

- `derivatives`: value, gradient and Hessian of the relative NLL (`Model.nll_derivatives`,
  the closed form the fits use) at 256 points near the initial values on 256
  pseudo-datasets, in one compiled loop (`lax.map`); the best of 7 calls, per point.
- `iterations`: the conditional fit (POI at 1) and then the free fit of `--toys`
  pseudo-datasets drawn at the conditional fit of the observed data (POI at `--gen-mu`,
  default 1; 0 for the background-only toys of a test of 1), one after the other
  in one compiled loop, by `_toys._fit_pair` as `hypotest(calctype="toybased")` fits
  them on a CPU (from the same linearised starting points, `_toys.start_response`, or
  `--fraction` of their move; `--fraction 0,0.5` compares the generating parameters
  with the default; to the accuracy `--toy-tol`, default `_toys.TOY_TOL`, which
  `--toy-tol 1e-10,1e-6` compares with the ordinary fits' default): their Newton
  iterations, the sums of their minima and of their test statistics `q~` at 1 (to
  compare two versions), and the time per toy and per iteration (best and median of
  `--repeats` calls). Each setting after the first is compared with the first, toy by
  toy, over the toys whose fits converged in both: the largest difference of the test
  statistics, and the toys whose minima differ by more than 1e-4 (another local
  minimum; `toy_tol` 1e-6 moves a minimum by up to 5e-5 next to a bound).

For two versions, run it with each on `PYTHONPATH` (`PYTHONPATH=<tree>/src python ...`)
from the tree whose `_fit_pair` it calls (commits from 2026-12-05 on return the
iterations).

Usage:

    python benchmarks/bench_toy_fits.py --only sbottom,1Lbb [--toys 32] [--fraction 0,0.5]
        [--gen-mu 0] [--key 3] [--toy-tol 1e-10,1e-6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from diffana import hf, infer
from diffana.infer import _toys
from diffana.infer._mle import DEFAULT_MAXITER, floating

WORKSPACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "workspaces"
PUBLISHED = {
    "sbottom": "atlas_sbottom_multib_SUSY-2018-31_RegionA_synthsig.json",
    "1Lbb": "atlas_1Lbb_SUSY-2019-08_C1N2_Wh_hbb_600_300.json",
    "1Ljets": "atlas_1Ljets_hepdata97041_synthsig.json",
}


def best_time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def derivatives_us(model) -> float:
    n = 256
    init = jnp.asarray(model.init)
    data = infer.sample_data(model, init, n, key=jax.random.key(0))
    noise = 0.3 * jax.random.normal(jax.random.key(1), (n, init.shape[0]))
    pars = jnp.clip(init[None] + noise, model.bounds[:, 0], model.bounds[:, 1])
    fn = jax.jit(lambda p, d: jax.lax.map(lambda a: model.nll_derivatives(*a), (p, d)))
    return 1e6 * best_time(fn, pars, data, repeats=7) / n


def toy_fits(
    model,
    observed,
    ntoys: int,
    fraction: float = _toys.START_RESPONSE,
    gen_mu: float = 1.0,
    key: int = 10,
    toy_tol: float = _toys.TOY_TOL,
):
    """A function of the toys and their starting points (`fraction` of the linearised
    move from the generating parameters, `_toys.start_response`): per toy the
    iterations of both fits, both minima, the test statistic and whether both fits
    converged; and its arguments."""
    poi = int(model.poi_index)
    fixed = np.array(model.fixed)
    fixed[poi] = True
    start = jnp.asarray(model.init).at[poi].set(gen_mu)
    gen = infer.fit(observed, model, init=start, fixed=fixed.tolist()).pars
    free = floating(model, jnp.asarray(model.fixed))
    cond = free.at[poi].set(False)
    bounds = jnp.asarray(model.bounds)
    toys = infer.sample_data(model, gen, ntoys, key=jax.random.key(key))
    response = _toys.start_response(model, gen, cond, poi, 1.0, fraction=fraction)
    starts = _toys.response_starts(gen, response, toys).at[:, poi].set(1.0)

    def one(args):
        d, x0 = args
        cond_nll, free_nll, mu_hat, conv, n_iter = _toys._fit_pair(
            model, d, x0, free, bounds, poi, toy_tol, DEFAULT_MAXITER, False
        )
        stat = _toys.statistic_from_fits(cond_nll, free_nll, mu_hat, 1.0, False)
        return n_iter, cond_nll, free_nll, stat, conv

    return (lambda t: jax.lax.map(one, t)), (toys, starts)


def iterations(
    model,
    observed,
    ntoys: int,
    repeats: int,
    fraction: float,
    gen_mu: float,
    key: int,
    toy_tol: float = _toys.TOY_TOL,
) -> dict:
    fn, toys = toy_fits(model, observed, ntoys, fraction, gen_mu, key, toy_tol)
    compiled = jax.jit(fn).lower(toys).compile()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        n_iter, cond, free, stat, conv = jax.block_until_ready(compiled(toys))
        times.append(time.perf_counter() - start)
    total = int(jnp.sum(n_iter))
    return {
        "iterations": total,
        "sum_of_minima": float(jnp.sum(cond) + jnp.sum(free)),
        "sum_of_statistics": float(jnp.sum(stat)),
        "ms_per_toy_best": 1e3 * min(times) / ntoys,
        "us_per_iteration_best": 1e6 * min(times) / total,
        "us_per_iteration_median": 1e6 * statistics.median(times) / total,
        "minima": np.stack([cond, free], axis=1).tolist(),
        "statistics": np.asarray(stat).tolist(),
        "converged": np.asarray(conv).tolist(),
    }


def compare_runs(first: dict, other: dict) -> str:
    """Over the toys whose fits converged in both runs: the largest difference of their
    test statistics, and how many toys' conditional and free minima differ by more than
    1e-4 (another local minimum), lower or higher in the second."""
    both = np.asarray(first["converged"]) & np.asarray(other["converged"])
    stat = np.abs(np.asarray(other["statistics"]) - np.asarray(first["statistics"]))[both]
    words = [f"test statistics within {stat.max() if stat.size else 0.0:.1e} "
             f"({int(both.sum())} toys converged in both)"]  # fmt: skip
    diff = (np.asarray(other["minima"]) - np.asarray(first["minima"]))[both]
    for j, name in enumerate(("conditional", "free")):
        lower, higher = int(np.sum(diff[:, j] < -1e-4)), int(np.sum(diff[:, j] > 1e-4))
        rest = np.abs(diff[np.abs(diff[:, j]) <= 1e-4, j])
        agree = f"{rest.max():.1e}" if rest.size else "-"
        words.append(f"{name}: {lower} lower, {higher} higher (the others within {agree})")
    return "; ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="sbottom,1Lbb", help=f"parts of {list(PUBLISHED)}")
    parser.add_argument("--toys", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--key", type=int, default=10, help="seed of the toys")
    parser.add_argument(
        "--gen-mu",
        type=float,
        default=1.0,
        help="POI of the toys' generating parameters (0: background-only toys; fitted at 1)",
    )
    parser.add_argument(
        "--fraction",
        default=str(_toys.START_RESPONSE),
        help="fractions of the linearised move the fits start at, comma-separated "
        "(0: the generating parameters)",
    )
    parser.add_argument(
        "--toy-tol",
        default=str(_toys.TOY_TOL),
        help="accuracies of the toy fits' minima, comma-separated",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {}
    for key in args.only.split(","):
        spec = json.loads((WORKSPACES / PUBLISHED[key]).read_text())
        model = hf.Model.from_pyhf(spec)
        observed = jnp.asarray(hf.workspace_data(spec, model))
        row = {"npars": int(model.npars), "derivatives_us": derivatives_us(model)}
        print(f"{key} ({row['npars']} parameters): value, gradient and Hessian "
              f"{row['derivatives_us']:.1f} us")  # fmt: skip
        row["toy_fits"] = {}
        settings = [
            (float(f), float(t)) for t in args.toy_tol.split(",") for f in args.fraction.split(",")
        ]
        for fraction, toy_tol in settings:
            r = iterations(
                model, observed, args.toys, args.repeats, fraction, args.gen_mu, args.key,
                toy_tol,
            )  # fmt: skip
            print(f"  {args.toys} toys from {fraction} of the move, toy_tol {toy_tol:g}: "
                  f"{r['iterations']} "
                  f"iterations, {r['ms_per_toy_best']:.2f} ms per toy, "
                  f"{r['us_per_iteration_best']:.1f} us per iteration (median "
                  f"{r['us_per_iteration_median']:.1f}), sum of minima "
                  f"{r['sum_of_minima']:.8f}, of test statistics "
                  f"{r['sum_of_statistics']:.8f}")  # fmt: skip
            if row["toy_fits"]:
                compared = compare_runs(next(iter(row["toy_fits"].values())), r)
                print(f"    against the first setting: {compared}")
            row["toy_fits"][f"{fraction},{toy_tol:g}"] = r
        results[key] = row
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
