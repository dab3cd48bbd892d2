"""Weighted events, the data every training step reads: a PyTree of arrays per sample.

A `Sample` holds the features and per-event weights of one physics sample; training
draws minibatches with `subsample`; `CutVariable` names one threshold of a rectangular
selection on a feature column. These are plain arrays and tuples: the problems that
generate them (`diffana.problems`) build on this module, not the reverse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
from jaxtyping import Array, Float

__all__ = ["CutVariable", "Sample", "subsample"]


class Sample(NamedTuple):
    """Events of one physics sample: features and per-event weights.

    The weights are normalised to the expected number of events in the analysis, so
    ``w.sum()`` is the sample's expected yield and a histogram of ``x`` weighted by
    ``w`` is directly a HistFactory template.

    **Fields:**

    - `x`: `Float[Array, "events features"]`, the observables.
    - `w`: `Float[Array, "events"]`, the event weights (expected events per MC event).
    - `w2`: `Float[Array, "events"]` or None: each event's contribution to the sum of
      squared weights of the full sample (None: ``w**2``). `subsample` sets it so that a
      minibatch still estimates the Monte Carlo statistical uncertainty of the full sample.
    """

    x: Float[Array, "events features"]
    w: Float[Array, " events"]
    w2: Float[Array, " events"] | None = None

    def sumw2(self) -> Float[Array, " events"]:
        """Per-event contributions to the sum of squared weights (``w2``, else ``w**2``)."""
        return self.w**2 if self.w2 is None else self.w2


def subsample(key: Array, samples: Mapping[str, Sample], size: int) -> dict[str, Sample]:
    """Draw `size` events per sample (with replacement), reweighted to the same yield.

    Used for minibatches: the expected yields of the batch equal those of the full
    sample, so batch histograms estimate the full templates without bias; likewise the
    batch's `Sample.w2` estimates the full sample's sum of squared weights.

    **Arguments:**

    - `key`: a JAX PRNG key.
    - `samples`: ``{name: Sample}``.
    - `size`: events per sample in the batch.

    **Returns:** ``{name: Sample}`` with `size` events each.
    """
    out = {}
    keys = jax.random.split(key, len(samples))
    for k, (name, s) in zip(keys, sorted(samples.items()), strict=True):
        n = s.x.shape[0]
        idx = jax.random.randint(k, (size,), 0, n)
        out[name] = Sample(s.x[idx], s.w[idx] * (n / size), s.sumw2()[idx] * (n / size))
    return out


class CutVariable(NamedTuple):
    """One threshold of a cut-based selection: keep events with ``x[feature] <direction> t``.

    **Fields:** `name` (e.g. ``"pt_min"``), `feature` (column of `Sample.x`),
    `direction` (``">"`` or ``"<"``).
    """

    name: str
    feature: int
    direction: str
