"""Interpolation codes of HistFactory, as in pyhf (CERN-OPEN-2012-016).

Normsys (multiplicative, one factor per modifier/sample/channel entry):

- ``code1``: piecewise exponential, ``hi**alpha`` for ``alpha > 0``, ``lo**(-alpha)`` else.
- ``code4``: ``code1`` outside ``|alpha| < 1``, a 6th-order polynomial inside that matches
  value, first and second derivative at ``alpha = ±1`` (pyhf's default).

Histosys (additive, deltas ``up = hi - nom`` and ``dn = nom - lo`` per bin):

- ``code0``: piecewise linear, ``alpha * up`` for ``alpha > 0``, ``alpha * dn`` else.
- ``code4p``: ``code0`` outside ``|alpha| <= 1``, a polynomial inside (pyhf's default).

Histosys deltas are linear in ``up`` and ``dn``, so both codes are written as per-modifier
coefficients ``(c_up, c_dn)`` that contract with the stacked deltas in one matrix product.
All functions are smooth JAX code without NaN gradients for positive ``lo``/``hi``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = [
    "HISTOSYS_CODES",
    "NORMSYS_CODES",
    "code4_coefficients",
    "histosys_coefficients",
    "normsys_derivatives",
    "normsys_factors",
    "normsys_logs",
]

NORMSYS_CODES = ("code1", "code4")
HISTOSYS_CODES = ("code0", "code4p")

# Inverse of the 6x6 system that fixes the code-4 polynomial's coefficients from the
# value, first and second derivative of the exponential branches at alpha0 = 1.
_CODE4_AINV = np.array(
    [
        [15.0 / 16, -15.0 / 16, -7.0 / 16, -7.0 / 16, 1.0 / 16, -1.0 / 16],
        [3.0 / 2, 3.0 / 2, -9.0 / 16, 9.0 / 16, 1.0 / 16, 1.0 / 16],
        [-5.0 / 8, 5.0 / 8, 5.0 / 8, 5.0 / 8, -1.0 / 8, 1.0 / 8],
        [3.0 / -2, 3.0 / -2, -7.0 / -8, 7.0 / -8, -1.0 / 8, -1.0 / 8],
        [3.0 / 16, -3.0 / 16, -3.0 / 16, -3.0 / 16, 1.0 / 16, -1.0 / 16],
        [1.0 / 2, 1.0 / 2, -5.0 / 16, 5.0 / 16, 1.0 / 16, 1.0 / 16],
    ]
)


def _xlogx(xp: Any, x: Any, power: int) -> Any:
    """``x * log(x) ** power``, continued by its limit 0 at ``x = 0`` (NaN below 0)."""
    positive = x > 0
    value = x * xp.log(xp.where(positive, x, 1.0)) ** power
    return xp.where(positive, value, xp.where(x == 0, 0.0, xp.nan))


def code4_coefficients(xp: Any, lo: Any, hi: Any) -> Any:
    """Polynomial coefficients ``a_1..a_6`` of normsys code 4, shape ``lo.shape + (6,)``.

    `xp` is ``numpy`` or ``jax.numpy``; `lo`, `hi` are the normsys factors. pyhf needs
    them positive (a concrete spec with a zero factor is refused with a `SpecError`); a
    factor that reaches 0 in a traced model (an emptied template during training) uses
    the continuous limit ``x log x -> 0``, so the likelihood stays finite, and a negative
    factor gives NaN.
    """
    b = xp.stack(
        [
            hi - 1.0,
            lo - 1.0,
            _xlogx(xp, hi, 1),
            -_xlogx(xp, lo, 1),
            _xlogx(xp, hi, 2),
            _xlogx(xp, lo, 2),
        ],
        axis=-1,
    )
    return b @ xp.asarray(_CODE4_AINV.T)


def normsys_logs(xp: Any, lo: Any, hi: Any) -> Any:
    """``log(lo)`` and ``log(hi)`` of normsys factors, ``(entries, 2)``, 0 where a factor
    is not positive (:func:`normsys_derivatives` handles those apart): the logarithms
    of the exponential branches, computed once per model instead of at every
    evaluation."""

    def log(x: Any) -> Any:
        return xp.log(xp.where(x > 0, x, 1.0))

    return xp.stack([log(lo), log(hi)], axis=-1)


def _exp_branch(base: Array, exponent: Array, log_base: Array) -> tuple[Array, Array]:
    """``base ** exponent`` for ``exponent >= 0`` as ``exp(exponent * log(base))``, with
    finite gradients where ``base > 0``; 0 at ``base = 0`` (``exponent > 0``) and NaN
    below. `log_base` is ``log(base)`` (0 where `base` is not positive), also the
    derivative of the power's logarithm in `exponent`."""
    positive = base > 0
    value = jnp.exp(exponent * log_base)
    edge = jnp.where(base == 0, jnp.where(exponent == 0, 1.0, 0.0), jnp.nan)
    return jnp.where(positive, value, edge), log_base


