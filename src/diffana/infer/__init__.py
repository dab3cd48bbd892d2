"""Fits, test statistics and asymptotic inference for HistFactory models, in JAX.

Everything here is a pure function that jits, vmaps and differentiates with respect to
the model's arrays (sample yields, modifier data) and the data. Fits use a bounded
Newton method; their gradients come from the implicit-function theorem at the optimum.
Names and conventions follow `pyhf.infer`.

Non-converged fits are flagged (`FitResult.converged`) and raise
:class:`diffana.ConvergenceWarning` naming the model: at call time when called eagerly,
and at run time (through a host callback that runs only for a fit that did not
converge) inside `jit`/`vmap`/`grad`, unless traced inside
`runtime_convergence_checks(False)`.
"""

from __future__ import annotations

from diffana.infer._asymptotics import DiscoveryResult, discovery, hypotest
from diffana.infer._coverage import (
    CoverageResult,
    FairUniverseScore,
    PoiInterval,
    coverage,
    fair_universe_score,
    poi_interval,
)
from diffana.infer._fisher import asimov_significance, fisher_information, poi_uncertainty
from diffana.infer._intervals import UpperLimitResult, upper_limit
from diffana.infer._mle import FitResult, fit, fixed_poi_fit, runtime_convergence_checks
from diffana.infer._teststat import asimov_data, q0, qmu, qmu_tilde, tmu, tmu_tilde
from diffana.infer._toys import ToyDistributions, sample_data, toy_distributions

__all__ = [
    "CoverageResult",
    "DiscoveryResult",
    "FairUniverseScore",
    "FitResult",
    "PoiInterval",
    "ToyDistributions",
    "UpperLimitResult",
    "asimov_data",
    "asimov_significance",
    "coverage",
    "discovery",
    "fair_universe_score",
    "fisher_information",
    "fit",
    "fixed_poi_fit",
    "hypotest",
    "poi_interval",
    "poi_uncertainty",
    "q0",
    "qmu",
    "qmu_tilde",
    "runtime_convergence_checks",
    "sample_data",
    "tmu",
    "tmu_tilde",
    "toy_distributions",
    "upper_limit",
]
