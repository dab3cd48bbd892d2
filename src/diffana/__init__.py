"""diffana: a differentiable analysis toolkit for high-energy physics, in JAX.

Importing diffana switches on JAX's 64-bit mode (see :mod:`diffana._config` for the
precision policy and how to opt out).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from diffana._config import (
    _apply_policy_on_import,
    check_float64,
    compiler_options,
    enable_compilation_cache,
    enable_x64,
    require_float64,
    x64_enabled,
)
from diffana.errors import (
    ConvergenceWarning,
    DataError,
    DiffanaError,
    PrecisionError,
    PrecisionWarning,
    ProblemDefinitionError,
    SpecError,
    SpecWarning,
)

_apply_policy_on_import()

__version__ = "0.1.0"

# Submodules are imported on first access (``diffana.hf``, ``diffana.infer``, ...), so
# that ``import diffana`` stays light: ROOT I/O and plotting load only when used.
_SUBMODULES = (
    "baselines",
    "bench",
    "hf",
    "infer",
    "io",
    "losses",
    "problems",
    "relax",
    "systematics",
    "testing",
    "train",
)


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"diffana.{name}")
    raise AttributeError(f"module 'diffana' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])


__all__ = [
    "ConvergenceWarning",
    "DataError",
    "DiffanaError",
    "PrecisionError",
    "PrecisionWarning",
    "ProblemDefinitionError",
    "SpecError",
    "SpecWarning",
    "__version__",
    "check_float64",
    "compiler_options",
    "enable_compilation_cache",
    "enable_x64",
    "require_float64",
    "x64_enabled",
]
