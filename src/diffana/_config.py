"""Numerical precision policy of diffana.

Statistics (likelihoods, fits, test statistics) need float64: a profile-likelihood
ratio is a small difference of large numbers, and float32 loses it. The policy is:

* ``import diffana`` switches on JAX's 64-bit mode (``jax_enable_x64``) unless the
  environment variable ``DIFFANA_DISABLE_X64`` is set to ``1`` before the import.
* Neural networks may still run in float32: create their parameters with
  ``dtype=jnp.float32``; histograms and everything downstream are cast to float64.
* Statistical entry points call :func:`check_float64`, which warns with
  :class:`diffana.PrecisionWarning` when they are handed float32 inputs or when 64-bit
  mode is off, naming the argument.
"""

from __future__ import annotations

import os
import warnings

import jax
import jax.numpy as jnp

from diffana.errors import PrecisionWarning

__all__ = ["X64_ENV_VAR", "check_float64", "enable_x64", "x64_enabled"]

X64_ENV_VAR = "DIFFANA_DISABLE_X64"


def enable_x64() -> None:
    """Switch on JAX's 64-bit mode (what ``import diffana`` does by default)."""
    jax.config.update("jax_enable_x64", True)


def x64_enabled() -> bool:
    """Whether JAX's 64-bit mode is on."""
    return bool(jax.config.read("jax_enable_x64"))


def _apply_policy_on_import() -> None:
    if os.environ.get(X64_ENV_VAR, "0").strip() not in ("1", "true", "yes"):
        enable_x64()


def check_float64(x, name: str, where: str) -> None:
    """Warn when ``x`` (an array, or anything with a ``dtype``) is not float64.

    Runs at trace time only (it reads the static dtype), so it costs nothing in a
    jitted function.

    **Arguments:**

    - `x`: the array handed to a statistical function.
    - `name`: the argument's name, used in the warning.
    - `where`: the function or model that received it.
    """
    if not x64_enabled():
        warnings.warn(
            f"{where}: JAX's 64-bit mode is off ({X64_ENV_VAR} is set?), so '{name}' "
            "is computed in float32; profile-likelihood statistics can be wrong. "
            "Unset it or call diffana.enable_x64() before building arrays.",
            PrecisionWarning,
            stacklevel=3,
        )
        return
    dtype = getattr(x, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and dtype != jnp.float64:
        warnings.warn(
            f"{where}: '{name}' has dtype {dtype}; statistics are computed in float64, "
            "so it is cast up, but the precision already lost upstream is not recovered.",
            PrecisionWarning,
            stacklevel=3,
        )
