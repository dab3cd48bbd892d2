"""The dimuon problem: its definition fields, samples, templates and statistical model.

`DimuonNanoAOD` is the `diffana bench` problem ``dimuon`` (``toy_problems/dimuon.toml``):
events from the NanoAOD-like generator (`generator`), read back with `diffana.io` and
flattened (`analysis`), the systematic variations as templates, a HistFactory workspace
of m_μμ with histosys and normsys modifiers, and the object-level methods (`methods`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from diffana.errors import ProblemDefinitionError
from diffana.problems._base import (
    ANALYSIS_FIELDS,
    SAMPLE_SIZE_FIELDS,
    SPLITS,
    CutVariable,
    Problem,
    ProblemMethod,
    Sample,
    TemplateKey,
    Yields,
    split_seed,
)
from diffana.problems._definition import Field
from diffana.problems._dimuon.analysis import (
    DERIVED_FEATURES,
    LAYOUT,
    NANOAOD_SCHEMA,
    dimuon_variations,
)
from diffana.problems._dimuon.generator import NANOAOD_SAMPLES, write_nanoaod_dataset
from diffana.problems._dimuon.methods import (
    OBJECT_METHOD_FIELDS,
    OBJECT_METHODS,
    object_method_settings,
    train_object_method,
)
from diffana.systematics import build_workspace, variant_labels, vary

__all__ = ["DimuonNanoAOD"]


class DimuonNanoAOD(Problem):
    """A dimuon resonance search on NanoAOD-like ROOT files (`diffana bench` problem).

    `generate` writes one ROOT file per sample with `write_nanoaod_dataset` (into a
    temporary folder), reads it back with `diffana.io.read_events` and `NANOAOD_SCHEMA`,
    weights the events with ``genWeight × puWeight × yield / sum(genWeight)`` and flattens
    them with
    `NanoAODLayout`. `templates` applies `dimuon_variations` with `diffana.systematics`;
    `workspace` turns the templates into histosys modifiers
    (`diffana.systematics.build_workspace`) plus the normalisation uncertainties.

    The problem brings its object-level methods (`own_methods`: `OBJECT_METHODS`, on the
    pipelines `DimuonCuts` and `DimuonNeural`); `Problem.cuts` exposes event-level
    thresholds on `DERIVED_FEATURES` for the generic cut methods of `diffana bench`
    (one-bin cut-and-count on the leading muon pair).

    Definition fields: ``[generator]`` ``n_train``/``n_valid``/``n_test`` (events per
    sample), ``seed``, ``mll_min`` (the skim, GeV); ``[analysis]`` ``bins``,
    ``mass_range`` ([lo, hi] GeV), ``yields`` (``{sample: expected events after the
    skim}``), ``mu_scale`` (relative muon momentum-scale uncertainty), ``normsys``
    (``{modifier: {sample: relative uncertainty}}``), ``cuts`` (event-level cut list for
    the generic cut methods: ``{name, feature, direction}``); each scenario may set
    ``systematics = false`` for a statistics-only model. They are declared in
    `definition_fields` (with the settings of the object-level methods,
    `OBJECT_METHOD_FIELDS`), so `load_problem` rejects an unknown or mistyped key in any
    mode, suggesting the closest allowed one.
    """

    signal_samples = ("signal",)
    background_samples = ("dy", "ttbar", "fakes")
    feature_names = LAYOUT.names
    definition_fields: ClassVar[Mapping[str, Mapping[str, Field]]] = {
        "generator": {**SAMPLE_SIZE_FIELDS, "mll_min": Field("number", minimum=0.0)},
        "analysis": {
            **ANALYSIS_FIELDS,
            "bins": Field("int", required=True, minimum=1),
            "mass_range": Field("list", required=True, length=2, items=Field("number")),
            "mu_scale": Field("number", minimum=0.0, maximum=1.0),
            "yields": Field(
                "table",
                required=True,
                keys={s: Field("number", required=True, positive=True) for s in NANOAOD_SAMPLES},
            ),
            "normsys": Field("table"),  # {modifier: {sample: relative uncertainty}}
            "cuts": Field(
                "list",
                items=Field(
                    "table",
                    keys={
                        "name": Field("str", required=True),
                        "feature": Field("str", required=True, choices=DERIVED_FEATURES),
                        "direction": Field("str", required=True, choices=(">", "<")),
                    },
                ),
            ),
        },
        "scenarios": {"description": Field("str"), "systematics": Field("bool")},
        **{f"methods.{m}": fields for m, fields in OBJECT_METHOD_FIELDS.items()},
    }

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
            self._cuts.append(CutVariable(str(name), LAYOUT.index(feature), direction))
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
        flat = jax.jit(LAYOUT.flatten)
        return {
            name: Sample(np.asarray(flat(ev)), np.asarray(ev.weights))
            for name, ev in events.items()
        }

    def templates(self, samples: Mapping[str, Sample]) -> dict[TemplateKey, Sample]:
        out: dict[TemplateKey, Sample] = {}
        for name, sample in samples.items():
            x, w = jnp.asarray(sample.x), jnp.asarray(sample.w)
            events = LAYOUT.unflatten(x, w)
            out[(name, "nominal")] = Sample(x, w)
            for v in self.variations:
                for direction in ("up", "down"):
                    varied = vary(events, v, direction)
                    out[(name, f"{v.name}_{direction}")] = Sample(
                        LAYOUT.flatten(varied), varied.weights
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

    def own_methods(self) -> dict[str, ProblemMethod]:
        """The object-level methods (`OBJECT_METHODS`): hand-chosen, scanned and
        gradient-optimised cuts and a neos-style neural summary of the muon pairs."""
        path = self.definition.path

        def method(name: str) -> ProblemMethod:
            return ProblemMethod(
                settings=lambda table, steps: object_method_settings(name, table, steps, path),
                train=functools.partial(train_object_method, self, name),
            )

        return {name: method(name) for name in OBJECT_METHODS}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["systematics"] = [v.name for v in self.variations] + list(self.normsys)
        return info
