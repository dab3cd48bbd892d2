"""Argument checks shared by the relaxations, run in Python at trace time.

Shapes and dtypes are static, so they are checked always. Values are checked only when
they are concrete (a numpy array, a Python number or a JAX array outside a transformation):
inside `jax.jit`, `jax.grad` or `jax.vmap` the value of a traced argument is unknown, and
the caller is responsible for it (see each function's docstring).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_float",
    "broadcast_shape",
    "check_direction",
    "check_increasing",
    "check_mask",
    "check_ndim",
    "check_overflow",
    "check_positive",
    "concrete_value",
    "float_dtype",
]

_DIRECTIONS = (">", ">=", "<", "<=")
_OVERFLOWS = ("drop", "fold")


def float_dtype():
    """float64, or float32 when JAX's 64-bit mode is off (no warning either way)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def as_float(a, name: str, where: str):
    """`a` as a JAX array of the working float dtype; rejects complex and non-numeric input."""
    try:
        dtype = jnp.result_type(a)
    except TypeError as err:
        raise ValueError(f"{where}: '{name}' must be a real numeric array, got {a!r}") from err
    if jnp.issubdtype(dtype, jnp.complexfloating) or not (
        jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)
    ):
        raise ValueError(f"{where}: '{name}' must be a real numeric array, got dtype {dtype}")
    return jnp.asarray(a, dtype=float_dtype())


def concrete_value(a) -> np.ndarray | None:
    """The value of `a` as a numpy array, or None when `a` is traced (value unknown)."""
    if isinstance(a, jax.core.Tracer):
        return None
    try:
        return np.asarray(a)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None


def broadcast_shape(where: str, **arrays) -> tuple[int, ...]:
    """The common broadcast shape of the named arrays, or a ValueError naming them."""
    shapes = {name: tuple(jnp.shape(a)) for name, a in arrays.items()}
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        listed = ", ".join(f"'{n}' {s}" for n, s in shapes.items())
        raise ValueError(f"{where}: shapes do not broadcast together: {listed}") from None


def check_ndim(a, ndim: int, name: str, where: str, what: str) -> None:
    shape = jnp.shape(a)
    if len(shape) != ndim:
        raise ValueError(f"{where}: '{name}' must have shape {what}, got shape {shape}")


def check_positive(a, name: str, where: str) -> None:
    """Raise when the concrete value of `a` is not > 0 everywhere (NaN included)."""
    v = concrete_value(a)
    if v is not None and not np.all(v > 0):
        raise ValueError(f"{where}: '{name}' must be > 0, got {v}")


def check_increasing(edges, name: str, where: str) -> None:
    """`edges` must be 1-D with >= 2 entries; concrete edges finite and strictly increasing."""
    shape = jnp.shape(edges)
    if len(shape) != 1 or shape[0] < 2:
        raise ValueError(
            f"{where}: '{name}' must be a 1-D array of at least 2 bin edges, got shape {shape}"
        )
    v = concrete_value(edges)
    if v is None:
        return
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{where}: '{name}' must be finite, got {v}")
    if not np.all(np.diff(v) > 0):
        raise ValueError(f"{where}: '{name}' must be strictly increasing, got {v}")


def check_direction(direction: str, where: str) -> None:
    if direction not in _DIRECTIONS:
        raise ValueError(f"{where}: 'direction' must be one of {_DIRECTIONS}, got {direction!r}")


def check_overflow(overflow: str, where: str) -> None:
    if overflow not in _OVERFLOWS:
        raise ValueError(f"{where}: 'overflow' must be one of {_OVERFLOWS}, got {overflow!r}")


def check_mask(mask, shape: Sequence[int], where: str, against: str = "x"):
    """`mask` must be a boolean array of exactly `shape` (the shape of `against`)."""
    mshape = tuple(jnp.shape(mask))
    if mshape != tuple(shape):
        raise ValueError(
            f"{where}: 'mask' must have the shape of '{against}' {tuple(shape)}, got {mshape}"
        )
    dtype = jnp.result_type(mask)
    if not jnp.issubdtype(dtype, jnp.bool_):
        raise ValueError(f"{where}: 'mask' must be boolean, got dtype {dtype}")
    return jnp.asarray(mask)
