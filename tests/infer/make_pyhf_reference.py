"""Compute pyhf's numbers on the published workspaces for `test_real_workspaces.py`.

pyhf's numpy backend takes minutes for these hypothesis tests (48 s for 1Lbb alone on a
2-core machine), too long for every run of the suite, so its results are stored in
`tests/data/pyhf_reference.json` by this script and compared with diffana's in the
tests. Rerun it after changing pyhf's version or a workspace:

    python tests/infer/make_pyhf_reference.py

The 3L RJ-mimic workspace has a shapesys constraint with tau = 1.9e11, whose NLL term
(4.7e12) float64 resolves only in steps of 2^-10; pyhf's fits of it land on neighbouring
steps. Its reference is taken with that one parameter fixed at 1 (where its fit puts
it), which leaves the likelihood otherwise unchanged and gives pyhf the exact answer.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pyhf

ROOT = Path(__file__).resolve().parents[2]
WORKSPACES = ROOT.parent / "shared" / "data" / "workspaces"
OUT = ROOT / "tests" / "data" / "pyhf_reference.json"
TOLERANCE = 1e-10
CASES = {
    "pyhf_docs_ShapeFactor_example.json": None,
    "atlas_sbottom_multib_SUSY-2018-31_RegionA_synthsig.json": None,
    "atlas_3L_RJmimic_SUSY-2018-06_ERJR_350p0_100p0.json": (
        "shape_mcstat_diboson3LISR_CRISR_obs_cuts[0]"
    ),
    "atlas_1Lbb_SUSY-2019-08_C1N2_Wh_hbb_600_300.json": None,
}


def reference(path: Path, fix: str | None) -> dict:
    ws = pyhf.Workspace(json.loads(path.read_text()))
    model = ws.model()
    data = ws.data(model)
    fixed = model.config.suggested_fixed()
    if fix is not None:
        fixed[model.config.par_names.index(fix)] = True
    _, twice_nll = pyhf.infer.mle.fit(data, model, fixed_params=fixed, return_fitted_val=True)
    cls, band = pyhf.infer.hypotest(
        1.0, data, model, fixed_params=fixed, test_stat="qtilde", return_expected_set=True
    )
    return {
        "fixed": fix,
        "nll_min": float(twice_nll) / 2.0,
        "cls_obs": float(cls),
        "cls_exp": [float(x) for x in np.ravel(band)],
    }


def main() -> int:
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=TOLERANCE))
    out = {"pyhf": pyhf.__version__, "backend": "numpy", "tolerance": TOLERANCE, "mu": 1.0}
    for name, fix in CASES.items():
        out[name] = reference(WORKSPACES / name, fix)
        print(name, out[name], flush=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
