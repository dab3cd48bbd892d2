"""A/B timing of two diffana source trees on the 10-bin `hypotest` of `bench_hypotest.py`.

For a change whose effect is smaller than the 2x run-to-run noise of a shared machine:
the two versions run alternately, each in a fresh interpreter (`A B A B ...`), and each
run prints the medians of `hypotest` value + gradient for one jitted call traced with
the run-time convergence check (`vg_checked`, the default) and, traced without it
(`diffana.infer.runtime_convergence_checks(False)`), for one jitted call (`vg`), a
vmapped batch (compiled with JAX's defaults and with `diffana.compiler_options()`) and a
Python loop, per item. The summary gives the range over the runs of each version.

Usage, e.g. a commit against the one before it:

    git worktree add /tmp/diffana-before HEAD~1
    python benchmarks/bench_ab.py /tmp/diffana-before . [--runs 7] [--batch 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = ("vg_checked", "vg", "vmap", "vmap_opt", "loop")


def measure(batch: int) -> dict:
    """One run in this interpreter: medians in us (per item for the batched ones)."""
    sys.path.insert(0, str(HERE))
    import bench_hypotest as bh

    import diffana
    from diffana import infer

    checked, _ = bh.pyhf_functions(batch)  # traced with the run-time convergence check
    with infer.runtime_convergence_checks(False):  # the rest without it
        fns = bh._warm(bh.pyhf_functions(batch)[0])
    fns["vg_checked"] = checked["vg"]
    times: dict[str, list] = {k: [] for k in KEYS}
    for _ in range(4):
        for k in KEYS:
            times[k] += bh._timer(fns[k], 1 if k == "loop" else (5 if "vmap" in k else 200))
    res = {k: bh._med_us(ts, 1 if k.startswith("vg") else batch) for k, ts in times.items()}
    return {**res, "diffana": diffana.__file__}


def measure_in_tree(tree: Path, script: str, args: list[str]) -> dict:
    """Run `script --measure *args` in a fresh interpreter importing diffana from `tree`;
    its last line of output, a JSON object with the imported `diffana` file, checked to
    lie in `tree`."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    out = subprocess.run(
        [sys.executable, script, "--measure", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if not Path(res["diffana"]).resolve().is_relative_to(tree):
        raise RuntimeError(f"imported diffana from {res['diffana']}, not from {tree}")
    return res


def check_trees(parser: argparse.ArgumentParser, a: Path | None, b: Path | None) -> None:
    """The two source trees of an A/B run, or the parser's error."""
    if a is None or b is None:
        parser.error("give two source trees (folders holding src/diffana)")
    for tree in (a, b):
        if not (tree / "src" / "diffana").is_dir():
            parser.error(f"{tree}: no src/diffana folder; expected a diffana checkout")


def run_tree(tree: Path, batch: int) -> dict:
    return measure_in_tree(tree, __file__, ["--batch", str(batch)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", nargs="?", type=Path, help="source tree A (the version before)")
    parser.add_argument("b", nargs="?", type=Path, help="source tree B (the version after)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.batch)))
        return 0
    check_trees(parser, args.a, args.b)
    results: dict[str, list] = {"A": [], "B": []}
    for i in range(args.runs):
        for name, tree in (("A", args.a), ("B", args.b)):
            res = run_tree(tree.resolve(), args.batch)
            results[name].append(res)
            row = " ".join(f"{k}={res[k]:.1f}" for k in KEYS)
            print(f"run {i + 1} {name}: {row}", flush=True)
    print("ranges over the runs (us; vmap, vmap_opt and loop per item):")
    for name in ("A", "B"):
        row = "  ".join(
            f"{k} {min(r[k] for r in results[name]):.1f}-{max(r[k] for r in results[name]):.1f}"
            for k in KEYS
        )
        print(f"  {name}: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
