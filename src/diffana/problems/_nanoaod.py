"""A realistic dimuon resonance search on NanoAOD-like ROOT files.

The generator writes, per physics sample, a ROOT file with a NanoAOD-like ``Events``
TTree (``nMuon``, ``Muon_pt``, ``Muon_eta``, ..., ``nJet``, ``Jet_pt``,
``Jet_btagDeepB``, ``MET_pt``, ``PV_npvs``, ``puWeight``, ...), written with uproot. The
analysis reads them back with `diffana.io`, selects muons with soft cuts on trainable
thresholds (pT, isolation), vetoes b-tagged jets and large missing transverse momentum
(trainable thresholds), builds the invariant mass of the two leading selected
opposite-charge muons, histograms it per sample and systematic variation, and fits it
with a HistFactory model whose histosys/normsys modifiers come from the variations.

**Samples.**

- `signal`: a narrow scalar resonance X -> μμ (m = 200 GeV, Γ = 3 GeV) produced in
  gluon fusion: isotropic decay, harder pT(μμ) and more initial-state jets than
  Drell-Yan.
- `dy`: Drell-Yan Z/γ* -> μμ with m_μμ > 100 GeV (a steeply falling spectrum,
  1 + cos²θ decay angle), the irreducible background.
- `ttbar`: top-pair production with t -> bW, W -> μν (full two-body decay chains, so
  b jets, muons and missing momentum are correlated); in a fraction of events one W
  decays to eν and the second muon comes from a b-hadron decay (non-isolated).
- `fakes`: multijet events with two non-prompt muons from heavy-flavour decays inside
  jets (non-isolated, soft, any charge combination).

**Systematic variations** (first-class inputs, `diffana.systematics`):

- `mu_scale`: muon momentum scale ±1% (a shifted column, `Muon.pt`).
- `jes`: jet energy scale, ``Jet_pt_jesUp``/``Jet_pt_jesDown`` and the propagated
  ``MET_pt_jesUp``/``MET_pt_jesDown`` branches (shifted columns).
- `pileup`: pileup reweighting ``puWeightUp``/``puWeightDown`` (an event-weight
  variation); isolation degrades with the number of vertices, so it changes the
  selection efficiency as well as the normalisation.
- normalisation uncertainties (normsys) per background and the luminosity.

**Benchmark.** `DimuonNanoAOD` is the `diffana bench` problem ``dimuon``
(``toy_problems/dimuon.toml``); the generic cut methods of the bench cut on event-level
features of the two leading muons. The object-level methods (`DIMUON_METHODS`: the
hand-chosen `DEFAULT_CUTS`, a scan of the four thresholds, gradient-optimised sigmoid
cuts, and a neos-style neural summary of the candidate pairs) run with
`run_dimuon_benchmark` or ``python -m diffana.problems._nanoaod --mode quick``, and are
evaluated exactly like bench runs: hard cuts and hard histograms on an independent test
sample, diffana's fits and pyhf's on the exported workspace.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import awkward as ak
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import uproot
from jaxtyping import Array, Float

from diffana import relax
from diffana._config import compiler_options
from diffana.errors import DataError, ProblemDefinitionError
from diffana.io import Collection, Events, Objects, Schema
from diffana.problems._base import (
    SPLITS,
    CutVariable,
    Problem,
    Sample,
    TemplateKey,
    Yields,
    split_seed,
)
from diffana.systematics import (
    ColumnShift,
    Variation,
    WeightVariation,
    build_workspace,
    variant_labels,
    vary,
)

__all__ = [
    "CUT_NAMES",
    "CUT_SCALES",
    "DEFAULT_CUTS",
    "DERIVED_FEATURES",
    "DIMUON_METHODS",
    "NANOAOD_SAMPLES",
    "NANOAOD_SCHEMA",
    "SCAN_RANGES",
    "DimuonCuts",
    "DimuonNanoAOD",
    "DimuonNeural",
    "NanoAODLayout",
    "derived_features",
    "dimuon_loss",
    "dimuon_results_table",
    "dimuon_variations",
    "generate_nanoaod",
    "jes_shift",
    "pair_features",
    "pair_selection",
    "run_dimuon_benchmark",
    "train_dimuon_method",
    "write_nanoaod",
    "write_nanoaod_dataset",
]

#: Physics samples of the dimuon problem, signal first.
NANOAOD_SAMPLES = ("signal", "dy", "ttbar", "fakes")

MUON_MASS = 0.1056584
ELECTRON_MASS = 0.000511
W_MASS, TOP_MASS, B_MASS = 80.4, 172.5, 4.8
X_MASS, X_WIDTH = 200.0, 3.0
MC_PILEUP, DATA_PILEUP, DATA_PILEUP_SHIFT = 20.0, 21.0, 1.5


# ---------------------------------------------------------------------------------------
# kinematics (numpy)
# ---------------------------------------------------------------------------------------


def _four_vector(mass, pt, y, phi):
    mt = np.sqrt(mass**2 + pt**2)
    return np.stack([mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)])


def _two_body(rng, parent, m1, m2, spin1=False):
    """Two-body decay of `parent` (4, n) into daughters of masses m1, m2: isotropic in the
    parent's rest frame, or (`spin1`) with a ``1 + cos²θ`` distribution about the beam
    axis, as for a vector boson made from quarks (Drell-Yan)."""
    n = parent.shape[1]
    e, px, py, pz = parent
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 1e-12))
    m1 = np.broadcast_to(m1, (n,))
    m2 = np.broadcast_to(m2, (n,))
    pstar2 = (mass**2 - (m1 + m2) ** 2) * (mass**2 - (m1 - m2) ** 2) / (4 * mass**2)
    pstar = np.sqrt(np.maximum(pstar2, 0.0))
    cos_t = rng.uniform(-1.0, 1.0, n)
    if spin1:  # accept-reject on (1 + c²) / 2
        redo = rng.uniform(size=n) > (1.0 + cos_t**2) / 2.0
        while redo.any():
            cos_t[redo] = rng.uniform(-1.0, 1.0, redo.sum())
            redo[redo] = rng.uniform(size=redo.sum()) > (1.0 + cos_t[redo] ** 2) / 2.0
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi = rng.uniform(-np.pi, np.pi, n)
    p = pstar * np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t])
    e1 = np.sqrt(m1**2 + pstar**2)
    e2 = np.sqrt(m2**2 + pstar**2)
    beta = np.stack([px, py, pz]) / e
    gamma = e / mass
    factor = gamma**2 / (gamma + 1.0)  # (γ - 1) / β², finite at β = 0

    def boost(en, mom):
        bp = np.sum(beta * mom, axis=0)
        mom_lab = mom + (factor * bp + gamma * en) * beta
        return np.concatenate([(gamma * (en + bp))[None], mom_lab])

    return boost(e1, p), boost(e2, -p)


def _pt_eta_phi(v):
    pt = np.hypot(v[1], v[2])
    eta = np.arcsinh(v[3] / np.maximum(pt, 1e-9))
    return pt, eta, np.arctan2(v[2], v[1])


def _wrap(phi):
    return (phi + np.pi) % (2 * np.pi) - np.pi


def jes_shift(pt, eta):
    """Relative jet-energy-scale uncertainty of a jet: `1.5% + 1% |η|/4.7 + 1 GeV / pT`.

    The up (down) variation multiplies the jet's pT by ``1 + jes_shift`` (``1 - ...``).
    Works on numpy and JAX arrays alike.
    """
    return 0.015 + 0.01 * abs(eta) / 4.7 + 1.0 / pt


def _pileup_weight(npv, mean):
    """Ratio of Poisson(npv; mean) to Poisson(npv; MC_PILEUP), capped at 5."""
    log_w = npv * np.log(mean / MC_PILEUP) - (mean - MC_PILEUP)
    return np.minimum(np.exp(log_w), 5.0)


class _Objects:
    """Flat per-object arrays with the event each object belongs to."""

    def __init__(self):
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, event, **fields):
        event = np.asarray(event)
        self.parts.append(
            {"event": event, **{k: np.broadcast_to(v, event.shape) for k, v in fields.items()}}
        )

    def collection(self, n_events, keep, fields) -> ak.Array:
        """Objects passing `keep`, sorted by pT (descending) within each event."""
        cols = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        sel = keep(cols)
        cols = {k: v[sel] for k, v in cols.items()}
        order = np.lexsort((-cols["pt"], cols["event"]))
        cols = {k: v[order] for k, v in cols.items()}
        counts = np.bincount(cols["event"], minlength=n_events)
        return ak.zip(
            {f: ak.unflatten(cols[f].astype(dtype), counts) for f, dtype in fields.items()}
        )


def _muon_fields():
    return {
        "pt": np.float32,
        "eta": np.float32,
        "phi": np.float32,
        "mass": np.float32,
        "charge": np.int32,
        "pfRelIso04_all": np.float32,
    }


def _prompt_iso(rng, n, npv):
    return rng.exponential(0.03, n) + 0.0025 * npv * rng.uniform(0.0, 1.0, n)


def _nonprompt_iso(rng, n, npv):
    return rng.gamma(2.0, 0.2, n) + 0.0025 * npv * rng.uniform(0.0, 1.0, n)


def _reco_muon_pt(rng, pt):
    """Muon momentum resolution: 1% + 0.01% per GeV."""
    return pt * (1.0 + rng.normal(0.0, 1.0, pt.shape) * (0.01 + 1e-4 * pt))


def _isr_jets(rng, jets, n, mean):
    k = rng.poisson(mean, n)
    ev = np.repeat(np.arange(n), k)
    m = len(ev)
    is_b = rng.uniform(size=m) < 0.03
    pt = 20.0 + rng.exponential(25.0, m)
    jets.add(
        ev,
        pt=pt,
        eta=np.clip(rng.normal(0.0, 2.0, m), -4.7, 4.7),
        phi=rng.uniform(-np.pi, np.pi, m),
        mass=pt * rng.uniform(0.05, 0.2, m),
        btagDeepB=np.where(is_b, rng.beta(5.0, 1.2, m), rng.beta(0.6, 6.0, m)),
    )


def _fake_electrons(rng, electrons, n, npv):
    k = rng.poisson(0.15, n)
    ev = np.repeat(np.arange(n), k)
    m = len(ev)
    electrons.add(
        ev,
        pt=5.0 + rng.exponential(8.0, m),
        eta=rng.uniform(-2.5, 2.5, m),
        phi=rng.uniform(-np.pi, np.pi, m),
        charge=rng.choice([-1, 1], m),
        pfRelIso03_all=_nonprompt_iso(rng, m, npv[ev]),
    )


def _dimuon_resonance(rng, n, mass, pt_scale, y_width, muons, npv, spin1):
    """A resonance of masses `mass` decaying to μ+μ- (see `_two_body` for `spin1`)."""
    parent = _four_vector(mass, rng.gamma(1.5, pt_scale, n), rng.normal(0.0, y_width, n), 0.0)
    phi0 = rng.uniform(-np.pi, np.pi, n)
    c, s = np.cos(phi0), np.sin(phi0)
    parent[1], parent[2] = parent[1] * c - parent[2] * s, parent[1] * s + parent[2] * c
    mu1, mu2 = _two_body(rng, parent, MUON_MASS, MUON_MASS, spin1)
    ev = np.arange(n)
    for mu, q in ((mu1, -1), (mu2, 1)):
        pt, eta, phi = _pt_eta_phi(mu)
        muons.add(
            ev,
            pt=_reco_muon_pt(rng, pt),
            eta=eta,
            phi=phi,
            mass=MUON_MASS,
            charge=q,
            pfRelIso04_all=_prompt_iso(rng, n, npv),
        )


def _top_pairs(rng, n, muons, electrons, jets, npv):
    """tt̄ -> bW bW with W -> μν (or eν in 25% of the events, the second muon then
    coming from the b-hadron decay); returns the neutrinos' summed pT vector."""
    ev = np.arange(n)
    pt_t = rng.gamma(2.0, 45.0, n)
    y_t = rng.normal(0.0, 1.0, n)
    phi_t = rng.uniform(-np.pi, np.pi, n)
    tops = [
        _four_vector(TOP_MASS, pt_t, y_t, phi_t),
        _four_vector(
            TOP_MASS,
            pt_t * rng.uniform(0.6, 1.4, n),
            rng.normal(0.0, 1.0, n),
            _wrap(phi_t + np.pi + rng.normal(0, 0.5, n)),
        ),
    ]
    electron_w = rng.uniform(size=n) < 0.25
    nu_x = np.zeros(n)
    nu_y = np.zeros(n)
    for k, top in enumerate(tops):
        w, b = _two_body(rng, top, W_MASS, B_MASS)
        lep, nu = _two_body(rng, w, MUON_MASS, 0.0)
        nu_x += nu[1]
        nu_y += nu[2]
        pt_b, eta_b, phi_b = _pt_eta_phi(b)
        pt_l, eta_l, phi_l = _pt_eta_phi(lep)
        q = 1 if k == 0 else -1
        jet_pt = pt_b * rng.normal(1.0, 0.1, n)
        if k == 1:
            # second W -> eν in a quarter of the events; a b-hadron muon replaces its muon
            e_ev = ev[electron_w]
            electrons.add(
                e_ev,
                pt=pt_l[electron_w],
                eta=eta_l[electron_w],
                phi=phi_l[electron_w],
                charge=q,
                pfRelIso03_all=_prompt_iso(rng, len(e_ev), npv[e_ev]),
            )
            frac = rng.beta(2.0, 4.0, n)
            muons.add(
                e_ev,
                pt=_reco_muon_pt(rng, (frac * pt_b)[electron_w]),
                eta=(eta_b + rng.normal(0.0, 0.05, n))[electron_w],
                phi=_wrap(phi_b + rng.normal(0.0, 0.05, n))[electron_w],
                mass=MUON_MASS,
                charge=rng.choice([-1, 1], len(e_ev)),
                pfRelIso04_all=_nonprompt_iso(rng, len(e_ev), npv[e_ev]),
            )
            jet_pt = np.where(electron_w, jet_pt * (1.0 - frac), jet_pt)
            mu_ev = ev[~electron_w]
            sel = ~electron_w
        else:
            mu_ev = ev
            sel = np.ones(n, bool)
        muons.add(
            mu_ev,
            pt=_reco_muon_pt(rng, pt_l[sel]),
            eta=eta_l[sel],
            phi=phi_l[sel],
            mass=MUON_MASS,
            charge=q,
            pfRelIso04_all=_prompt_iso(rng, len(mu_ev), npv[mu_ev]) * 1.5,
        )
        jets.add(
            ev,
            pt=jet_pt,
            eta=eta_b,
            phi=phi_b,
            mass=np.full(n, B_MASS) + jet_pt * 0.05,
            btagDeepB=np.where(
                rng.uniform(size=n) < 0.85, rng.beta(5.0, 1.2, n), rng.beta(1, 3, n)
            ),
        )
    _isr_jets(rng, jets, n, 1.2)
    return nu_x, nu_y


