"""Trainable analysis pipelines: events -> histogram, each with a soft and a hard twin.

Every pipeline is an `equinox.Module` with

- ``histogram(sample, relax) -> Float[Array, "bins"]``: the differentiable histogram of a
  weighted `Sample`, `relax` being its relaxation parameter (kernel bandwidth, softmax
  temperature or cut slope, named by ``relax_name``);
- ``hard_histogram(sample) -> Float[Array, "bins"]``: its hard twin (argmax, hard bin edges,
  hard cuts): every event lands in exactly one bin with its full weight, so unit weights
  give integer counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from diffana import relax
from diffana.train._data import CutVariable, Sample

__all__ = [
    "Classifier",
    "CutSelection",
    "KDEBins",
    "Network",
    "SoftmaxBins",
    "standardisation",
]


def standardisation(x: Float[np.ndarray, "events features"]) -> tuple[tuple, tuple]:
    """Per-feature mean and standard deviation of a sample, as static tuples."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return tuple(map(float, x.mean(axis=0))), tuple(map(float, std))


class Network(eqx.Module):
    """A ReLU multilayer perceptron applied event by event to standardised features.

    **Arguments:**

    - `n_features`, `n_outputs`: input and output sizes.
    - `hidden`: widths of the hidden layers (equal widths, e.g. ``(100, 100)``).
    - `key`: PRNG key of the initialisation.
    - `shift`, `scale`: fixed standardisation ``(x - shift) / scale`` of the inputs (arrays
      that gradients do not reach).
    - `dtype`: parameter dtype; float32 is faster on CPU, downstream statistics are
      float64 regardless.
    """

    mlp: eqx.nn.MLP
    shift: Float[Array, " features"]
    scale: Float[Array, " features"]

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        hidden: Sequence[int],
        *,
        key: PRNGKeyArray,
        shift: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        dtype=jnp.float32,
    ):
        hidden = tuple(int(h) for h in hidden)
        if not hidden or len(set(hidden)) != 1:
            raise ValueError(f"hidden must be equal positive widths, got {hidden!r}")
        self.mlp = eqx.nn.MLP(
            n_features, n_outputs, hidden[0], len(hidden), activation=jax.nn.relu,
            key=key, dtype=dtype,
        )  # fmt: skip
        # Arrays rather than static metadata, so that networks standardised on different
        # samples share one compiled training step; they are never trained (stop_gradient).
        self.shift = jnp.asarray(shift if shift is not None else np.zeros(n_features), float)
        self.scale = jnp.asarray(scale if scale is not None else np.ones(n_features), float)

    def __call__(self, x: Float[Array, "events features"]) -> Float[Array, "events outputs"]:
        dtype = self.mlp.layers[0].weight.dtype
        shift, scale = jax.lax.stop_gradient((self.shift, self.scale))
        z = (x - shift[None, :]) / scale[None, :]
        out = jax.vmap(self.mlp)(z.astype(dtype))
        return out.astype(jnp.float64)


class SoftmaxBins(eqx.Module):
    """A network with one output per bin: soft bins are the softmax of its logits divided
    by a temperature (INFERNO), hard bins the argmax."""

    net: Network
    relax_name: ClassVar[str] = "temperature"

    def histogram(self, sample: Sample, relax_value) -> Float[Array, " bins"]:
        return relax.softmax_hist(self.net(sample.x), relax_value, weights=sample.w)

    def hard_histogram(self, sample: Sample) -> Float[Array, " bins"]:
        return relax.hard_softmax_hist(self.net(sample.x), None, weights=sample.w)