def _polynomial(coefficients: Array, alpha: Array, order: int) -> Array:
    """The `order`-th derivative (0, 1, 2) of ``1 + sum_k a_k alpha^k`` (k = 1..6), by
    Horner's rule; `coefficients` is `(entries, 6)`."""
    c = [coefficients[..., k] for k in range(6)]
    if order == 0:
        out = c[5]
        for k in range(4, -1, -1):
            out = c[k] + alpha * out
        return 1.0 + alpha * out
    if order == 1:
        out = 6.0 * c[5]
        for k in range(4, -1, -1):
            out = (k + 1.0) * c[k] + alpha * out
        return out
    out = 30.0 * c[5]
    for k in range(4, 0, -1):
        out = (k + 1.0) * k * c[k] + alpha * out
    return out


def normsys_factors(
    code: str,
    alpha: Float[Array, " entries"],
    lo: Float[Array, " entries"],
    hi: Float[Array, " entries"],
    coefficients: Float[Array, "entries 6"] | None = None,
    logs: Float[Array, "entries 2"] | None = None,
) -> Float[Array, " entries"]:
    """Multiplicative normsys factors for nuisance values `alpha` (one per entry).

    **Arguments:**

    - `code`: ``"code1"`` or ``"code4"``.
    - `alpha`: the nuisance parameter of each entry.
    - `lo`, `hi`: the factors at ``alpha = -1`` and ``alpha = +1``.
    - `coefficients`: `code4_coefficients(jnp, lo, hi)`, required for code 4.
    - `logs`: `normsys_logs(jnp, lo, hi)`, computed here when not given.

    **Returns:** the factor of each entry.
    """
    return normsys_derivatives(code, alpha, lo, hi, coefficients, logs, orders=(0,))[0]


def normsys_derivatives(
    code: str,
    alpha: Float[Array, " entries"],
    lo: Float[Array, " entries"],
    hi: Float[Array, " entries"],
    coefficients: Float[Array, "entries 6"] | None = None,
    logs: Float[Array, "entries 2"] | None = None,
    orders: tuple[int, ...] = (0, 1, 2),
) -> tuple[Float[Array, " entries"], ...]:
    """The normsys factors (order 0) and their first and second derivatives in `alpha`
    (orders 1, 2), in closed form; arguments as :func:`normsys_factors`.

    Outside the polynomial region a factor is ``b ** |alpha|`` with ``b = hi`` or
    ``lo``, whose derivatives are ``(+-log b)^k`` times it. At ``alpha = 0`` (code 1),
    ``alpha = 1`` and ``alpha = -1`` (code 4) they are one-sided, as automatic
    differentiation of the branches gives them.
    """
    if logs is None:
        logs = normsys_logs(jnp, lo, hi)
    log_lo, log_hi = logs[..., 0], logs[..., 1]
    if code == "code1":
        up = alpha > 0
        value, log_base = _exp_branch(
            jnp.where(up, hi, lo), jnp.where(up, alpha, -alpha), jnp.where(up, log_hi, log_lo)
        )
        slope = jnp.where(up, log_base, -log_base)
        out = {0: value, 1: slope * value, 2: slope * slope * value}
        return tuple(out[k] for k in orders)
    if code == "code4":
        if coefficients is None:
            raise ValueError("normsys code4 needs the polynomial coefficients")
        above = alpha >= 1.0
        inside = (alpha > -1.0) & ~above
        value, log_base = _exp_branch(
            jnp.where(above, hi, lo),
            jnp.where(above, alpha, -alpha),
            jnp.where(above, log_hi, log_lo),
        )
        slope = jnp.where(above, log_base, -log_base)
        outside = {0: value, 1: slope * value, 2: slope * slope * value}
        # the polynomial is evaluated at a point inside its region everywhere, so that
        # its (discarded) values elsewhere never overflow
        a_in = jnp.where(inside, alpha, 0.0)
        return tuple(
            jnp.where(inside, _polynomial(coefficients, a_in, k), outside[k]) for k in orders
        )
    raise ValueError(
        f"unknown normsys interpolation code {code!r}; expected one of {NORMSYS_CODES}"
    )


def histosys_coefficients(
    code: str, alpha: Float[Array, " modifiers"]
) -> tuple[Float[Array, " modifiers"], Float[Array, " modifiers"]]:
    """Coefficients ``(c_up, c_dn)`` with ``delta = c_up * up + c_dn * dn`` per modifier.

    **Arguments:**

    - `code`: ``"code0"`` or ``"code4p"``.
    - `alpha`: the nuisance parameter of each histosys modifier.

    **Returns:** two arrays shaped like `alpha`.
    """
    zero = jnp.zeros_like(alpha)
    if code == "code0":
        positive = alpha > 0
        return jnp.where(positive, alpha, zero), jnp.where(positive, zero, alpha)
    if code == "code4p":
        # inside |alpha| <= 1: alpha * S + t * A with S = (up + dn) / 2, A = (up - dn) / 16
        a2 = alpha * alpha
        t = a2 * (a2 * (a2 * 3.0 - 10.0) + 15.0)
        inside_up = 0.5 * alpha + 0.0625 * t
        inside_dn = 0.5 * alpha - 0.0625 * t
        above, below = alpha > 1.0, alpha < -1.0
        c_up = jnp.where(below, zero, jnp.where(above, alpha, inside_up))
        c_dn = jnp.where(below, alpha, jnp.where(above, zero, inside_dn))
        return c_up, c_dn
    raise ValueError(
        f"unknown histosys interpolation code {code!r}; expected one of {HISTOSYS_CODES}"
    )
