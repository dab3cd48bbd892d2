"""Exceptions and warnings raised by diffana."""

from __future__ import annotations

__all__ = [
    "ConvergenceWarning",
    "DataError",
    "DiffanaError",
    "PrecisionError",
    "PrecisionWarning",
    "ProblemDefinitionError",
    "SpecError",
]


class DiffanaError(Exception):
    """Base class of every error diffana raises on purpose."""


class SpecError(DiffanaError, ValueError):
    """A HistFactory specification (pyhf JSON or HS3) or workspace is malformed.

    The message names the channel, sample, modifier or measurement at fault (for HS3,
    the JSON path of the element, e.g. ``distributions[3] (name 'x', type
    'gaussian_dist')``) and says what was expected or is supported.
    """


class DataError(DiffanaError, ValueError):
    """Input data (a ROOT file, tree, branch or array) is missing or of the wrong form."""


class ProblemDefinitionError(DiffanaError, ValueError):
    """A benchmark (toy problem) definition file is missing or malformed."""


class ConvergenceWarning(UserWarning):
    """A fit did not converge; its result is flagged and should not be trusted."""


class PrecisionWarning(UserWarning):
    """Statistics were asked for in less than float64 precision."""


class PrecisionError(DiffanaError, RuntimeError):
    """A statistical function that cannot work in float32 (CLs, limits, significances)
    was called with JAX's 64-bit mode off."""


class SpecWarning(UserWarning):
    """A specification that pyhf accepts, but whose likelihood is degenerate somewhere
    (a bin whose expected rate is not positive)."""