class KDEBins(eqx.Module):
    """A network with one sigmoid output, histogrammed with a Gaussian-kernel (KDE)
    histogram on [0, 1] (neos); optionally with trainable, ordered bin edges."""

    net: Network
    edge_params: Float[Array, " inner"] | None
    n_bins: int = eqx.field(static=True)
    relax_name: ClassVar[str] = "bandwidth"

    def __init__(self, net: Network, n_bins: int, trainable_edges: bool = True):
        self.net = net
        self.n_bins = int(n_bins)
        # Zero parameters give uniform edges (ordered_edges' parametrisation).
        self.edge_params = jnp.zeros(self.n_bins) if trainable_edges else None

    def edges(self) -> Float[Array, " edges"]:
        if self.edge_params is None:
            return jnp.linspace(0.0, 1.0, self.n_bins + 1)
        return relax.ordered_edges(self.edge_params, 0.0, 1.0)

    def summary(self, x: Float[Array, "events features"]) -> Float[Array, " events"]:
        return jax.nn.sigmoid(self.net(x)[:, 0])

    def histogram(self, sample: Sample, relax_value) -> Float[Array, " bins"]:
        return relax.hist(
            self.summary(sample.x), self.edges(), relax_value, weights=sample.w, overflow="fold"
        )

    def hard_histogram(self, sample: Sample) -> Float[Array, " bins"]:
        return relax.hard_hist(
            self.summary(sample.x), self.edges(), None, weights=sample.w, overflow="fold"
        )


class Classifier(eqx.Module):
    """A binary classifier (one logit), binned afterwards in `n_bins` uniform bins of the
    signal probability on [0, 1]; its soft twin is a KDE histogram of the same bins."""

    net: Network
    n_bins: int = eqx.field(static=True)
    relax_name: ClassVar[str] = "bandwidth"

    def logits(self, x: Float[Array, "events features"]) -> Float[Array, " events"]:
        return self.net(x)[:, 0]

    def edges(self) -> Float[Array, " edges"]:
        return jnp.linspace(0.0, 1.0, self.n_bins + 1)

    def histogram(self, sample: Sample, relax_value) -> Float[Array, " bins"]:
        p = jax.nn.sigmoid(self.logits(sample.x))
        return relax.hist(p, self.edges(), relax_value, weights=sample.w, overflow="fold")

    def hard_histogram(self, sample: Sample) -> Float[Array, " bins"]:
        p = jax.nn.sigmoid(self.logits(sample.x))
        return relax.hard_hist(p, self.edges(), None, weights=sample.w, overflow="fold")


class CutSelection(eqx.Module):
    """Rectangular cuts: one threshold per `CutVariable`, in standardised units of its
    feature; an event's weight is the product of sigmoid cuts (hard twin: step functions).
    One bin: the selected yield."""

    thresholds: Float[Array, " cuts"]
    shift: Float[Array, " features"]
    scale: Float[Array, " features"]
    cuts: tuple[CutVariable, ...] = eqx.field(static=True)
    relax_name: ClassVar[str] = "slope"

    def __init__(self, thresholds, cuts: Sequence[CutVariable], shift, scale):
        self.thresholds = jnp.asarray(thresholds, dtype=jnp.float64)
        self.cuts = tuple(cuts)
        self.shift = jnp.asarray(shift, dtype=jnp.float64)
        self.scale = jnp.asarray(scale, dtype=jnp.float64)

    def physical_thresholds(self) -> Float[Array, " cuts"]:
        """The thresholds in the features' own units."""
        idx = np.asarray([c.feature for c in self.cuts], dtype=int)
        return self.thresholds * self.scale[idx] + self.shift[idx]

    def _standardised(self, x: Float[Array, "events features"], i: int) -> Float[Array, " events"]:
        f = self.cuts[i].feature
        shift, scale = jax.lax.stop_gradient((self.shift[f], self.scale[f]))
        return (x[:, f] - shift) / scale

    def weights(self, x, slope) -> Float[Array, " events"]:
        w = jnp.ones(x.shape[0])
        for i, c in enumerate(self.cuts):
            w = w * relax.cut(self._standardised(x, i), self.thresholds[i], slope, c.direction)
        return w

    def hard_weights(self, x) -> Float[Array, " events"]:
        w = jnp.ones(x.shape[0])
        for i, c in enumerate(self.cuts):
            w = w * relax.hard_cut(self._standardised(x, i), self.thresholds[i], 1.0, c.direction)
        return w

    def histogram(self, sample: Sample, relax_value) -> Float[Array, " 1"]:
        return jnp.sum(sample.w * self.weights(sample.x, relax_value))[None]

    def hard_histogram(self, sample: Sample) -> Float[Array, " 1"]:
        return jnp.sum(sample.w * self.hard_weights(sample.x))[None]
