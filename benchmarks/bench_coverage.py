"""Coverage study of a published workspace: time of `infer.coverage` (first call,
compilation included, then warm) and its result.

For each seed, `coverage(model, [mu], ntoys, key=jax.random.key(seed), data=observed)`
on the sbottom workspace of `../shared/data/workspaces` (67 parameters). Seed 0 is the
first call; the later seeds reuse the compiled chunk.

Usage:

    python benchmarks/bench_coverage.py [--ntoys 64] [--mu 1.0] [--seeds 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from diffana import hf, infer

ROOT = Path(__file__).resolve().parents[1]
SBOTTOM = (
    ROOT.parent
    / "shared"
    / "data"
    / "workspaces"
    / "atlas_sbottom_multib_SUSY-2018-31_RegionA_synthsig.json"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ntoys", type=int, default=64)
    parser.add_argument("--mu", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    if not SBOTTOM.is_file():
        print(f"{SBOTTOM} not found", file=sys.stderr)
        return 1
    spec = json.loads(SBOTTOM.read_text())
    model = hf.Model.from_pyhf(spec)
    data = jnp.asarray(hf.workspace_data(spec, model, include_auxdata=True))
    for seed in range(args.seeds):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # toys without an interval are counted below
            res = infer.coverage(model, [args.mu], args.ntoys, key=jax.random.key(seed), data=data)
        jax.block_until_ready(res)
        row = {
            "seed": seed,
            "call": "first" if seed == 0 else "warm",
            "seconds": round(time.perf_counter() - start, 3),
            "coverage": float(res.coverage[0]),
            "mean_width": float(res.mean_width[0]),
            "toys_with_interval": int(np.asarray(res.converged).sum()),
        }
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