def _multijet_fakes(rng, n, muons, jets, npv):
    """Dijets with a non-prompt muon in each jet.

    Generated with importance sampling, as multijet samples are (binned or weighted in
    the hard scale): the hard scale and the muon isolations are drawn from broader
    proposals (``pt_hat - 25 ~ Exp(100 GeV)``, ``iso ~ Exp(0.25)``) and every event
    carries the density ratio to the physical distributions (``Exp(45 GeV)``,
    ``Gamma(2, 0.2)``) as its generator weight, so the isolated, high-pT tail that
    survives the selection is populated with many events of small weight.

    **Returns:** the neutrinos' summed pT vector and the generator weights.
    """
    ev = np.arange(n)
    excess = rng.exponential(100.0, n)
    pt_hat = 25.0 + excess
    log_w = np.log(100.0 / 45.0) - excess * (1.0 / 45.0 - 1.0 / 100.0)
    phi1 = rng.uniform(-np.pi, np.pi, n)
    phis = (phi1, _wrap(phi1 + np.pi + rng.normal(0.0, 0.3, n)))
    heavy = rng.uniform(size=n) < 0.6
    nu_x = np.zeros(n)
    nu_y = np.zeros(n)
    for k, phi in enumerate(phis):
        pt_jet = pt_hat * (1.0 if k == 0 else rng.uniform(0.7, 1.0, n))
        eta = rng.normal(0.0, 1.6, n)
        frac = rng.beta(2.0, 4.0, n)
        nu_frac = rng.beta(1.5, 6.0, n)
        iso = rng.exponential(0.25, n)
        # Gamma(2, 0.2) density over the Exp(0.25) proposal density
        log_w += np.log(iso / 0.04) - iso / 0.2 - np.log(4.0) + 4.0 * iso
        muons.add(
            ev,
            pt=_reco_muon_pt(rng, frac * pt_jet),
            eta=eta + rng.normal(0.0, 0.05, n),
            phi=_wrap(phi + rng.normal(0.0, 0.05, n)),
            mass=MUON_MASS,
            charge=rng.choice([-1, 1], n),
            pfRelIso04_all=iso + 0.0025 * npv * rng.uniform(0.0, 1.0, n),
        )
        nu_x += nu_frac * pt_jet * np.cos(phi)
        nu_y += nu_frac * pt_jet * np.sin(phi)
        jet_pt = pt_jet * (1.0 - frac - nu_frac)
        jets.add(
            ev,
            pt=jet_pt,
            eta=eta,
            phi=phi,
            mass=jet_pt * rng.uniform(0.05, 0.2, n),
            btagDeepB=np.where(heavy, rng.beta(4.0, 1.5, n), rng.beta(0.6, 6.0, n)),
        )
    _isr_jets(rng, jets, n, 1.0)
    return nu_x, nu_y, np.exp(log_w)


