"""A realistic dimuon resonance search on NanoAOD-like ROOT files (the ``dimuon`` problem).

Split by concern, each module importing only the ones above it:

- `kinematics`: four-vectors, two-body decays, invariant masses;
- `generator`: the NanoAOD-like event generator and its ROOT writer (`generate_nanoaod`,
  `write_nanoaod`, `write_nanoaod_dataset`);
- `analysis`: how the files are read (`NANOAOD_SCHEMA`), the dense feature layout
  (`NanoAODLayout`), the systematic variations (`dimuon_variations`), the soft
  object-level selection (`pair_selection`) and its pipelines `DimuonCuts` and
  `DimuonNeural`;
- `methods`: the object-level bench methods (`OBJECT_METHODS`): hand-chosen, scanned and
  gradient-optimised cuts and a neos-style neural summary;
- `problem`: `DimuonNanoAOD`, the `diffana.problems.Problem` of ``toy_problems/dimuon.toml``,
  which brings those methods to ``diffana bench dimuon``.

The analysis reads the files back with `diffana.io`, selects muons with soft cuts on
trainable thresholds (pT, isolation), vetoes b-tagged jets and large missing transverse
momentum (trainable thresholds), builds the invariant mass of the two leading selected
opposite-charge muons, histograms it per sample and systematic variation, and fits it
with a HistFactory model whose histosys/normsys modifiers come from the variations:
muon momentum scale (a shifted column), jet energy scale (shifted columns from the
``*_jesUp/Down`` branches), pileup reweighting (an event-weight variation) and
normalisation uncertainties.
"""

from __future__ import annotations

from diffana.problems._dimuon.analysis import (
    CUT_NAMES,
    CUT_SCALES,
    DEFAULT_CUTS,
    DERIVED_FEATURES,
    JET_PT_MIN,
    LAYOUT,
    NANOAOD_SCHEMA,
    DimuonCuts,
    DimuonNeural,
    NanoAODLayout,
    derived_features,
    dimuon_variations,
    pair_features,
    pair_selection,
)
from diffana.problems._dimuon.generator import (
    NANOAOD_SAMPLES,
    generate_nanoaod,
    jes_shift,
    write_nanoaod,
    write_nanoaod_dataset,
)
from diffana.problems._dimuon.kinematics import pair_mass
from diffana.problems._dimuon.methods import (
    OBJECT_METHOD_DEFAULTS,
    OBJECT_METHOD_FIELDS,
    OBJECT_METHODS,
    SCAN_RANGES,
    dimuon_loss,
    object_method_settings,
    train_object_method,
)
from diffana.problems._dimuon.problem import DimuonNanoAOD

__all__ = [
    "CUT_NAMES",
    "CUT_SCALES",
    "DEFAULT_CUTS",
    "DERIVED_FEATURES",
    "JET_PT_MIN",
    "LAYOUT",
    "NANOAOD_SAMPLES",
    "NANOAOD_SCHEMA",
    "OBJECT_METHODS",
    "OBJECT_METHOD_DEFAULTS",
    "OBJECT_METHOD_FIELDS",
    "SCAN_RANGES",
    "DimuonCuts",
    "DimuonNanoAOD",
    "DimuonNeural",
    "NanoAODLayout",
    "derived_features",
    "dimuon_loss",
    "dimuon_variations",
    "generate_nanoaod",
    "jes_shift",
    "object_method_settings",
    "pair_features",
    "pair_mass",
    "pair_selection",
    "train_object_method",
    "write_nanoaod",
    "write_nanoaod_dataset",
]
