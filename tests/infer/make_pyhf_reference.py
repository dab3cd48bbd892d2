"""Compute pyhf's numbers on the published workspaces for `test_real_workspaces.py`.

pyhf's numpy backend takes minutes for these hypothesis tests (48 s for 1Lbb alone on a
2-core machine), too long for every run of the suite, so its results are stored in
`tests/data/pyhf_reference.json` by this script and compared with diffana's in the
tests. Rerun it after changing pyhf's version or a workspace:

    python tests/infer/make_pyhf_reference.py

A generated analysis-sized workspace (`diffana.testing.synthetic_workspace(24, 3, 90,
60, 12)`, 236 parameters) gets pyhf's minimum as well (key `synthetic_236`); with
`--only synthetic_236` just that one is recomputed and the rest of the file kept.

Models above `NUMPY_MAX_PARS` parameters (3L resonance, 625) are referred with pyhf's
jax backend, whose gradients are exact, at the same tolerance (key `backend`).

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
    "atlas_3L_resonance_hepdata99806_synthsig.json": None,
}
# pyhf's numpy backend differentiates numerically, one NLL per parameter and gradient:
# above this many parameters the reference is taken with its jax backend (same tolerance).
NUMPY_MAX_PARS = 200


SYNTHETIC = {"synthetic_236": dict(n_channels=24, n_bins=3, n_normsys=90, n_histosys=60,
                                   n_normfactors=12, seed=0)}  # fmt: skip


def minimum(spec: dict) -> dict:
    ws = pyhf.Workspace(spec)
    model = ws.model()
    pars, twice_nll = pyhf.infer.mle.fit(ws.data(model), model, return_fitted_val=True)
    return {"nll_min": float(twice_nll) / 2.0, "pars": [float(x) for x in pars]}


def reference(path: Path, fix: str | None) -> dict:
    ws = pyhf.Workspace(json.loads(path.read_text()))
    model = ws.model()
    backend = "numpy" if model.config.npars <= NUMPY_MAX_PARS else "jax"
    pyhf.set_backend(backend, pyhf.optimize.scipy_optimizer(tolerance=TOLERANCE))
    model = ws.model()
    data = ws.data(model)
    fixed = model.config.suggested_fixed()
    if fix is not None:
        fixed[model.config.par_names.index(fix)] = True
    _, twice_nll = pyhf.infer.mle.fit(data, model, fixed_params=fixed, return_fitted_val=True)
    cls, band = pyhf.infer.hypotest(
        1.0, data, model, fixed_params=fixed, test_stat="qtilde", return_expected_set=True
    )
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=TOLERANCE))
    return {
        "backend": backend,
        "fixed": fix,
        "nll_min": float(twice_nll) / 2.0,
        "cls_obs": float(cls),
        "cls_exp": [float(x) for x in np.ravel(band)],
    }


def main() -> int:
    from diffana.testing import synthetic_workspace

    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=TOLERANCE))
    out = json.loads(OUT.read_text()) if only and OUT.is_file() else {}
    out |= {"pyhf": pyhf.__version__, "backend": "numpy", "tolerance": TOLERANCE, "mu": 1.0}
    for name, fix in CASES.items():
        if only in (None, name):
            out[name] = reference(WORKSPACES / name, fix)
            print(name, out[name], flush=True)
    for name, kwargs in SYNTHETIC.items():
        if only in (None, name):
            out[name] = minimum(synthetic_workspace(**kwargs))
            print(name, out[name]["nll_min"], flush=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
