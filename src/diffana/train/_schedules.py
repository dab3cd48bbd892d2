"""Annealing schedules for relaxation parameters (bandwidth, slope, temperature)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["Annealing", "as_annealing"]


@dataclasses.dataclass(frozen=True)
class Annealing:
    """A relaxation parameter moved from `start` to `end` over the training steps.

    Soft cuts get sharper (slope up), kernel bandwidths and softmax temperatures get
    smaller, so that the trained pipeline approaches its hard twin.

    **Fields:**

    - `start`, `end`: the values at the first and the last step (positive).
    - `kind`: ``"geometric"`` (default; constant ratio per step, natural for scales),
      ``"linear"`` or ``"cosine"``.

    Example:

    >>> a = Annealing(0.1, 0.01)
    >>> a(0, 3), round(a(1, 3), 4), a(2, 3)
    (0.1, 0.0316, 0.01)
    """

    start: float
    end: float
    kind: str = "geometric"

    def __post_init__(self):
        if self.kind not in ("geometric", "linear", "cosine"):
            raise ValueError(f"Annealing kind must be geometric/linear/cosine, got {self.kind!r}")
        if not (self.start > 0 and self.end > 0):
            raise ValueError(f"Annealing values must be positive, got {self.start}, {self.end}")

    def __call__(self, step: int, steps: int) -> float:
        """The value at `step` of a run of `steps` steps."""
        t = 0.0 if steps <= 1 else min(max(step / (steps - 1), 0.0), 1.0)
        if self.kind == "geometric":
            return float(self.start * (self.end / self.start) ** t)
        if self.kind == "linear":
            return float(self.start + (self.end - self.start) * t)
        return float(self.end + 0.5 * (self.start - self.end) * (1 + math.cos(math.pi * t)))


def as_annealing(value: Any, name: str = "relaxation") -> Annealing:
    """An `Annealing` from a number (constant), a mapping ``{start, end, kind}`` or itself."""
    if isinstance(value, Annealing):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Annealing(float(value), float(value))
    if isinstance(value, Mapping):
        try:
            return Annealing(
                float(value["start"]), float(value["end"]), str(value.get("kind", "geometric"))
            )
        except KeyError as err:
            raise ValueError(f"{name}: annealing needs 'start' and 'end', missing {err}") from None
    raise ValueError(f"{name}: expected a number or {{start, end[, kind]}}, got {value!r}")
