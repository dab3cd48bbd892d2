"""Annealing schedules for slopes, bandwidths and temperatures.

Plain functions `step -> value` (the `optax.Schedule` protocol): they accept a Python or
traced integer step, so they run inside a jitted training step and compose with
`optax.join_schedules`. Annealing a relaxation parameter towards zero during training
shrinks the bias of the soft analysis relative to its hard evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

__all__ = ["anneal_exponential", "anneal_geometric", "anneal_linear"]

Schedule = Callable[[Int[ArrayLike, ""]], Float[Array, ""]]


def _positive(value, name, where, allow_zero=False):
    bound = ">= 0" if allow_zero else "> 0"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: '{name}' must be a number {bound}, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{where}: '{name}' must be finite and {bound}, got {value!r}")
    return v


def _steps(value, name, where, minimum=1):
    try:
        v = int(value)
    except (TypeError, ValueError):
        v = minimum - 1
    if v != value or v < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{where}: '{name}' must be {kind}, got {value!r}")
    return v


def _progress(step, begin, steps):
    return jnp.clip((jnp.asarray(step, dtype=float) - begin) / steps, 0.0, 1.0)


def anneal_geometric(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """Geometric (log-linear) interpolation from `init_value` to `end_value`.

    `init_value * (end_value / init_value) ** t`, with `t` going from 0 at
    `transition_begin` to 1 at `transition_begin + transition_steps`, constant outside.
    Each step multiplies the value by the same factor: the natural path for a scale
    parameter such as a cut slope or a kernel bandwidth.

    **Arguments:**

    - `init_value`, `end_value`: positive values at the start and end.
    - `transition_steps`: positive int, length of the transition.
    - `transition_begin`: non-negative int, steps held at `init_value` first.

    **Returns:** a schedule `step -> value` (float64 scalar array).

    Example:

    >>> from diffana.relax import anneal_geometric
    >>> slope = anneal_geometric(1.0, 0.01, 100)
    >>> [round(float(slope(s)), 6) for s in (0, 50, 100, 500)]
    [1.0, 0.1, 0.01, 0.01]
    """
    where = "diffana.relax.anneal_geometric"
    a = _positive(init_value, "init_value", where)
    b = _positive(end_value, "end_value", where)
    n = _steps(transition_steps, "transition_steps", where)
    t0 = _steps(transition_begin, "transition_begin", where, minimum=0)
    log_ratio = np.log(b / a)

    def schedule(step):
        return a * jnp.exp(log_ratio * _progress(step, t0, n))

    return schedule


def anneal_linear(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """Linear interpolation from `init_value` to `end_value` (>= 0), constant outside.

    As `optax.linear_schedule`, with the values checked. **Returns:** a schedule
    `step -> value` (float64 scalar array).

    Example:

    >>> from diffana.relax import anneal_linear
    >>> [float(anneal_linear(1.0, 0.5, 10)(s)) for s in (0, 5, 20)]
    [1.0, 0.75, 0.5]
    """
    where = "diffana.relax.anneal_linear"
    a = _positive(init_value, "init_value", where, allow_zero=True)
    b = _positive(end_value, "end_value", where, allow_zero=True)
    n = _steps(transition_steps, "transition_steps", where)
    t0 = _steps(transition_begin, "transition_begin", where, minimum=0)

    def schedule(step):
        return a + (b - a) * _progress(step, t0, n)

    return schedule


def anneal_exponential(init_value: float, floor: float, half_life: float) -> Schedule:
    """Exponential decay towards a floor: `floor + (init_value - floor) * 2**(-step / half_life)`.

    Approaches `floor` without reaching it; keep `floor > 0` for a slope or bandwidth so
    that gradients never vanish entirely.

    **Arguments:**

    - `init_value`: the value at step 0, > 0.
    - `floor`: the asymptote, >= 0 and <= `init_value`.
    - `half_life`: steps over which the distance to the floor halves, > 0.

    **Returns:** a schedule `step -> value` (float64 scalar array).

    Example:

    >>> from diffana.relax import anneal_exponential
    >>> bandwidth = anneal_exponential(1.0, 0.1, half_life=10)
    >>> [round(float(bandwidth(s)), 4) for s in (0, 10, 20, 1000)]
    [1.0, 0.55, 0.325, 0.1]
    """
    where = "diffana.relax.anneal_exponential"
    a = _positive(init_value, "init_value", where)
    f = _positive(floor, "floor", where, allow_zero=True)
    if f > a:
        raise ValueError(f"{where}: 'floor' must be <= 'init_value', got {floor!r} > {a!r}")
    tau = _positive(half_life, "half_life", where)

    def schedule(step):
        return f + (a - f) * jnp.exp2(-jnp.maximum(jnp.asarray(step, dtype=float), 0.0) / tau)

    return schedule
