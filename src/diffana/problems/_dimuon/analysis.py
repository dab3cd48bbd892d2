"""The object-level dimuon analysis: how the files are read, the dense feature layout,
the systematic variations, and the two trainable pipelines.

`NANOAOD_SCHEMA` reads the files into `diffana.io.Events`; `NanoAODLayout` flattens them
into the feature matrix of `diffana.train.Sample` (and back). `dimuon_variations` are the
shape systematics as `diffana.systematics` variations. `pair_selection` is the soft muon
selection with trainable thresholds (pT, isolation), the soft choice of the leading
opposite-charge pair, the b-jet veto and the MET cut; `DimuonCuts` histograms m_μμ of
the chosen pair, `DimuonNeural` a network's score of every candidate pair.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from diffana import relax
from diffana.errors import DataError
from diffana.io import Collection, Events, Objects, Schema
from diffana.problems._dimuon.kinematics import pair_mass
from diffana.systematics import ColumnShift, Variation, WeightVariation
from diffana.train import Sample

__all__ = [
    "CUT_NAMES",
    "CUT_SCALES",
    "DEFAULT_CUTS",
    "DERIVED_FEATURES",
    "JET_PT_MIN",
    "LAYOUT",
    "NANOAOD_SCHEMA",
    "DimuonCuts",
    "DimuonNeural",
    "NanoAODLayout",
    "derived_features",
    "dimuon_variations",
    "pair_features",
    "pair_selection",
]

#: How the dimuon analysis reads the files (`diffana.io`): muons sorted by pT and padded
#: to 3, jets (sorted by nominal pT) to 4, the event-level columns it uses, and
#: ``genWeight`` as the event weight. (Electrons and jet angles are in the files but not
#: used by this analysis.)
NANOAOD_SCHEMA = Schema(
    collections=[
        Collection(
            "Muon", ["pt", "eta", "phi", "mass", "charge", "pfRelIso04_all"], 3, sort_by="pt"
        ),
        Collection("Jet", ["pt", "btagDeepB", "pt_jesUp", "pt_jesDown"], 4, sort_by="pt"),
    ],
    columns=[
        "MET_pt",
        "MET_pt_jesUp",
        "MET_pt_jesDown",
        "PV_npvs",
        "puWeight",
        "puWeightUp",
        "puWeightDown",
    ],
    weight="genWeight",
)


# ---------------------------------------------------------------------------------------
# dense layout: Events <-> feature matrix (the bench's `Sample.x`)
# ---------------------------------------------------------------------------------------

#: Event-level features derived from the objects (recomputed after every variation):
#: the invariant mass and pTs of the two leading muons, the larger of their isolations,
#: the largest b-tag score among jets with pT > 30 GeV, the missing transverse momentum.
DERIVED_FEATURES = ("mll", "mu1_pt", "mu2_pt", "mu_iso_max", "btag_max", "met")
JET_PT_MIN = 30.0  # GeV, jets entering the b-tag veto


class NanoAODLayout:
    """The flat feature layout of `NANOAOD_SCHEMA` events (one row per event).

    Columns: every object field per slot (``Muon0_pt``, ``Muon1_pt``, ...), each
    collection's validity per slot (``Muon0_valid``), the event-level columns, then
    `DERIVED_FEATURES`. `flatten` and `unflatten` convert between `diffana.io.Events` and
    the matrix exactly (the event weights travel separately, as `Sample.w`).
    """

    def __init__(self, schema: Schema = NANOAOD_SCHEMA):
        self.schema = schema
        names: list[str] = []
        self.fields: dict[str, dict[str, list[int]]] = {}
        self.valid: dict[str, list[int]] = {}
        for coll in schema.collections:
            self.fields[coll.name] = {}
            for field in coll.branch_map:
                self.fields[coll.name][field] = list(range(len(names), len(names) + coll.n_max))
                names += [f"{coll.name}{i}_{field}" for i in range(coll.n_max)]
            self.valid[coll.name] = list(range(len(names), len(names) + coll.n_max))
            names += [f"{coll.name}{i}_valid" for i in range(coll.n_max)]
        self.columns = {c: len(names) + i for i, c in enumerate(schema.column_map)}
        names += list(schema.column_map)
        self.derived = {c: len(names) + i for i, c in enumerate(DERIVED_FEATURES)}
        names += list(DERIVED_FEATURES)
        self.names = tuple(names)

    def index(self, name: str) -> int:
        """Column of feature `name`."""
        try:
            return self.names.index(name)
        except ValueError:
            raise DataError(f"no feature {name!r}; features: {self.names}") from None

    def unflatten(self, x: Float[Array, "events features"], w: Float[Array, " events"]) -> Events:
        """The `Events` of a feature matrix and its weights."""
        objects = {}
        for coll in self.schema.collections:
            fields = {f: x[:, idx] for f, idx in self.fields[coll.name].items()}
            mask = x[:, self.valid[coll.name]] > 0.5
            objects[coll.name] = Objects(fields, mask, coll.fill_value)
        columns = {c: x[:, i] for c, i in self.columns.items()}
        return Events(objects, columns, jnp.asarray(w, dtype=jnp.float64))

    def flatten(self, events: Events) -> Float[Array, "events features"]:
        """The feature matrix of `events` (derived features recomputed)."""
        parts = []
        for coll in self.schema.collections:
            o = events.objects[coll.name]
            parts += [o.fields[f] for f in self.fields[coll.name]]
            parts.append(o.mask.astype(jnp.float64))
        parts.append(jnp.stack([events.columns[c] for c in self.columns], axis=1))
        parts.append(derived_features(events))
        return jnp.concatenate(parts, axis=1)


def derived_features(events: Events) -> Float[Array, "events derived"]:
    """`DERIVED_FEATURES` of every event (zeros where the objects are missing)."""
    mu = events["Muon"]
    both = mu.mask[:, 0] & mu.mask[:, 1]
    mll = pair_mass(
        *(mu[f][:, 0] for f in ("pt", "eta", "phi", "mass")),
        *(mu[f][:, 1] for f in ("pt", "eta", "phi", "mass")),
    )
    iso = jnp.where(mu.mask[:, :2], mu["pfRelIso04_all"][:, :2], 0.0)
    jets = events["Jet"]
    central = jets.mask & (jets["pt"] > JET_PT_MIN)
    btag = jnp.max(jnp.where(central, jets["btagDeepB"], 0.0), axis=1)
    return jnp.stack(
        [
            jnp.where(both, mll, 0.0),
            jnp.where(mu.mask[:, 0], mu["pt"][:, 0], 0.0),
            jnp.where(mu.mask[:, 1], mu["pt"][:, 1], 0.0),
            jnp.max(iso, axis=1),
            btag,
            events["MET_pt"],
        ],
        axis=1,
    )


# ---------------------------------------------------------------------------------------
# systematic variations (diffana.systematics)
# ---------------------------------------------------------------------------------------


def _ratio(num, den):
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 1.0)


def dimuon_variations(mu_scale: float = 0.01) -> tuple[Variation, ...]:
    """The shape systematics of the dimuon problem, as `diffana.systematics` variations.

    - ``mu_scale``: muon pT × (1 ± `mu_scale`).
    - ``jes``: jet pT from the ``Jet_pt_jesUp/Down`` branches and the missing momentum
      from ``MET_pt_jesUp/Down``. The companion branches move along (the up variant's
      ``pt_jesUp`` is the up-shift applied twice, its ``pt_jesDown`` the nominal), so a
      pipeline reading any of them sees one consistently shifted event.
    - ``pileup``: ``puWeightUp/Down`` replacing the nominal ``puWeight`` factor.
    """

    def jet(events, which, power):
        pt = events["Jet.pt"]
        return pt * _ratio(events[f"Jet.pt_jes{which}"], pt) ** power

    def met(events, which, k):
        nominal = events["MET_pt"]
        return jnp.maximum(nominal + k * (events[f"MET_pt_jes{which}"] - nominal), 0.0)

    return (
        ColumnShift("mu_scale", {"Muon.pt": (1.0 + mu_scale, 1.0 - mu_scale)}),
        ColumnShift(
            "jes",
            {
                "Jet.pt": ("pt_jesUp", "pt_jesDown"),
                "Jet.pt_jesUp": (lambda e: jet(e, "Up", 2), lambda e: e["Jet.pt"]),
                "Jet.pt_jesDown": (lambda e: e["Jet.pt"], lambda e: jet(e, "Down", 2)),
                "MET_pt": ("MET_pt_jesUp", "MET_pt_jesDown"),
                "MET_pt_jesUp": (lambda e: met(e, "Up", 2), lambda e: e["MET_pt"]),
                "MET_pt_jesDown": (lambda e: e["MET_pt"], lambda e: met(e, "Down", 2)),
            },
        ),
        WeightVariation("pileup", "puWeightUp", "puWeightDown", nominal="puWeight"),
    )


# ---------------------------------------------------------------------------------------
# the object-level analysis: soft muon selection -> leading pair -> m_μμ
# ---------------------------------------------------------------------------------------

#: The trainable thresholds of the dimuon selection, their units and "hand-chosen" values.
CUT_NAMES = ("mu_pt_min", "mu_iso_max", "btag_veto", "met_max")
#: Hand-chosen default cuts: muons with pT > 25 GeV and relative isolation < 0.15, no jet
#: (pT > 30 GeV) with b-tag score above 0.5, missing pT below 80 GeV.
DEFAULT_CUTS = (25.0, 0.15, 0.5, 80.0)
#: Scale of each threshold: the parameters are `(threshold - default) / scale`, so one
#: learning rate and one annealed slope (in these units) suit every cut.
CUT_SCALES = (10.0, 0.1, 0.2, 20.0)


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for j in range(n) for i in range(j)]


def pair_selection(
    thresholds: Float[Array, " 4"],
    events: Events,
    slopes: Float[Array, " 4"] | None,
    *,
    hard: bool = False,
) -> tuple[Float[Array, "events pairs"], Float[Array, "events pairs"]]:
    """The leading selected opposite-charge muon pair of every event, softly.

    Muons pass with probability `cut(pT > t0) * cut(iso < t1)` (hard: both hard cuts);
    for pT-ordered slots the pair `(i, j)`, `i < j`, is the leading selected pair with
    probability `p_i p_j Π_{k < j, k ≠ i} (1 - p_k)`, and counts if the charges are
    opposite. The event passes the b-jet veto with `Π_jets (1 - cut(pT > 30) cut(btag > t2))`
    and the missing-momentum cut with `cut(MET < t3)`.

    **Arguments:**

    - `thresholds`: `(4,)` physical thresholds in the order of `CUT_NAMES`.
    - `events`: the events (`NANOAOD_SCHEMA` collections and columns).
    - `slopes`: `(4,)` sigmoid widths in the thresholds' units (ignored when `hard`).
    - `hard`: use the hard twins (step functions).

    **Returns:** `(masses, weights)`, both `(events, pairs)`: the invariant mass of each
    candidate pair and its probability times the event weight. Summing the weights over
    pairs gives the soft selected yield; for hard cuts exactly one pair (or none) counts.
    """
    mu = events["Muon"]
    s = jnp.ones(4) if slopes is None else slopes
    p = relax.object_cut(mu["pt"], mu.mask, thresholds[0], s[0], ">", hard=hard)
    p = p * relax.object_cut(mu["pfRelIso04_all"], mu.mask, thresholds[1], s[1], "<", hard=hard)
    jets = events["Jet"]
    jet_pt = relax.object_cut(jets["pt"], jets.mask, JET_PT_MIN, 1.0, ">", hard=True)
    b = jet_pt * relax.object_cut(jets["btagDeepB"], jets.mask, thresholds[2], s[2], ">", hard=hard)
    veto = jnp.prod(1.0 - b, axis=1)
    met = relax.cut(events["MET_pt"], thresholds[3], s[3], "<", hard=hard)
    event_w = events.weights * veto * met
    masses, weights = [], []
    for i, j in _pairs(mu.n_max):
        others = [k for k in range(j) if k != i]
        w = p[:, i] * p[:, j]
        for k in others:
            w = w * (1.0 - p[:, k])
        opposite = (mu["charge"][:, i] * mu["charge"][:, j]) < 0
        weights.append(jnp.where(opposite, w, 0.0) * event_w)
        masses.append(
            pair_mass(
                *(mu[f][:, i] for f in ("pt", "eta", "phi", "mass")),
                *(mu[f][:, j] for f in ("pt", "eta", "phi", "mass")),
            )
        )
    return jnp.stack(masses, axis=1), jnp.stack(weights, axis=1)


def pair_features(events: Events) -> Float[Array, "events pairs features"]:
    """Per candidate pair: m_μμ, pT(μμ), both pTs, |Δη|, both isolations, the largest
    b-tag score of jets with pT > 30 GeV, MET and the number of such jets."""
    mu = events["Muon"]
    jets = events["Jet"]
    central = jets.mask & (jets["pt"] > JET_PT_MIN)
    btag = jnp.max(jnp.where(central, jets["btagDeepB"], 0.0), axis=1)
    njet = jnp.sum(central, axis=1).astype(jnp.float64)
    out = []
    for i, j in _pairs(mu.n_max):
        pt_i, pt_j = mu["pt"][:, i], mu["pt"][:, j]
        dphi = mu["phi"][:, i] - mu["phi"][:, j]
        ptll = jnp.sqrt(jnp.maximum(pt_i**2 + pt_j**2 + 2 * pt_i * pt_j * jnp.cos(dphi), 0.0))
        m = pair_mass(
            *(mu[f][:, i] for f in ("pt", "eta", "phi", "mass")),
            *(mu[f][:, j] for f in ("pt", "eta", "phi", "mass")),
        )
        out.append(
            jnp.stack(
                [
                    m,
                    ptll,
                    pt_i,
                    pt_j,
                    jnp.abs(mu["eta"][:, i] - mu["eta"][:, j]),
                    mu["pfRelIso04_all"][:, i],
                    mu["pfRelIso04_all"][:, j],
                    btag,
                    events["MET_pt"],
                    njet,
                ],
                axis=1,
            )
        )
    return jnp.stack(out, axis=1)


def _float_tuple(values) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values).reshape(-1))


class DimuonCuts(eqx.Module):
    """Object-level cut analysis: trainable thresholds, histogram of m_μμ.

    The pipeline protocol of `diffana bench` (`histogram(sample, relax)`,
    `hard_histogram(sample)`), on `Sample`s in the `NanoAODLayout`. The soft twin uses
    sigmoid cuts of width `relax * CUT_SCALES`; the mass is binned exactly (it does not
    depend on the thresholds, only the pair weights do), so gradients flow through the
    weights and there is no kernel bias.

    **Fields:**

    - `params`: `(4,)` trainable, `(threshold - DEFAULT_CUTS) / CUT_SCALES`.
    - `edges`: the m_μμ bin edges in GeV (static).
    """

    params: Float[Array, " 4"]
    edges: tuple[float, ...] = eqx.field(static=True, converter=_float_tuple)
    relax_name: ClassVar[str] = "slope"

    @classmethod
    def from_thresholds(cls, thresholds, edges) -> DimuonCuts:
        """A pipeline at physical `thresholds` (order `CUT_NAMES`)."""
        t = jnp.asarray(thresholds, dtype=jnp.float64)
        params = (t - jnp.asarray(DEFAULT_CUTS)) / jnp.asarray(CUT_SCALES)
        return cls(params, tuple(float(e) for e in edges))

    def physical_thresholds(self) -> Float[Array, " 4"]:
        """The thresholds in GeV / isolation / b-tag units, order `CUT_NAMES`."""
        return jnp.asarray(DEFAULT_CUTS) + self.params * jnp.asarray(CUT_SCALES)

    def histogram_events(self, events: Events, relax_value) -> Float[Array, " bins"]:
        """The soft m_μμ histogram of `events` (sigmoid widths `relax * CUT_SCALES`)."""
        slopes = relax_value * jnp.asarray(CUT_SCALES)
        m, w = pair_selection(self.physical_thresholds(), events, slopes)
        return relax.hard_hist(m.reshape(-1), jnp.asarray(self.edges), None, w.reshape(-1))

    def hard_histogram_events(self, events: Events) -> Float[Array, " bins"]:
        """The hard-cut m_μμ histogram of `events`."""
        m, w = pair_selection(self.physical_thresholds(), events, None, hard=True)
        return relax.hard_hist(m.reshape(-1), jnp.asarray(self.edges), None, w.reshape(-1))

    def histogram(self, sample: Sample, relax_value) -> Float[Array, " bins"]:
        return self.histogram_events(LAYOUT.unflatten(sample.x, sample.w), relax_value)

    def hard_histogram(self, sample: Sample) -> Float[Array, " bins"]:
        return self.hard_histogram_events(LAYOUT.unflatten(sample.x, sample.w))


class DimuonNeural(eqx.Module):
    """neos-style neural summary on top of the object-level selection.

    Every candidate muon pair is scored by a small network on `pair_features`
    (standardised); the score `sigmoid(net)` is histogrammed with a Gaussian-kernel
    histogram on [0, 1] (width `relax`), each pair weighted by its selection probability
    (`pair_selection` with the trainable thresholds of `cuts`, sigmoid widths
    `cut_slope * CUT_SCALES`). Hard twin: hard cuts, hard pair choice, ordinary histogram
    of the score.
    """

    net: eqx.nn.MLP
    cuts: DimuonCuts
    shift: tuple[float, ...] = eqx.field(static=True, converter=_float_tuple)
    scale: tuple[float, ...] = eqx.field(static=True, converter=_float_tuple)
    n_bins: int = eqx.field(static=True, converter=int)
    cut_slope: float = eqx.field(static=True, converter=float)
    relax_name: ClassVar[str] = "bandwidth"

    def scores(self, events: Events) -> Float[Array, "events pairs"]:
        f = pair_features(events)
        z = (f - jnp.asarray(self.shift)[None, None, :]) / jnp.asarray(self.scale)[None, None, :]
        flat = z.reshape(-1, z.shape[-1])
        out = jax.vmap(self.net)(flat.astype(jnp.float32)).astype(jnp.float64)
        return jax.nn.sigmoid(out[:, 0]).reshape(z.shape[:-1])

    def edges(self) -> Float[Array, " edges"]:
        return jnp.linspace(0.0, 1.0, self.n_bins + 1)

    def histogram_events(self, events: Events, relax_value) -> Float[Array, " bins"]:
        """KDE histogram (bandwidth `relax_value`) of the pair scores of `events`."""
        slopes = self.cut_slope * jnp.asarray(CUT_SCALES)
        _, w = pair_selection(self.cuts.physical_thresholds(), events, slopes)
        s = self.scores(events)
        return relax.hist(s.reshape(-1), self.edges(), relax_value, w.reshape(-1), "fold")

    def hard_histogram_events(self, events: Events) -> Float[Array, " bins"]:
        """Hard cuts, hard pair choice, ordinary histogram of the pair scores."""
        _, w = pair_selection(self.cuts.physical_thresholds(), events, None, hard=True)
        s = self.scores(events)
        return relax.hard_hist(s.reshape(-1), self.edges(), None, w.reshape(-1), "fold")

    def histogram(self, sample: Sample, relax_value) -> Float[Array, " bins"]:
        return self.histogram_events(LAYOUT.unflatten(sample.x, sample.w), relax_value)

    def hard_histogram(self, sample: Sample) -> Float[Array, " bins"]:
        return self.hard_histogram_events(LAYOUT.unflatten(sample.x, sample.w))


#: The layout of `NANOAOD_SCHEMA` events, shared by the pipelines and the problem.
LAYOUT = NanoAODLayout()
