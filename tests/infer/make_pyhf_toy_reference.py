"""pyhf's toy calculator on a small model, stored for `tests/infer/test_toys.py`.

pyhf's toys fit every pseudo-dataset one after the other (minutes for a few thousand
toys), too long for every run of the suite, so its CLs+b, CLb, CLs and expected band
are stored in `tests/data/pyhf_toy_reference.json` and compared with diffana's toys
within Monte-Carlo error. Rerun it after changing pyhf's version or the model:

    python tests/infer/make_pyhf_toy_reference.py

numpy 2 removed the `interpolation=` keyword of `np.percentile`, which pyhf 0.7.6's
numpy backend still passes (`tensorlib.percentile`, used by the toy calculator's
`expected_value` and `expected_pvalues`). :func:`shim_pyhf_percentile` patches that
one method to pass it on as `method=` (same meaning); nothing else of pyhf changes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pyhf

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "pyhf_toy_reference.json"

# The model and data of the comparison (also built by the test from these numbers).
SIGNAL = [5.0, 8.0, 4.0]
BACKGROUND = [20.0, 30.0, 15.0]
UNCERTAINTY = [3.0, 4.0, 2.5]
OBSERVED = [22.0, 33.0, 14.0]
CASES = [("qtilde", 1.0), ("q", 1.0), ("q0", 0.0)]
NTOYS = 3000
SEED = 18


def shim_pyhf_percentile() -> None:
    """Make pyhf 0.7.6's numpy backend `percentile` work with numpy >= 2."""
    backend = pyhf.tensor.numpy_backend

    def percentile(self, tensor_in, q, axis=None, interpolation="linear"):
        return np.percentile(tensor_in, q, axis=axis, method=interpolation)

    backend.percentile = percentile


def main() -> None:
    shim_pyhf_percentile()
    pyhf.set_backend("numpy")
    model = pyhf.simplemodels.uncorrelated_background(SIGNAL, BACKGROUND, UNCERTAINTY)
    data = OBSERVED + model.config.auxdata
    out = {
        "pyhf": pyhf.__version__,
        "numpy": np.__version__,
        "ntoys": NTOYS,
        "seed": SEED,
        "model": {"signal": SIGNAL, "background": BACKGROUND, "uncertainty": UNCERTAINTY},
        "observed": OBSERVED,
        "cases": {},
    }
    for test_stat, mu in CASES:
        np.random.seed(SEED)  # noqa: NPY002 (pyhf samples with numpy's global generator)
        start = time.perf_counter()
        cls, tails, expected_set = pyhf.infer.hypotest(
            mu,
            data,
            model,
            test_stat=test_stat,
            calctype="toybased",
            ntoys=NTOYS,
            track_progress=False,
            return_tail_probs=True,
            return_expected_set=True,
        )
        seconds = time.perf_counter() - start
        out["cases"][test_stat] = {
            "poi_value": mu,
            "cls": float(cls),
            "tail_probs": [float(x) for x in tails],
            "expected_set": [float(x) for x in expected_set],
            "seconds": seconds,
        }
        print(test_stat, out["cases"][test_stat], file=sys.stderr, flush=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
