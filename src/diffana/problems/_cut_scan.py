"""A cut-and-count search in seven physics-like observables with two systematics.

A resonance decaying to two b-jets (signal) over a falling multijet-like background;
the shapes overlap enough that the best selections keep hundreds of background events.
The standard analysis scans cut thresholds on a grid or at random; the differentiable
one optimises them by gradient descent through sigmoid cuts. The problem exists to show
how both scale with the number of thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from diffana.errors import ProblemDefinitionError
from diffana.problems._base import (
    ANALYSIS_FIELDS,
    SAMPLE_SIZE_FIELDS,
    CutVariable,
    Problem,
    Sample,
    TemplateKey,
    Yields,
    split_seed,
)
from diffana.problems._definition import Field
from diffana.problems._workspace import (
    histosys,
    make_workspace,
    normfactor,
    normsys,
    staterror,
)

__all__ = ["CUT_FEATURES", "CutScan", "generate_cut_scan"]

#: Observables of the cut_scan problem (GeV for momenta and masses).
CUT_FEATURES = ("mass", "pt", "met", "abs_eta", "delta_r", "btag", "ht")
#: The observables the jet energy scale acts on (multiplicatively).
_JES_FEATURES = (0, 1, 2, 6)


def generate_cut_scan(n: int, seed: int) -> dict[str, np.ndarray]:
    """Signal and background events, `n` each, in the observables `CUT_FEATURES`.

    Signal: a mass peak at 125 GeV (width 15), harder jets and missing energy, central
    jets, small separation, high b-tag score. Background: a falling mass spectrum, softer
    and forward jets, wide separation, low b-tag score. ``ht`` is the leading jet's pT plus
    the rest of the event, so it is correlated with ``pt``.

    **Returns:** ``{"signal": (n, 7), "background": (n, 7)}``.

    Example:

    >>> ev = generate_cut_scan(5000, seed=0)
    >>> ev["signal"].shape, bool(ev["signal"][:, 5].mean() > ev["background"][:, 5].mean())
    ((5000, 7), True)
    """
    rng = np.random.default_rng(seed)

    def draw(signal: bool) -> np.ndarray:
        x = np.empty((n, len(CUT_FEATURES)))
        if signal:
            x[:, 0] = rng.normal(125.0, 15.0, n)
            x[:, 1] = 30.0 + rng.gamma(2.5, 25.0, n)
            x[:, 2] = rng.gamma(2.0, 25.0, n)
            x[:, 3] = np.abs(rng.normal(0.0, 1.2, n))
            x[:, 4] = 0.4 + rng.gamma(3.0, 0.5, n)
            x[:, 5] = rng.beta(3.0, 1.5, n)
            x[:, 6] = x[:, 1] + rng.gamma(3.0, 35.0, n)
        else:
            x[:, 0] = 40.0 + rng.exponential(80.0, n)
            x[:, 1] = 30.0 + rng.exponential(40.0, n)
            x[:, 2] = rng.exponential(30.0, n)
            x[:, 3] = np.abs(rng.normal(0.0, 1.5, n))
            x[:, 4] = 0.4 + rng.gamma(3.0, 0.7, n)
            x[:, 5] = rng.beta(1.5, 2.5, n)
            x[:, 6] = x[:, 1] + rng.gamma(2.5, 35.0, n)
        return x

    return {"signal": draw(True), "background": draw(False)}


class CutScan(Problem):
    """Cut-and-count with a background normalisation (normsys), a jet energy scale
    (histosys, on both samples) and the background's Monte Carlo statistical (staterror)
    uncertainty. The last keeps the optimisers out of selections that look background-free
    only because the simulation has no events there.

    Definition fields: ``[generator]`` ``n_train``/``n_valid``/``n_test``, ``seed``;
    ``[analysis]`` ``bins`` (1: cut-and-count), ``signal_yield``, ``background_yield``
    (expected events before cuts), ``background_norm`` (relative normsys width),
    ``jes`` (relative jet-energy-scale shift), ``cuts`` (an ordered list of
    ``{name, observable, direction}``); each scenario sets ``thresholds = k``, the number
    of leading entries of ``cuts`` that are optimised (the others are left open).
    """

    feature_names = CUT_FEATURES
    definition_fields: ClassVar[Mapping[str, Mapping[str, Field]]] = {
        "generator": dict(SAMPLE_SIZE_FIELDS),
        "analysis": {
            **ANALYSIS_FIELDS,
            "bins": Field("int", required=True, minimum=1, maximum=1),
            "signal_yield": Field("number", required=True, positive=True),
            "background_yield": Field("number", required=True, positive=True),
            "background_norm": Field("number", required=True, minimum=0.0),
            "jes": Field("number", required=True, minimum=0.0),
            "cuts": Field(
                "list",
                required=True,
                items=Field(
                    "table",
                    keys={
                        "name": Field("str", required=True),
                        "observable": Field("str", required=True, choices=CUT_FEATURES),
                        "direction": Field("str", required=True, choices=(">", "<")),
                    },
                ),
            ),
        },
        "scenarios": {
            "description": Field("str"),
            "thresholds": Field("int", required=True, minimum=1),
        },
    }

    def __init__(self, definition):
        super().__init__(definition)
        path = definition.path
        self.sizes = {s: self.param("generator", f"n_{s}", int) for s in ("train", "valid", "test")}
        self.base_seed = self.param("generator", "seed", int, 0)
        self.s = self.param("analysis", "signal_yield", float)
        self.b = self.param("analysis", "background_yield", float)
        self.norm = self.param("analysis", "background_norm", float)
        self.jes = self.param("analysis", "jes", float)
        if self.n_bins != 1:
            raise ProblemDefinitionError(f"{path}: [analysis].bins must be 1 (cut-and-count)")
        cuts = self.param("analysis", "cuts", list)
        self._cuts = []
        for i, c in enumerate(cuts):
            try:
                name, obs, direction = c["name"], c["observable"], c["direction"]
            except (KeyError, TypeError):
                raise ProblemDefinitionError(
                    f"{path}: [analysis].cuts[{i}] needs name, observable and direction"
                ) from None
            if obs not in CUT_FEATURES or direction not in (">", "<"):
                raise ProblemDefinitionError(
                    f"{path}: [analysis].cuts[{i}]: observable must be one of {CUT_FEATURES} "
                    f"and direction '>' or '<', got {obs!r}, {direction!r}"
                )
            self._cuts.append(CutVariable(str(name), CUT_FEATURES.index(obs), direction))
        for name, scen in definition.scenarios.items():
            k = scen.get("thresholds")
            if not isinstance(k, int) or not 1 <= k <= len(self._cuts):
                raise ProblemDefinitionError(
                    f"{path}: [scenarios.{name}].thresholds must be an integer in "
                    f"1..{len(self._cuts)}, got {k!r}"
                )

    def cuts(self, scenario: str) -> tuple[CutVariable, ...]:
        return tuple(self._cuts[: self.scenario(scenario)["thresholds"]])

    def generate(self, seed: int, split: str) -> dict[str, Sample]:
        run = 0 if split == "test" else seed
        ev = generate_cut_scan(self.sizes[split], split_seed(self.base_seed, split, run))
        return {
            k: Sample(x, np.full(len(x), (self.s if k == "signal" else self.b) / len(x)))
            for k, x in ev.items()
        }

    def templates(self, samples: Mapping[str, Sample]) -> dict[TemplateKey, Sample]:
        out: dict[TemplateKey, Sample] = {}
        scale = np.zeros(len(CUT_FEATURES))
        scale[list(_JES_FEATURES)] = 1.0
        scale = jnp.asarray(scale)[None, :]
        for name in ("signal", "background"):
            s = samples[name]
            out[(name, "nominal")] = s
            for sign, tag in ((1.0, "up"), (-1.0, "down")):
                out[(name, f"jes_{tag}")] = Sample(s.x * (1.0 + sign * self.jes * scale), s.w)
        # Histogrammed with the squared weights: the Monte Carlo statistical uncertainty.
        bkg = samples["background"]
        out[("background", "sumw2")] = Sample(bkg.x, bkg.sumw2())
        return out

    def workspace(self, yields: Yields, scenario: str) -> dict[str, Any]:
        self.scenario(scenario)
        bkg = yields[("background", "nominal")]
        return make_workspace(
            "SR",
            [
                (
                    "signal",
                    yields[("signal", "nominal")],
                    [
                        normfactor("mu"),
                        histosys(
                            "jes", yields[("signal", "jes_up")], yields[("signal", "jes_down")]
                        ),
                    ],
                ),
                (
                    "background",
                    bkg,
                    [
                        normsys("bkg_norm", 1.0 + self.norm, 1.0 - self.norm),
                        staterror("mc_stat", _safe_sqrt(yields[("background", "sumw2")])),
                        histosys(
                            "jes",
                            yields[("background", "jes_up")],
                            yields[("background", "jes_down")],
                        ),
                    ],
                ),
            ],
            observed=jnp.asarray(bkg),
        )


def _variations(yields: Yields, sample: str, name: str):
    return yields[(sample, f"{name}_up")], yields[(sample, f"{name}_down")]


def _safe_sqrt(x):
    # sqrt with a finite gradient at 0 (an empty soft bin).
    x = jnp.asarray(x)
    ok = x > 1e-30
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, x, 1.0)), 1e-15)
