"""Gradient checks for your own pipelines, usable from pytest.

A gradient is only trusted once it matches finite differences. These helpers compare
``jax.grad`` (or any VJP-based gradient) of a scalar function against central finite
differences in float64, for fits (implicit gradients) and relaxed ops alike.

Example:

>>> import jax.numpy as jnp
>>> from diffana.testing import assert_grad_matches_fd
>>> assert_grad_matches_fd(lambda x: jnp.sum(jnp.sin(x) ** 2), jnp.array([0.1, 0.7]))
array([0.19866933, 0.98544973])
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

__all__ = ["assert_grad_matches_fd", "finite_difference_grad"]


def finite_difference_grad(
    fun: Callable[[Array], ArrayLike],
    x: Float[ArrayLike, "..."],
    *,
    eps: float | Float[ArrayLike, "..."] = 1e-6,
    relative: bool = True,
) -> Float[np.ndarray, "..."]:
    """Central finite-difference gradient of a scalar function, in float64.

    **Arguments:**

    - `fun`: maps an array shaped like `x` to a scalar.
    - `x`: the point, any shape.
    - `eps`: the step. With `relative=True` (default) the step for component `i` is
      `eps * max(|x_i|, 1)`, which suits yields spanning many orders of magnitude.
    - `relative`: whether `eps` is relative to the component's size.

    **Returns:** a float64 numpy array shaped like `x`.
    """
    x = np.asarray(x, dtype=np.float64)
    flat = x.ravel()
    steps = np.broadcast_to(np.asarray(eps, dtype=np.float64), x.shape).ravel()
    if relative:
        steps = steps * np.maximum(np.abs(flat), 1.0)
    grad = np.empty_like(flat)
    f = jax.jit(lambda v: jnp.asarray(fun(v.reshape(x.shape)), dtype=jnp.float64))
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += steps[i]
        down[i] -= steps[i]
        grad[i] = (float(f(jnp.asarray(up))) - float(f(jnp.asarray(down)))) / (2 * steps[i])
    return grad.reshape(x.shape)


def assert_grad_matches_fd(
    fun: Callable[[Array], ArrayLike],
    x: Float[ArrayLike, "..."],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-8,
    eps: float | Float[ArrayLike, "..."] = 1e-6,
    relative: bool = True,
) -> Float[np.ndarray, "..."]:
    """Assert that `jax.grad(fun)(x)` is finite and matches central finite differences.

    **Arguments:**

    - `fun`: maps an array shaped like `x` to a scalar.
    - `x`: the point, any shape (cast to float64).
    - `rtol`, `atol`: tolerances of the comparison (as in `numpy.testing.assert_allclose`).
    - `eps`, `relative`: the finite-difference step, see :func:`finite_difference_grad`.

    **Returns:** the autodiff gradient as a numpy array, for further checks.

    **Raises:** `AssertionError` naming the components that disagree, or any NaN/inf.
    """
    x64 = jnp.asarray(x, dtype=jnp.float64)
    auto = np.asarray(jax.grad(lambda v: jnp.asarray(fun(v), dtype=jnp.float64))(x64))
    if not np.all(np.isfinite(auto)):
        raise AssertionError(f"autodiff gradient has non-finite entries: {auto}")
    fd = finite_difference_grad(fun, x64, eps=eps, relative=relative)
    np.testing.assert_allclose(
        auto, fd, rtol=rtol, atol=atol, err_msg="autodiff gradient != finite differences"
    )
    return auto
