"""The NanoAOD-like generator of the dimuon problem and its ROOT writer.

Per physics sample, events with muons, electrons, jets, missing transverse momentum,
pileup and generator weights, stored NanoAOD-style and written with uproot into a
``Events`` TTree (``nMuon``, ``Muon_pt``, ..., ``Jet_pt_jesUp``, ``MET_pt_jesUp``,
``puWeightUp``, ...).

**Samples** (`NANOAOD_SAMPLES`).

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

The jet-energy-scale variations are stored as branches (``Jet_pt_jesUp/Down`` and the
propagated ``MET_pt_jesUp/Down``), the pileup variations as weights
(``puWeightUp/Down``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from diffana.errors import DataError
from diffana.problems._dimuon.kinematics import (
    four_vector,
    pair_mass,
    pt_eta_phi,
    two_body,
    wrap_phi,
)

__all__ = [
    "NANOAOD_SAMPLES",
    "generate_nanoaod",
    "jes_shift",
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
    """A resonance of masses `mass` decaying to μ+μ- (see `two_body` for `spin1`)."""
    parent = four_vector(mass, rng.gamma(1.5, pt_scale, n), rng.normal(0.0, y_width, n), 0.0)
    phi0 = rng.uniform(-np.pi, np.pi, n)
    c, s = np.cos(phi0), np.sin(phi0)
    parent[1], parent[2] = parent[1] * c - parent[2] * s, parent[1] * s + parent[2] * c
    mu1, mu2 = two_body(rng, parent, MUON_MASS, MUON_MASS, spin1)
    ev = np.arange(n)
    for mu, q in ((mu1, -1), (mu2, 1)):
        pt, eta, phi = pt_eta_phi(mu)
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
        four_vector(TOP_MASS, pt_t, y_t, phi_t),
        four_vector(
            TOP_MASS,
            pt_t * rng.uniform(0.6, 1.4, n),
            rng.normal(0.0, 1.0, n),
            wrap_phi(phi_t + np.pi + rng.normal(0, 0.5, n)),
        ),
    ]
    electron_w = rng.uniform(size=n) < 0.25
    nu_x = np.zeros(n)
    nu_y = np.zeros(n)
    for k, top in enumerate(tops):
        w, b = two_body(rng, top, W_MASS, B_MASS)
        lep, nu = two_body(rng, w, MUON_MASS, 0.0)
        nu_x += nu[1]
        nu_y += nu[2]
        pt_b, eta_b, phi_b = pt_eta_phi(b)
        pt_l, eta_l, phi_l = pt_eta_phi(lep)
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
                phi=wrap_phi(phi_b + rng.normal(0.0, 0.05, n))[electron_w],
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
    phis = (phi1, wrap_phi(phi1 + np.pi + rng.normal(0.0, 0.3, n)))
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
            phi=wrap_phi(phi + rng.normal(0.0, 0.05, n)),
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
        m = pair_mass(
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
