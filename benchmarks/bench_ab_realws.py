"""A/B timing of two diffana source trees on the published workspaces of `bench_realws.py`.

For a change whose effect is smaller than the run-to-run noise of a shared machine: the
two versions run alternately, each in a fresh interpreter (`A B A B ...`), and each run
prints the warm medians of `fit` and of `hypotest` (observed CLs and the expected band
at mu = 1) on each chosen workspace, with the CLs, so that a change of result shows. The
summary gives the range over the runs of each version.

Usage, e.g. a commit against an older one:

    git worktree add /tmp/diffana-before <commit>
    python benchmarks/bench_ab_realws.py /tmp/diffana-before . --only sbottom,1Lbb \
        [--runs 5] [--fits 40] [--tests 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(keys: list[str], fits: int, tests: int) -> dict:
    """One run in this interpreter: `{key: {fit_ms, hypotest_ms, cls}}`."""
    sys.path.insert(0, str(HERE))
    import bench_realws as br
    import jax

    import diffana

    out: dict = {"diffana": diffana.__file__}
    for key in keys:
        model, data = br.d_build(br.load_workspace(f"real:{key}"))
        jax.block_until_ready(br.d_fit(model, data))
        cls = jax.block_until_ready(br.d_hypotest(model, data))
        fit_s, test_s = [], []
        for _ in range(fits):
            t = time.perf_counter()
            jax.block_until_ready(br.d_fit(model, data))
            fit_s.append(time.perf_counter() - t)
        for _ in range(tests):
            t = time.perf_counter()
            jax.block_until_ready(br.d_hypotest(model, data))
            test_s.append(time.perf_counter() - t)
        out[key] = {
            "fit_ms": 1e3 * statistics.median(fit_s),
            "hypotest_ms": 1e3 * statistics.median(test_s),
            "cls": float(cls[0]),
        }
    return out


def run_tree(tree: Path, keys: list[str], fits: int, tests: int) -> dict:
    sys.path.insert(0, str(HERE))
    from bench_ab import measure_in_tree

    args = ["--only", ",".join(keys), "--fits", str(fits), "--tests", str(tests)]
    return measure_in_tree(tree, __file__, args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", nargs="?", type=Path, help="source tree A (the version before)")
    parser.add_argument("b", nargs="?", type=Path, help="source tree B (the version after)")
    parser.add_argument("--only", default="sbottom", help="comma-separated workspace keys")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fits", type=int, default=40, help="warm fits timed per run")
    parser.add_argument("--tests", type=int, default=10, help="warm hypotests timed per run")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import bench_realws as br

    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in br.REAL]
    if unknown:
        parser.error(f"--only: unknown workspaces {unknown}; choose among {sorted(br.REAL)}")
    if args.measure:
        print(json.dumps(measure(keys, args.fits, args.tests)))
        return 0
    from bench_ab import check_trees

    check_trees(parser, args.a, args.b)
    missing = [k for k in keys if not (br.WORKSPACES / br.REAL[k]).is_file()]
    if missing:
        raise SystemExit(f"workspaces not found in {br.WORKSPACES}: {missing}")
    results: dict[str, list] = {"A": [], "B": []}
    for i in range(args.runs):
        for name, tree in (("A", args.a), ("B", args.b)):
            res = run_tree(tree.resolve(), keys, args.fits, args.tests)
            results[name].append(res)
            for key in keys:
                r = res[key]
                print(
                    f"run {i + 1} {name} {key}: fit {r['fit_ms']:.2f} ms, "
                    f"hypotest {r['hypotest_ms']:.2f} ms, CLs {r['cls']:.12f}",
                    flush=True,
                )
    print("ranges over the runs (ms):")
    for key in keys:
        for name in ("A", "B"):
            cells = []
            for what in ("fit_ms", "hypotest_ms"):
                vals = [r[key][what] for r in results[name]]
                cells.append(
                    f"{what[:-3]} {min(vals):.2f}-{max(vals):.2f} "
                    f"(median {statistics.median(vals):.2f})"
                )
            print(f"  {key} {name}: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