def generate_nanoaod(
    sample: str, n: int, seed: int, *, mll_min: float | None = None
) -> dict[str, ak.Array | np.ndarray]:
    """Generate `n` NanoAOD-like events of `sample` (one of `NANOAOD_SAMPLES`).

    Deterministic in (`sample`, `n`, `seed`). Objects are stored NanoAOD-style: muons
    with pT > 3 GeV and |η| < 2.4, electrons with pT > 5 GeV and |η| < 2.5, jets with
    pT > 15 GeV and |η| < 4.7, each sorted by pT (descending). Momenta in GeV.

    **Arguments:**

    - `sample`: ``"signal"``, ``"dy"``, ``"ttbar"`` or ``"fakes"``.
    - `n`: number of events (>= 1).
    - `seed`: numpy seed.
    - `mll_min`: optional skim: keep only events with at least two muons whose leading
      pair has an invariant mass above `mll_min` GeV (events are generated in batches
      until `n` pass). The skim efficiency is then part of the sample's cross-section.

    **Returns:** ``{"Muon": record array, "Electron": ..., "Jet": ..., "MET_pt": ...,
    "MET_phi", "MET_pt_jesUp", "MET_pt_jesDown", "PV_npvs", "genWeight", "puWeight",
    "puWeightUp", "puWeightDown"}``; the ``Jet`` records carry ``pt_jesUp`` and
    ``pt_jesDown``.

    Example:

    >>> ev = generate_nanoaod("signal", 200, seed=1)
    >>> sorted(ev["Muon"].fields)
    ['charge', 'eta', 'mass', 'pfRelIso04_all', 'phi', 'pt']
    >>> bool(ak.mean(ak.num(ev["Muon"])) > 1.5)
    True
    """
    if sample not in NANOAOD_SAMPLES:
        raise DataError(f"unknown sample {sample!r}; expected one of {NANOAOD_SAMPLES}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise DataError(f"generate_nanoaod: n must be an int >= 1, got {n!r}")
    n = int(n)
    rng = np.random.default_rng([NANOAOD_SAMPLES.index(sample), int(seed)])
    if mll_min is None:
        return _generate(rng, sample, n)
    parts, have, batch = [], 0, n
    for _ in range(1000):
        ev = _generate(rng, sample, batch)
        mu = ev["Muon"]
        two = ak.to_numpy(ak.num(mu) >= 2)
        lead = ak.pad_none(mu, 2, clip=True)
        m = _pair_mass(
            *(ak.to_numpy(ak.fill_none(lead[f][:, 0], 0.0)).astype(np.float64) for f in _PTEPM),
            *(ak.to_numpy(ak.fill_none(lead[f][:, 1], 0.0)).astype(np.float64) for f in _PTEPM),
        )
        keep = np.flatnonzero(two & (np.asarray(m) > mll_min))
        parts.append({k: v[keep] for k, v in ev.items()})
        have += len(keep)
        if have >= n:
            break
        eff = max(have / ((len(parts)) * batch), 1e-3)
        batch = int(min(max((n - have) / eff * 1.2, 1000), 20 * n))
    else:
        raise DataError(f"generate_nanoaod: the skim mll_min={mll_min} keeps almost nothing")
    out = {}
    for k in parts[0]:
        pieces = [p[k] for p in parts]
        joined = (
            ak.concatenate(pieces) if isinstance(pieces[0], ak.Array) else np.concatenate(pieces)
        )
        out[k] = joined[:n]
    return out


_PTEPM = ("pt", "eta", "phi", "mass")


def _generate(rng, sample: str, n: int) -> dict[str, ak.Array | np.ndarray]:
    npv = rng.poisson(MC_PILEUP, n)
    muons, electrons, jets = _Objects(), _Objects(), _Objects()
    electrons.add(np.zeros(0, int), pt=0.0, eta=0.0, phi=0.0, charge=0, pfRelIso03_all=0.0)
    if sample == "signal":
        u = rng.uniform(np.arctan(-25.0 / 1.5), np.arctan(25.0 / 1.5), n)
        mass = X_MASS + 0.5 * X_WIDTH * np.tan(u)  # Breit-Wigner in ±25 GeV
        _dimuon_resonance(rng, n, mass, 25.0, 1.0, muons, npv, spin1=False)
        nu_x, nu_y = np.zeros(n), np.zeros(n)
        _isr_jets(rng, jets, n, 1.2)
    elif sample == "dy":
        a, lo, hi = 4.0, 100.0, 600.0  # dσ/dm ∝ m^-4 above the Z peak
        u = rng.uniform(size=n)
        mass = (lo ** (1 - a) + u * (hi ** (1 - a) - lo ** (1 - a))) ** (1 / (1 - a))
        _dimuon_resonance(rng, n, mass, 12.0, 1.4, muons, npv, spin1=True)
        nu_x, nu_y = np.zeros(n), np.zeros(n)
        _isr_jets(rng, jets, n, 0.7)
    elif sample == "ttbar":
        nu_x, nu_y = _top_pairs(rng, n, muons, electrons, jets, npv)
    else:
        nu_x, nu_y, importance = _multijet_fakes(rng, n, muons, jets, npv)
    _fake_electrons(rng, electrons, n, npv)

    muon = muons.collection(n, lambda c: (c["pt"] > 3.0) & (np.abs(c["eta"]) < 2.4), _muon_fields())
    electron = electrons.collection(
        n,
        lambda c: (c["pt"] > 5.0) & (np.abs(c["eta"]) < 2.5),
        {
            "pt": np.float32,
            "eta": np.float32,
            "phi": np.float32,
            "charge": np.int32,
            "pfRelIso03_all": np.float32,
        },
    )
    # jets: nominal selection pT > 15 GeV; JES variations stored alongside
    cols = {k: np.concatenate([p[k] for p in jets.parts]) for k in jets.parts[0]}
    shift = jes_shift(cols["pt"], cols["eta"])
    jets.parts = [
        {**cols, "pt_jesUp": cols["pt"] * (1 + shift), "pt_jesDown": cols["pt"] * (1 - shift)}
    ]
    jet = jets.collection(
        n,
        lambda c: (c["pt"] > 15.0) & (np.abs(c["eta"]) < 4.7),
        {
            "pt": np.float32,
            "eta": np.float32,
            "phi": np.float32,
            "mass": np.float32,
            "btagDeepB": np.float32,
            "pt_jesUp": np.float32,
            "pt_jesDown": np.float32,
        },
    )
    # missing transverse momentum: neutrinos + resolution (soft activity ∝ pileup)
    noise = np.sqrt(6.0**2 + 0.3 * npv)
    met_x = nu_x + rng.normal(0.0, 1.0, n) * noise
    met_y = nu_y + rng.normal(0.0, 1.0, n) * noise
    met = {}
    for tag in ("jesUp", "jesDown"):
        dpx = ak.sum((jet[f"pt_{tag}"] - jet.pt) * np.cos(jet.phi), axis=1).to_numpy()
        dpy = ak.sum((jet[f"pt_{tag}"] - jet.pt) * np.sin(jet.phi), axis=1).to_numpy()
        met[tag] = np.hypot(met_x - dpx, met_y - dpy)
    if sample == "fakes":
        gen_weight = importance
    elif sample == "signal":
        gen_weight = np.ones(n)
    else:  # a spread of generator weights, as from an NLO generator's reweighting
        gen_weight = rng.lognormal(-0.005, 0.1, n)
    return {
        "Muon": muon,
        "Electron": electron,
        "Jet": jet,
        "MET_pt": np.hypot(met_x, met_y).astype(np.float32),
        "MET_phi": np.arctan2(met_y, met_x).astype(np.float32),
        "MET_pt_jesUp": met["jesUp"].astype(np.float32),
        "MET_pt_jesDown": met["jesDown"].astype(np.float32),
        "PV_npvs": npv.astype(np.int32),
        "genWeight": gen_weight.astype(np.float32),
        "puWeight": _pileup_weight(npv, DATA_PILEUP).astype(np.float32),
        "puWeightUp": _pileup_weight(npv, DATA_PILEUP + DATA_PILEUP_SHIFT).astype(np.float32),
        "puWeightDown": _pileup_weight(npv, DATA_PILEUP - DATA_PILEUP_SHIFT).astype(np.float32),
    }


def write_nanoaod(
    path: str | os.PathLike,
    sample: str,
    n: int,
    seed: int,
    *,
    mll_min: float | None = None,
    step: int = 50_000,
) -> Path:
    """Generate `n` events of `sample` and write them as a NanoAOD-like ROOT file.

    The TTree ``Events`` has NanoAOD's flat layout: counters (``nMuon``, ``nElectron``,
    ``nJet``) and one jagged branch per object field (``Muon_pt``, ``Jet_btagDeepB``,
    ``Jet_pt_jesUp``, ...), plus event-level branches. Written in baskets of `step`
    events (atomically: a temporary file is renamed at the end).

    **Arguments:**

    - `path`: output file.
    - `sample`, `n`, `seed`, `mll_min`: as for `generate_nanoaod`.
    - `step`: events per basket.

    **Returns:** the path written.
    """
    from diffana.io import atomic_path

    arrays = generate_nanoaod(sample, n, seed, mll_min=mll_min)
    types = {k: v.type.content if isinstance(v, ak.Array) else v.dtype for k, v in arrays.items()}
    with atomic_path(path, suffix=".root") as tmp, uproot.recreate(tmp) as out:
        out.mktree("Events", types, title=f"diffana NanoAOD-like {sample}")
        for start in range(0, n, step):
            out["Events"].extend({k: v[start : start + step] for k, v in arrays.items()})
    return Path(path)


def write_nanoaod_dataset(
    folder: str | os.PathLike,
    n: int | Mapping[str, int],
    seed: int,
    samples: tuple[str, ...] = NANOAOD_SAMPLES,
    *,
    mll_min: float | None = None,
) -> dict[str, Path]:
    """Write one NanoAOD-like file per sample into `folder` (``<sample>.root``).

    **Arguments:**

    - `folder`: an existing folder.
    - `n`: events per sample (an int, or ``{sample: n}``).
    - `seed`: numpy seed (each sample draws from its own stream).
    - `samples`: which samples to write.
    - `mll_min`: the optional skim of `generate_nanoaod`.

    **Returns:** ``{sample: path}``.
    """
    folder = Path(folder)
    out = {}
    for s in samples:
        count = n[s] if isinstance(n, Mapping) else n
        out[s] = write_nanoaod(folder / f"{s}.root", s, count, seed, mll_min=mll_min)
    return out


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


def _pair_mass(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2):
    """Invariant mass of two objects given (pt, eta, phi, mass); 0 where undefined."""
    px1, py1, pz1 = pt1 * jnp.cos(phi1), pt1 * jnp.sin(phi1), pt1 * jnp.sinh(eta1)
    px2, py2, pz2 = pt2 * jnp.cos(phi2), pt2 * jnp.sin(phi2), pt2 * jnp.sinh(eta2)
    e1 = jnp.sqrt(px1**2 + py1**2 + pz1**2 + m1**2)
    e2 = jnp.sqrt(px2**2 + py2**2 + pz2**2 + m2**2)
    m2_ = (e1 + e2) ** 2 - (px1 + px2) ** 2 - (py1 + py2) ** 2 - (pz1 + pz2) ** 2
    ok = m2_ > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, m2_, 1.0)), 0.0)


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
    mll = _pair_mass(
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
            _pair_mass(
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
        m = _pair_mass(
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
        return self.histogram_events(_LAYOUT.unflatten(sample.x, sample.w), relax_value)

    def hard_histogram(self, sample: Sample) -> Float[Array, " bins"]:
        return self.hard_histogram_events(_LAYOUT.unflatten(sample.x, sample.w))


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
        return self.histogram_events(_LAYOUT.unflatten(sample.x, sample.w), relax_value)

    def hard_histogram(self, sample: Sample) -> Float[Array, " bins"]:
        return self.hard_histogram_events(_LAYOUT.unflatten(sample.x, sample.w))


_LAYOUT = NanoAODLayout()


# ---------------------------------------------------------------------------------------
# the benchmark problem
# ---------------------------------------------------------------------------------------


class DimuonNanoAOD(Problem):
    """A dimuon resonance search on NanoAOD-like ROOT files (`diffana bench` problem).

    `generate` writes one ROOT file per sample with `write_nanoaod_dataset` (into a
    temporary folder), reads it back with `diffana.io.read_events` and `NANOAOD_SCHEMA`,
    weights the events with ``genWeight × puWeight × yield / sum(genWeight)`` and flattens
    them with
    `NanoAODLayout`. `templates` applies `dimuon_variations` with `diffana.systematics`;
    `workspace` turns the templates into histosys modifiers
    (`diffana.systematics.build_workspace`) plus the normalisation uncertainties.

    The object-level pipelines `DimuonCuts` and `DimuonNeural` consume these samples;
    `Problem.cuts` exposes event-level thresholds on `DERIVED_FEATURES` for the generic
    cut methods of `diffana bench` (one-bin cut-and-count on the leading muon pair).

    Definition fields: ``[generator]`` ``n_train``/``n_valid``/``n_test`` (events per
    sample), ``seed``, ``mll_min`` (the skim, GeV); ``[analysis]`` ``bins``,
    ``mass_range`` ([lo, hi] GeV), ``yields`` (``{sample: expected events after the
    skim}``), ``mu_scale`` (relative muon momentum-scale uncertainty), ``normsys``
    (``{modifier: {sample: relative uncertainty}}``), ``cuts`` (event-level cut list for
    the generic cut methods: ``{name, feature, direction}``); each scenario may set
    ``systematics = false`` for a statistics-only model.
    """

    signal_samples = ("signal",)
    background_samples = ("dy", "ttbar", "fakes")
    feature_names = _LAYOUT.names

    def __init__(self, definition):
        super().__init__(definition)
        path = definition.path
        self.sizes = {s: self.param("generator", f"n_{s}", int) for s in SPLITS}
        for split, n in self.sizes.items():
            if n < 1:
                raise ProblemDefinitionError(f"{path}: [generator].n_{split} must be >= 1")
        self.base_seed = self.param("generator", "seed", int, 0)
        self.mll_min = self.param("generator", "mll_min", float, 110.0)
        rng = self.param("analysis", "mass_range", list)
        if len(rng) != 2 or not all(isinstance(v, int | float) for v in rng) or rng[0] >= rng[1]:
            raise ProblemDefinitionError(
                f"{path}: [analysis].mass_range must be [lo, hi] in GeV with lo < hi, got {rng!r}"
            )
        if rng[0] < self.mll_min:
            raise ProblemDefinitionError(
                f"{path}: [analysis].mass_range starts at {rng[0]} GeV, below the skim "
                f"[generator].mll_min = {self.mll_min} GeV"
            )
        self.mass_range = (float(rng[0]), float(rng[1]))
        yields = self.param("analysis", "yields", dict)
        missing = [s for s in NANOAOD_SAMPLES if s not in yields]
        bad = [s for s, v in yields.items() if not isinstance(v, int | float) or v <= 0]
        if missing or bad or set(yields) - set(NANOAOD_SAMPLES):
            raise ProblemDefinitionError(
                f"{path}: [analysis].yields must give a positive expected yield for each of "
                f"{NANOAOD_SAMPLES}; missing {missing}, invalid {bad}, "
                f"unknown {sorted(set(yields) - set(NANOAOD_SAMPLES))}"
            )
        self.yields = {s: float(v) for s, v in yields.items()}
        self.variations = dimuon_variations(self.param("analysis", "mu_scale", float, 0.01))
        normsys = self.param("analysis", "normsys", dict, {})
        for mod, per in normsys.items():
            if not isinstance(per, dict) or any(
                s not in NANOAOD_SAMPLES or not isinstance(v, int | float) or not 0 < v < 1
                for s, v in per.items()
            ):
                raise ProblemDefinitionError(
                    f"{path}: [analysis].normsys.{mod} must map sample names to relative "
                    f"uncertainties in (0, 1), got {per!r}"
                )
        self.normsys = {m: {s: float(v) for s, v in per.items()} for m, per in normsys.items()}
        self._cuts = []
        for i, c in enumerate(self.param("analysis", "cuts", list, [])):
            try:
                name, feature, direction = c["name"], c["feature"], c["direction"]
            except (KeyError, TypeError):
                raise ProblemDefinitionError(
                    f"{path}: [analysis].cuts[{i}] needs name, feature and direction"
                ) from None
            if feature not in DERIVED_FEATURES or direction not in (">", "<"):
                raise ProblemDefinitionError(
                    f"{path}: [analysis].cuts[{i}]: feature must be one of {DERIVED_FEATURES} "
                    f"and direction '>' or '<', got {feature!r}, {direction!r}"
                )
            self._cuts.append(CutVariable(str(name), _LAYOUT.index(feature), direction))
        for name, scen in definition.scenarios.items():
            if not isinstance(scen.get("systematics", True), bool):
                raise ProblemDefinitionError(
                    f"{path}: [scenarios.{name}].systematics must be true or false"
                )

    # -- bench interface ---------------------------------------------------------------
    @property
    def edges(self) -> np.ndarray:
        """The m_μμ bin edges (GeV)."""
        return np.linspace(*self.mass_range, self.n_bins + 1)

    @property
    def poi_scale(self) -> float:
        """Signal events (after the skim) per unit of signal strength."""
        return self.yields["signal"]

    def read_samples(self, files: Mapping[str, str | os.PathLike], n: int | None = None):
        """`{sample: Events}` read from NanoAOD-like files with `NANOAOD_SCHEMA`, weighted
        by ``genWeight × puWeight × yield / sum(genWeight)`` (the sum over the file)."""
        from diffana.io import read_arrays, read_events

        out = {}
        for name, path in files.items():
            total = float(np.sum(read_arrays(path, ["genWeight"], tree="Events")["genWeight"]))
            schema = dataclasses.replace(NANOAOD_SCHEMA, weight_scale=self.yields[name] / total)
            ev = read_events(path, schema, tree="Events", entry_stop=n)
            out[name] = ev.replace("weights", ev.weights * ev["puWeight"])
        return out

    def generate(self, seed: int, split: str) -> dict[str, Sample]:
        if split not in SPLITS:
            raise ProblemDefinitionError(f"split must be one of {SPLITS}, got {split!r}")
        run = 0 if split == "test" else seed
        s = split_seed(self.base_seed, split, run)
        with tempfile.TemporaryDirectory(prefix="diffana-nanoaod-") as folder:
            files = write_nanoaod_dataset(folder, self.sizes[split], s, mll_min=self.mll_min)
            events = self.read_samples(files)
        flat = jax.jit(_LAYOUT.flatten)
        return {
            name: Sample(np.asarray(flat(ev)), np.asarray(ev.weights))
            for name, ev in events.items()
        }

    def templates(self, samples: Mapping[str, Sample]) -> dict[TemplateKey, Sample]:
        out: dict[TemplateKey, Sample] = {}
        for name, sample in samples.items():
            x, w = jnp.asarray(sample.x), jnp.asarray(sample.w)
            events = _LAYOUT.unflatten(x, w)
            out[(name, "nominal")] = Sample(x, w)
            for v in self.variations:
                for direction in ("up", "down"):
                    varied = vary(events, v, direction)
                    out[(name, f"{v.name}_{direction}")] = Sample(
                        _LAYOUT.flatten(varied), varied.weights
                    )
        return out

    def workspace(self, yields: Yields, scenario: str) -> dict[str, Any]:
        with_syst = self.scenario(scenario).get("systematics", True)
        variations = self.variations if with_syst else ()
        hists = {}
        for name in NANOAOD_SAMPLES:
            hists[name] = {
                label: yields[(name, label)] for label in variant_labels(variations, name)
            }
        return build_workspace(
            hists,
            variations,
            signal=self.signal_samples,
            normsys=self.normsys if with_syst else None,
            channel="mumu",
        )

    def cuts(self, scenario: str) -> tuple[CutVariable, ...] | None:
        self.scenario(scenario)
        return tuple(self._cuts) or None

    # -- object-level pipelines for diffana bench (see run_dimuon_benchmark) -----------
    def pipeline(self, method: str, cfg: Mapping[str, Any], scenario: str, train, key):
        """The object-level pipeline of `method`, for a `diffana bench` that lets problems
        supply pipelines: `DimuonCuts` at `DEFAULT_CUTS` for cut methods, `DimuonNeural`
        for network methods; None for others (the generic pipeline then applies)."""
        self.scenario(scenario)
        if method in ("cuts_grad", "cuts_scan", "cuts_default"):
            return DimuonCuts.from_thresholds(DEFAULT_CUTS, self.edges)
        if method in ("neos", "discovery"):
            sub = {**_OBJECT_LEVEL_DEFAULTS["neos"], **dict(cfg)}
            return _neural_pipeline(train, sub, key, self.edges, self.n_bins)
        return None

    def scan_space(self, scenario: str):
        """`(params -> DimuonCuts, (4, 2) ranges of params)` for a threshold scan."""
        self.scenario(scenario)
        edges = tuple(float(e) for e in self.edges)
        ranges = np.stack([_to_params(lo_hi) for lo_hi in zip(*SCAN_RANGES, strict=True)], 1)
        return (lambda params: DimuonCuts(params, edges)), ranges

    def companion_benchmark(self, out: Path, *, seed: int, referee: bool) -> dict[str, Any] | None:
        """The object-level analysis in `diffana bench`: hand-chosen, scanned and
        gradient-optimised cuts and a neos-style neural summary (`run_dimuon_benchmark`),
        evaluated hard. A finished run of the same mode and seed in `out` is reused."""
        import json

        out = Path(out)
        results = None
        path = out / "dimuon_results.json"
        if path.exists():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                old = {}
            same = old.get("mode") == self.definition.mode and old.get("seed") == seed
            if same and set(old.get("methods", {})) == set(DIMUON_METHODS):
                results = old
        if results is None:
            results = run_dimuon_benchmark(
                mode=self.definition.mode, seed=seed, out=out, referee=referee, problem=self
            )
        plots = [p for p in ("dimuon_mass.png", "dimuon_training.png") if (out / p).exists()]
        text = (
            "Hand-chosen (`default`), scanned (`scan`) and gradient-optimised (`grad`) "
            "object-level cuts (muon pT and isolation, b-jet veto, MET) and a neos-style "
            f"neural summary (`neos`), seed {seed}, scenario `{results['scenario']}`; hard "
            "cuts and histograms of m_μμ on the test sample.\n\n" + dimuon_results_table(results)
        )
        return {"title": "object-level analysis", "markdown": text, "plots": plots}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["systematics"] = [v.name for v in self.variations] + list(self.normsys)
        return info


# ---------------------------------------------------------------------------------------
# the object-level benchmark: hand-chosen, scanned, gradient-optimised cuts, neural summary
# ---------------------------------------------------------------------------------------

#: The methods of the object-level dimuon benchmark.
DIMUON_METHODS = ("default", "scan", "grad", "neos")
#: Scan box of the thresholds (physical units, order `CUT_NAMES`).
SCAN_RANGES = ((15.0, 70.0), (0.04, 0.4), (0.1, 1.0), (25.0, 150.0))

_OBJECT_LEVEL_DEFAULTS: dict[str, Any] = {
    "batch_size": 4000,
    "grad": {
        "loss": "discovery",
        "steps": 150,
        "learning_rate": 0.05,
        "slope": {"start": 0.3, "end": 0.03},
    },
    "scan": {"grid_points": 5, "budget": 400, "chunk": 8},
    "neos": {
        "loss": "cls",
        "steps": 150,
        "learning_rate": 3e-3,
        "hidden": [32, 32],
        "bandwidth": {"start": 0.1, "end": 0.05},
        "cut_slope": 0.05,
    },
}


def _stack(samples: Mapping[str, Sample]) -> Events:
    """The samples' events stacked along a new leading axis (order `NANOAOD_SAMPLES`)."""
    events = [
        _LAYOUT.unflatten(jnp.asarray(samples[n].x), jnp.asarray(samples[n].w))
        for n in NANOAOD_SAMPLES
    ]
    sizes = {e.n_events for e in events}
    if len(sizes) != 1:
        raise DataError(f"the samples must have equal sizes to be stacked, got {sorted(sizes)}")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *events)


def _variant_yields(problem, fn, pipeline, stacked: Events) -> dict[TemplateKey, Array]:
    """`{(sample, variant): histogram}`: `fn(pipeline, events)` on every sample and
    systematic variant, one `vmap` over samples and one over variants."""
    from diffana.systematics import evaluate_variations

    hists = jax.vmap(lambda ev: evaluate_variations(fn, pipeline, ev, problem.variations))(stacked)
    return {(n, label): h[i] for label, h in hists.items() for i, n in enumerate(NANOAOD_SAMPLES)}


def dimuon_loss(problem: DimuonNanoAOD, scenario: str, kind: str = "discovery"):
    """``loss_fn(pipeline, batch, relax) -> (loss, figure_of_merit)`` for `diffana.train.fit`.

    Equivalent to `diffana.bench.hf_loss` (the same HistFactory model and loss), but the
    pipeline is traced once: the samples of the minibatch (equal sizes) are stacked and
    mapped with `jax.vmap`, and each sample's systematic variants are evaluated with
    `diffana.systematics.evaluate_variations` (a `vmap` over the varied inputs), instead of
    one traced copy per (sample, variation) template.

    **Arguments:**

    - `problem`: the `DimuonNanoAOD` problem.
    - `scenario`: its statistical model.
    - `kind`: ``"discovery"`` (loss `-Z0`, figure of merit Z0) or ``"cls"`` (expected CLs).
    """
    from diffana import hf, losses

    if kind not in ("discovery", "cls"):
        raise ProblemDefinitionError(f"dimuon loss must be 'discovery' or 'cls', got {kind!r}")

    def loss(pipeline, batch, relax_value):
        yields = _variant_yields(
            problem, lambda p, e: p.histogram_events(e, relax_value), pipeline, _stack(batch)
        )
        model = hf.Model.from_pyhf(problem.workspace(yields, scenario))
        if kind == "cls":
            value = losses.cls_loss(model, mu_test=1.0)
            return value, value
        value = losses.discovery_loss(model)
        return value, -value

    return loss


def _object_level_settings(problem: DimuonNanoAOD) -> dict[str, Any]:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in _OBJECT_LEVEL_DEFAULTS.items()}
    given = problem.param("analysis", "object_level", dict, {})
    for key, value in given.items():
        if key not in cfg:
            raise ProblemDefinitionError(
                f"{problem.definition.path}: unknown [analysis.object_level].{key}; "
                f"known: {sorted(cfg)}"
            )
        cfg[key] = {**cfg[key], **value} if isinstance(cfg[key], dict) else value
    for method in ("grad", "neos"):
        if cfg[method]["loss"] not in ("discovery", "cls"):
            raise ProblemDefinitionError(
                f"{problem.definition.path}: [analysis.object_level].{method}.loss must be "
                f"'discovery' or 'cls', got {cfg[method]['loss']!r}"
            )
    return cfg


def _to_params(thresholds) -> np.ndarray:
    return (np.asarray(thresholds, dtype=np.float64) - np.asarray(DEFAULT_CUTS)) / np.asarray(
        CUT_SCALES
    )


def _scan_cuts(problem, scenario, train, cfg, seed):
    from diffana import hf, losses
    from diffana.baselines import scan_thresholds

    stacked = _stack(train)
    make, ranges = problem.scan_space(scenario)

    def z0_one(params, data):
        yields = _variant_yields(
            problem, lambda p, e: p.hard_histogram_events(e), make(params), data
        )
        model = hf.Model.from_pyhf(problem.workspace(yields, scenario))
        return -losses.discovery_loss(model)

    chunk = int(cfg["chunk"])
    # the events are an argument, not a closed-over constant: XLA would constant-fold them
    batched = jax.jit(
        lambda c, data: jax.lax.map(lambda p: z0_one(p, data), c, batch_size=chunk),
        compiler_options=compiler_options(),
    )
    res = scan_thresholds(
        lambda c: np.asarray(batched(jnp.asarray(c), stacked)),
        ranges,
        grid_points=int(cfg["grid_points"]),
        budget=int(cfg["budget"]),
        seed=seed,
        chunk=max(chunk * 8, 1),
    )
    info = {"scan": res.kind, "fom_evaluations": res.n_evaluations, "train_fom": res.fom}
    return make(jnp.asarray(res.thresholds)), info, {"fom": res.history}


def _neural_pipeline(train, cfg, key, edges, n_bins):
    """A `DimuonNeural` at the default cuts, its inputs standardised on the training
    pairs that pass them."""

    @jax.jit
    def selected_features(x, w):
        ev = _LAYOUT.unflatten(x, w)
        _, pair_w = pair_selection(jnp.asarray(DEFAULT_CUTS), ev, None, hard=True)
        return pair_features(ev), pair_w

    feats = []
    for s in train.values():
        f, w = selected_features(jnp.asarray(s.x), jnp.asarray(s.w))
        keep = np.asarray(w).reshape(-1) > 0
        feats.append(np.asarray(f).reshape(-1, f.shape[-1])[keep])
    allf = np.concatenate(feats)
    shift = tuple(float(v) for v in allf.mean(axis=0))
    scale = tuple(float(v) if v > 0 else 1.0 for v in allf.std(axis=0))
    hidden = [int(h) for h in cfg["hidden"]]
    net = eqx.nn.MLP(
        allf.shape[1], 1, hidden[0], len(hidden), activation=jax.nn.relu, key=key,
        dtype=jnp.float32,
    )  # fmt: skip
    cuts = DimuonCuts.from_thresholds(DEFAULT_CUTS, edges)
    return DimuonNeural(net, cuts, shift, scale, int(n_bins), float(cfg["cut_slope"]))


def train_dimuon_method(
    problem: DimuonNanoAOD,
    method: str,
    train: Mapping[str, Sample],
    *,
    scenario: str = "syst",
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
):
    """Build, and train or scan, one object-level method of the dimuon benchmark.

    **Arguments:**

    - `problem`: a `DimuonNanoAOD` problem.
    - `method`: one of `DIMUON_METHODS`: ``"default"`` (the hand-chosen `DEFAULT_CUTS`),
      ``"scan"`` (grid or random scan of the four thresholds in `SCAN_RANGES`, hard cuts,
      maximising the expected Z0 with all systematics on the training sample), ``"grad"``
      (Adam on sigmoid cuts through the HistFactory model, discovery loss by default,
      annealed slope), ``"neos"`` (a per-pair network whose score is binned with a KDE
      histogram, trained jointly with the cuts; expected-CLs loss by default).
    - `train`: the training events (`problem.generate(seed, "train")`).
    - `scenario`: the statistical model of the loss.
    - `seed`: initialisation, minibatches and random scans.
    - `settings`: overrides of ``[analysis.object_level]``.

    **Returns:** `diffana.bench.TrainedAnalysis(pipeline, training, history)`.
    """
    import time

    from diffana.bench import TrainedAnalysis
    from diffana.train import fit

    if method not in DIMUON_METHODS:
        raise ProblemDefinitionError(f"method must be one of {DIMUON_METHODS}, got {method!r}")
    cfg = _object_level_settings(problem)
    for key, value in dict(settings or {}).items():
        cfg[key] = {**cfg[key], **value} if isinstance(cfg.get(key), dict) else value
    edges = tuple(float(e) for e in problem.edges)
    key = jax.random.fold_in(jax.random.key(seed), 11)
    k_init, k_fit = jax.random.split(key)
    t0 = time.perf_counter()
    if method == "default":
        pipe = DimuonCuts.from_thresholds(DEFAULT_CUTS, edges)
        info, history = {"fom_evaluations": 0}, {}
    elif method == "scan":
        pipe, info, history = _scan_cuts(problem, scenario, train, cfg["scan"], seed)
    else:
        sub = cfg[method]
        if method == "grad":
            pipe = DimuonCuts.from_thresholds(DEFAULT_CUTS, edges)
            relax_value = sub["slope"]
        else:
            pipe = _neural_pipeline(train, sub, k_init, edges, problem.n_bins)
            relax_value = sub["bandwidth"]
        res = fit(
            dimuon_loss(problem, scenario, sub["loss"]),
            pipe,
            train,
            steps=int(sub["steps"]),
            batch_size=int(cfg["batch_size"]),
            key=k_fit,
            learning_rate=float(sub["learning_rate"]),
            relax=relax_value,
        )
        pipe, history = res.pipeline, res.history
        info = {
            "loss": sub["loss"],
            "steps": int(sub["steps"]),
            "fom_evaluations": int(sub["steps"]),
            "compile_time_s": res.compile_time,
            "skipped_steps": res.skipped_steps,
            "final_loss": float(history["loss"][-1]) if len(history["loss"]) else float("nan"),
        }
    info["train_time_s"] = time.perf_counter() - t0
    cuts = pipe if isinstance(pipe, DimuonCuts) else pipe.cuts
    info["thresholds"] = dict(
        zip(CUT_NAMES, np.asarray(cuts.physical_thresholds()).tolist(), strict=True)
    )
    return TrainedAnalysis(pipe, info, {k: np.asarray(v) for k, v in history.items()})


def run_dimuon_benchmark(
    *,
    mode: str = "quick",
    seed: int = 0,
    scenario: str = "syst",
    methods: tuple[str, ...] = DIMUON_METHODS,
    out: str | os.PathLike | None = None,
    referee: bool = True,
    problem: DimuonNanoAOD | None = None,
) -> dict[str, Any]:
    """Run the object-level dimuon benchmark and evaluate every method hard.

    Each method is trained on ``generate(seed, "train")`` and evaluated like every
    `diffana bench` run: its hard twin on the independent test sample, histograms of every
    template (`diffana.bench.hard_yields`), and the metrics of `diffana.bench.METRICS`
    (expected CLs, Z0, σ(POI), and pyhf's CLs and Z0 on the exported workspace).

    **Arguments:**

    - `mode`: ``"quick"``, ``"default"`` or ``"full"`` (the definition's ``[modes]``).
    - `seed`: the run seed.
    - `scenario`: the statistical model (``"syst"`` or ``"stat"``).
    - `methods`: a subset of `DIMUON_METHODS`.
    - `out`: optional folder for ``dimuon_results.json``, ``dimuon_results.md``, the
      workspaces and plots.
    - `referee`: also compute pyhf's numbers.
    - `problem`: an already loaded problem (default: the packaged ``dimuon``).

    **Returns:** ``{"methods": {method: {"training": ..., "evaluation": ...}}, ...}``.
    """
    import time

    from diffana.bench import evaluate_yields, hard_yields

    if problem is None:
        from diffana.problems._registry import load_problem

        problem = load_problem("dimuon", mode=mode)
    t0 = time.perf_counter()
    train = problem.generate(seed, "train")
    test = problem.generate(seed, "test")
    test_templates = problem.templates(test)
    gen_time = time.perf_counter() - t0
    results: dict[str, Any] = {
        "problem": problem.describe(),
        "mode": problem.definition.mode,
        "seed": seed,
        "scenario": scenario,
        "generation_time_s": gen_time,
        "methods": {},
    }
    pipelines = {}
    for method in methods:
        trained = train_dimuon_method(problem, method, train, scenario=scenario, seed=seed)
        t1 = time.perf_counter()
        yields, counts = hard_yields(trained.pipeline, test_templates)
        evaluation = evaluate_yields(problem, yields, [scenario], referee=referee)[scenario]
        evaluation["eval_time_s"] = time.perf_counter() - t1
        pipelines[method] = (trained, yields)
        results["methods"][method] = {
            "training": trained.training,
            "evaluation": evaluation,
            "hard_yields": {f"{k[0]}/{k[1]}": v.tolist() for k, v in yields.items()},
            "mc_counts": {f"{k[0]}/{k[1]}": v.tolist() for k, v in counts.items()},
        }
    results["total_time_s"] = time.perf_counter() - t0
    if out is not None:
        _write_dimuon_outputs(Path(out), problem, results, pipelines)
    return results


def dimuon_results_table(results: Mapping[str, Any]) -> str:
    """A Markdown table of `run_dimuon_benchmark` results."""
    lines = [
        "| method | mu_pt_min | mu_iso_max | btag_veto | met_max | Z0 | CLs | pyhf Z0 "
        "| pyhf CLs | σ(μ) × s | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, r in results["methods"].items():
        t = r["training"]["thresholds"]
        e = r["evaluation"]
        pz0, pcls = e.get("pyhf_z0", float("nan")), e.get("pyhf_cls", float("nan"))
        lines.append(
            f"| {method} | {t['mu_pt_min']:.1f} | {t['mu_iso_max']:.3f} | {t['btag_veto']:.2f} "
            f"| {t['met_max']:.0f} | {e['z0']:.3f} | {e['cls']:.4f} | {pz0:.3f} "
            f"| {pcls:.4f} | {e['sigma_poi_fisher']:.1f} "
            f"| {r['training']['train_time_s']:.1f} |"
        )
    return "\n".join(lines)


def _write_dimuon_outputs(out: Path, problem, results, pipelines) -> None:
    import json

    from diffana.io import write_workspace
    from diffana.train import atomic_write_json, atomic_write_text, json_default

    out.mkdir(parents=True, exist_ok=True)
    for method, r in results["methods"].items():
        ws = r["evaluation"].pop("workspace", None)
        if ws is not None:
            write_workspace(out / f"dimuon_{method}_workspace.json", ws)
    atomic_write_json(
        out / "dimuon_results.json", json.loads(json.dumps(results, default=json_default))
    )
    text = [
        f"# dimuon object-level benchmark ({results['mode']} mode, seed {results['seed']}, "
        f"scenario `{results['scenario']}`)",
        "",
        "Hard cuts and hard histograms on the independent test sample; Z0 and CLs expected "
        "(Asimov), diffana and pyhf on the exported workspace.",
        "",
        dimuon_results_table(results),
        "",
        f"Total wall time {results['total_time_s']:.0f} s "
        f"(generation and reading of the ROOT files {results['generation_time_s']:.0f} s).",
    ]
    try:
        _plot_dimuon(out, problem, pipelines)
        text += ["", "![m_mumu](dimuon_mass.png)", "![training](dimuon_training.png)"]
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    atomic_write_text(out / "dimuon_results.md", "\n".join(text) + "\n")


def _plot_dimuon(out: Path, problem, pipelines) -> None:
    import mplhep
    from matplotlib.figure import Figure

    from diffana.bench._plots import _save

    cut_methods = [m for m in ("default", "scan", "grad") if m in pipelines]
    if cut_methods:
        fig = Figure(figsize=(4.5 * len(cut_methods), 4))
        axes = np.atleast_1d(fig.subplots(1, len(cut_methods)))
        for ax, method in zip(axes, cut_methods, strict=True):
            _, yields = pipelines[method]
            bkgs = list(problem.background_samples)
            mplhep.histplot(
                [yields[(b, "nominal")] for b in bkgs], problem.edges, stack=True,
                histtype="fill", label=bkgs, ax=ax,
            )  # fmt: skip
            mplhep.histplot(
                yields[("signal", "nominal")], problem.edges, ax=ax, color="k", label="signal"
            )
            ax.set_xlabel("m_μμ [GeV]")
            ax.set_ylabel("events / bin")
            ax.set_title(method)
            ax.legend(fontsize=8)
        fig.tight_layout()
        _save(fig, out / "dimuon_mass.png")
    trained = [m for m in ("grad", "neos") if m in pipelines]
    if trained:
        fig = Figure(figsize=(5, 3.5))
        ax = fig.subplots()
        for method in trained:
            fom = pipelines[method][0].history.get("fom")
            if fom is not None and len(fom):
                ax.plot(fom, label=method)
        ax.set_xlabel("step")
        ax.set_ylabel("figure of merit (minibatch)")
        ax.legend()
        fig.tight_layout()
        _save(fig, out / "dimuon_training.png")


if __name__ == "__main__":  # pragma: no cover - command-line entry
    import argparse

    parser = argparse.ArgumentParser(description="The object-level dimuon benchmark.")
    parser.add_argument("--mode", default="quick", choices=("quick", "default", "full"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", default="syst")
    parser.add_argument("--methods", default=",".join(DIMUON_METHODS))
    parser.add_argument("--out", default="dimuon-results")
    args = parser.parse_args()
    # the package's own module, so that the problem's classes and these are the same
    from diffana.problems import _nanoaod

    res = _nanoaod.run_dimuon_benchmark(
        mode=args.mode, seed=args.seed, scenario=args.scenario,
        methods=tuple(args.methods.split(",")), out=args.out,
    )  # fmt: skip
    print(_nanoaod.dimuon_results_table(res))
