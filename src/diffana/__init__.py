"""diffana: a differentiable analysis toolkit for high-energy physics, in JAX.

Importing diffana switches on JAX's 64-bit mode (see :mod:`diffana._config` for the
precision policy and how to opt out).
"""

from __future__ import annotations

from diffana._config import _apply_policy_on_import, check_float64, enable_x64, x64_enabled
from diffana.errors import (
    ConvergenceWarning,
    DataError,
    DiffanaError,
    PrecisionWarning,
    ProblemDefinitionError,
    SpecError,
)

_apply_policy_on_import()

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "DataError",
    "DiffanaError",
    "PrecisionWarning",
    "ProblemDefinitionError",
    "SpecError",
    "__version__",
    "check_float64",
    "enable_x64",
    "x64_enabled",
]
