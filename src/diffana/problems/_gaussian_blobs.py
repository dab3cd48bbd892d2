"""The neos "gaussian blobs" problem (Simpson & Heinrich, arXiv:2203.05570)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from diffana.errors import ProblemDefinitionError
from diffana.problems._base import (
    ANALYSIS_FIELDS,
    SAMPLE_SIZE_FIELDS,
    Problem,
    Sample,
    TemplateKey,
    Yields,
    split_seed,
)
from diffana.problems._definition import Field
from diffana.problems._workspace import histosys, make_workspace, normfactor

__all__ = ["GaussianBlobs", "generate_blobs"]

_COMPONENTS = ("signal", "background", "background_up", "background_down")


def generate_blobs(
    means: Mapping[str, tuple[float, float]], n: int, seed: int, draw: str = "independent"
) -> dict[str, np.ndarray]:
    """Unit-covariance 2-D Gaussians, `n` events per component.

    **Arguments:**

    - `means`: ``{component: (mean_x, mean_y)}``.
    - `n`: events per component.
    - `seed`: numpy seed.
    - `draw`: ``"independent"`` draws every component from its own random numbers;
      ``"shared"`` reuses one standard-normal draw shifted to each mean (as the neos demo
      notebook does, which correlates the statistical fluctuations of the templates).

    **Returns:** ``{component: Float[np.ndarray, "n 2"]}``.

    Example:

    >>> ev = generate_blobs({"signal": (-1.0, 1.0)}, 1000, seed=1)
    >>> ev["signal"].shape
    (1000, 2)
    """
    rng = np.random.default_rng(seed)
    if draw == "shared":
        base = rng.standard_normal((n, 2))
        return {k: base + np.asarray(m, dtype=np.float64) for k, m in means.items()}
    if draw != "independent":
        raise ValueError(f"draw must be 'independent' or 'shared', got {draw!r}")
    return {
        k: rng.standard_normal((n, 2)) + np.asarray(m, dtype=np.float64) for k, m in means.items()
    }


class GaussianBlobs(Problem):
    """Signal and background 2-D Gaussians with a background shape systematic.

    Definition fields: ``[generator]`` ``means`` (table of the four components),
    ``n_train``/``n_valid``/``n_test`` (events per component), ``draw``
    (``"independent"`` or ``"shared"``), ``seed``; ``[analysis]`` ``bins``,
    ``signal_yield`` and ``background_yield`` (expected events, the neos demo's
    ``2 * 10`` and ``10 * 10``). One channel; the signal carries the normfactor ``mu``,
    the background a histosys ``bkg_shape`` with ``hi = up``, ``lo = down``.
    """

    feature_names = ("x", "y")
    definition_fields: ClassVar[Mapping[str, Mapping[str, Field]]] = {
        "generator": {
            "means": Field(
                "table",
                required=True,
                keys={c: Field("list", True, length=2, items=Field("number")) for c in _COMPONENTS},
            ),
            "draw": Field("str", choices=("independent", "shared")),
            **SAMPLE_SIZE_FIELDS,
        },
        "analysis": {
            **ANALYSIS_FIELDS,
            "bins": Field("int", required=True, minimum=1),
            "signal_yield": Field("number", required=True, positive=True),
            "background_yield": Field("number", required=True, positive=True),
            "poi_scale": Field("number", positive=True),
        },
        "scenarios": {"description": Field("str")},
    }

    def __init__(self, definition):
        super().__init__(definition)
        means = self.param("generator", "means", dict)
        missing = set(_COMPONENTS) - set(means)
        if missing:
            raise ProblemDefinitionError(
                f"{definition.path}: [generator].means lacks {sorted(missing)}"
            )
        self.means = {}
        for k in _COMPONENTS:
            m = means[k]
            if not (isinstance(m, list) and len(m) == 2):
                raise ProblemDefinitionError(
                    f"{definition.path}: [generator].means.{k} must be [x, y], got {m!r}"
                )
            self.means[k] = (float(m[0]), float(m[1]))
        self.draw = self.param("generator", "draw", str, "independent")
        if self.draw not in ("independent", "shared"):
            raise ProblemDefinitionError(
                f"{definition.path}: [generator].draw must be 'independent' or 'shared'"
            )
        self.sizes = {s: self.param("generator", f"n_{s}", int) for s in ("train", "valid", "test")}
        self.base_seed = self.param("generator", "seed", int, 0)
        self.signal_yield = self.param("analysis", "signal_yield", float)
        self.background_yield = self.param("analysis", "background_yield", float)
        _ = self.n_bins

    def generate(self, seed: int, split: str) -> dict[str, Sample]:
        # The test sample is the same for every run seed, so that methods and seeds are
        # compared on identical events; training and validation samples vary with the seed.
        run = 0 if split == "test" else seed
        ev = generate_blobs(
            self.means, self.sizes[split], split_seed(self.base_seed, split, run), self.draw
        )
        yields = {"signal": self.signal_yield}
        out = {}
        for k, x in ev.items():
            total = yields.get(k, self.background_yield)
            out[k] = Sample(x, np.full(x.shape[0], total / x.shape[0]))
        return out

    def templates(self, samples: Mapping[str, Sample]) -> dict[TemplateKey, Sample]:
        return {
            ("signal", "nominal"): samples["signal"],
            ("background", "nominal"): samples["background"],
            ("background", "shape_up"): samples["background_up"],
            ("background", "shape_down"): samples["background_down"],
        }

    def workspace(self, yields: Yields, scenario: str) -> dict[str, Any]:
        self.scenario(scenario)
        sig = yields[("signal", "nominal")]
        bkg = yields[("background", "nominal")]
        return make_workspace(
            "singlechannel",
            [
                ("signal", sig, [normfactor("mu")]),
                (
                    "background",
                    bkg,
                    [
                        histosys(
                            "bkg_shape",
                            yields[("background", "shape_up")],
                            yields[("background", "shape_down")],
                        )
                    ],
                ),
            ],
            observed=jnp.asarray(bkg),
        )
