"""The interface every benchmark problem implements."""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from diffana.errors import ProblemDefinitionError
from diffana.problems._definition import (
    Field,
    ProblemDefinition,
    check_table,
    check_value,
)
from diffana.train import CutVariable, Sample, TrainedAnalysis, subsample

__all__ = [
    "SPLITS",
    "CutVariable",
    "Problem",
    "ProblemMethod",
    "Sample",
    "TemplateKey",
    "Yields",
    "split_seed",
    "subsample",
]

_BINS = Field("int", required=True, minimum=1)

#: Fields shared by the built-in kinds' ``[generator]`` tables.
#: `[analysis]` fields every problem accepts (see `Problem.coverage_poi_values`).
ANALYSIS_FIELDS: dict[str, Field] = {"coverage_mu": Field("list", items=Field("number"))}
SAMPLE_SIZE_FIELDS: dict[str, Field] = {
    "n_train": Field("int", required=True, minimum=1),
    "n_valid": Field("int", required=True, minimum=1),
    "n_test": Field("int", required=True, minimum=1),
    "seed": Field("int", minimum=0),
}

#: Data splits a problem generates: training, validation (free for tuning) and test
#: (only for the final, hard evaluation).
SPLITS = ("train", "valid", "test")


#: ``(sample, variation)``, e.g. ``("background", "nominal")`` or ``("background", "r_up")``.
TemplateKey = tuple[str, str]
#: A histogram per template: ``{(sample, variation): Float[Array, "bins"]}``.
Yields = Mapping[TemplateKey, Float[Array, " bins"]]


def split_seed(base: int, split: str, seed: int) -> int:
    """A stable 32-bit seed for (`base`, `split`, `seed`), independent across splits."""
    digest = hashlib.sha256(f"{base}/{split}/{seed}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class ProblemMethod(NamedTuple):
    """A `diffana bench` method that a problem brings: its own pipeline and training.

    Returned by `Problem.own_methods` under the method's name; the definition configures
    it in ``[methods.<name>]`` like a generic method, and the bench runs, resumes, tracks,
    evaluates and reports it like every other method.

    **Fields:**

    - `settings`: ``settings(table, steps) -> dict``: the method's settings from its
      ``[methods.<name>]`` `table`, defaults filled in and validated (raising
      `ProblemDefinitionError`), `steps` (if not None) overriding the training steps.
      `load_problem` calls it on the table of every mode the file overrides, so a bad
      setting shows when the problem is loaded; declaring the table in
      `Problem.definition_fields` (``"methods.<name>"``) checks its keys and types with
      a suggestion for a misspelt key.
    - `train`: ``train(cfg, scenario, seed, train, *, tracker, callback, mesh) ->
      diffana.train.TrainedAnalysis``: build and train (or scan) the pipeline on the
      training events for the model of `scenario` (the arguments of
      `diffana.bench.train_method`). The bench evaluates the pipeline's
      ``hard_histogram`` on the test events.
    """

    settings: Callable[[Mapping[str, Any], int | None], dict[str, Any]]
    train: Callable[..., TrainedAnalysis]


class Problem(abc.ABC):
    """A benchmark problem: data generator, systematics, statistical model, hooks.

    Subclasses implement `generate`, `templates` and `workspace`; the optional hooks
    have working defaults. A subclass is built from its `ProblemDefinition` and
    should validate the fields it reads there, raising `ProblemDefinitionError` that
    names the field.

    **Attributes:**

    - `definition`: the definition it was built from.
    - `feature_names`: names of the observables (columns of `Sample.x`).
    - `signal_samples`, `background_samples`: sample names, as in `generate`'s output.
    - `n_bins`: bins of the analysis histogram.
    """

    feature_names: tuple[str, ...]
    signal_samples: tuple[str, ...] = ("signal",)
    background_samples: tuple[str, ...] = ("background",)

    #: ``{table: {key: Field}}``: what the kind reads from its definition, for the tables
    #: ``"generator"``, ``"analysis"``, ``"scenarios"`` (every scenario) and
    #: ``"methods.<name>"`` (the settings of a method the kind brings, `own_methods`; the
    #: generic methods' settings are checked by `load_definition`). A declared table is
    #: checked completely by `check_definition` when the problem is loaded (types,
    #: ranges, unknown keys with a suggestion); undeclared tables are left to the
    #: subclass (only ``[analysis].bins``, if present, is checked).
    definition_fields: ClassVar[Mapping[str, Mapping[str, Field]]] = {}

    @classmethod
    def check_definition(cls, definition: ProblemDefinition) -> None:
        """Check `definition` (and its other modes) against `definition_fields`.

        **Raises:** `ProblemDefinitionError` naming the file, the table and the key.
        """
        cls._check_fields(definition)
        for other in definition.other_modes():
            try:
                cls._check_fields(other)
            except ProblemDefinitionError as err:
                raise ProblemDefinitionError(f"{err} (with [modes.{other.mode}] applied)") from None

    @classmethod
    def _check_fields(cls, definition: ProblemDefinition) -> None:
        path = definition.path
        fields = cls.definition_fields
        for table, table_fields in fields.items():
            if table == "scenarios":
                for name, scen in definition.scenarios.items():
                    check_table(scen, table_fields, f"[scenarios.{name}]", path)
            elif table.startswith("methods."):
                method = table.removeprefix("methods.")
                if method in definition.methods:
                    check_table(definition.methods[method], table_fields, f"[{table}]", path)
            else:
                check_table(getattr(definition, table), table_fields, f"[{table}]", path)
        if "analysis" not in fields and "bins" in definition.analysis:
            check_value(definition.analysis["bins"], _BINS, "[analysis].bins", path)

    def __init__(self, definition: ProblemDefinition):
        self.definition = definition

    # -- convenience -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def scenarios(self) -> tuple[str, ...]:
        return tuple(self.definition.scenarios)

    @property
    def n_bins(self) -> int:
        return int(self.param("analysis", "bins", int))

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def param(self, table: str, key: str, kind: type | tuple[type, ...], default: Any = ...):
        """Read ``[table].key`` of the definition, checking its type."""
        source = getattr(self.definition, table)
        if key not in source:
            if default is ...:
                raise ProblemDefinitionError(
                    f"{self.definition.path}: [{table}].{key} is required for problems of "
                    f"kind {self.definition.kind!r}"
                )
            return default
        value = source[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = "/".join(k.__name__ for k in kinds)
            raise ProblemDefinitionError(
                f"{self.definition.path}: [{table}].{key} must be {names}, got {value!r}"
            )
        return value

    def scenario(self, name: str) -> dict[str, Any]:
        """The fields of scenario `name`; `ProblemDefinitionError` if it is not defined."""
        try:
            return self.definition.scenarios[name]
        except KeyError:
            raise ProblemDefinitionError(
                f"{self.definition.path}: unknown scenario {name!r} of problem {self.name!r}; "
                f"defined: {', '.join(self.scenarios)}"
            ) from None

    # -- required ----------------------------------------------------------------------
    @abc.abstractmethod
    def generate(self, seed: int, split: str) -> dict[str, Sample]:
        """Draw the events of `split` (one of `SPLITS`) for run seed `seed`.

        Returns ``{sample: Sample}`` with numpy arrays; at least the names in
        `signal_samples` and `background_samples`. Deterministic in (`seed`, `split`).
        """

    @abc.abstractmethod
    def templates(self, samples: Mapping[str, Sample]) -> dict[TemplateKey, Sample]:
        """The events behind every histogram of the statistical model.

        Maps the generated samples to ``{(sample, variation): Sample}``, variation
        ``"nominal"`` plus the systematic variations (shifted or reweighted events). Must
        be traceable by JAX: it runs inside the training step on minibatches.
        """

    @abc.abstractmethod
    def workspace(self, yields: Yields, scenario: str) -> dict[str, Any]:
        """The pyhf JSON workspace of `scenario` built from template histograms.

        `yields` maps every key of `templates` to its histogram. Must be traceable: the
        returned dict may hold JAX arrays (``diffana.hf.Model.from_pyhf`` accepts them).
        The measurement's POI is the signal strength.
        """

    # -- optional hooks ----------------------------------------------------------------
    def modifier_settings(self, scenario: str) -> dict[str, Any] | None:
        """pyhf ``modifier_settings`` (interpolation codes) the workspace is meant with."""
        return None

    @property
    def poi_scale(self) -> float:
        """Physical units per unit of the POI (e.g. 50 signal events per unit of mu)."""
        return float(self.param("analysis", "poi_scale", float, 1.0))

    @property
    def coverage_poi_values(self) -> tuple[float, ...]:
        """True values of the POI at which the bench measures the coverage of the
        interval for mu (``[analysis] coverage_mu``, default 0, 1 and 2)."""
        values = self.param("analysis", "coverage_mu", list, [0.0, 1.0, 2.0])
        return tuple(float(v) for v in values)

    def extra_metrics(self, yields: Yields, scenario: str) -> dict[str, float]:
        """Problem-specific figures of merit of a hard-evaluated analysis (default none)."""
        return {}

    def selection_metric(self, loss: str) -> tuple[str, bool] | None:
        """The figure of merit by which ``diffana bench`` compares restarts of a network
        trained with `loss` (``[methods.<name>].restarts``) on the validation sample:
        ``(metric, higher_is_better)``, a metric of the hard evaluation
        (`extra_metrics` or ``diffana.bench.METRICS``); None where there is none.

        Default: CLs for ``"cls"``, Z0 for ``"discovery"``, the Fisher sigma of the POI for
        ``"poi_uncertainty"``; none for a native loss.
        """
        return {
            "cls": ("cls", False),
            "discovery": ("z0", True),
            "poi_uncertainty": ("sigma_poi_fisher", False),
        }.get(loss)

    def native_loss(
        self, method: str, scenario: str
    ) -> Callable[[Callable[[Sample], Array], Mapping[str, Sample]], tuple[Array, Array]] | None:
        """A problem-specific training loss for `method`, or None to use diffana.losses.

        The returned function takes ``(hist, batch)``: ``hist(sample) -> (bins,)`` the
        soft histogram of a `Sample`, and the minibatch ``{sample: Sample}``; it returns
        ``(loss, figure_of_merit)``.
        """
        return None

    def cuts(self, scenario: str) -> tuple[CutVariable, ...] | None:
        """The thresholds a cut-based method optimises in `scenario` (default: none)."""
        return None

    def own_methods(self) -> Mapping[str, ProblemMethod]:
        """The bench methods this problem brings, by name (default: none).

        For analyses that need pipelines or training of their own (e.g. object-level
        selections on padded collections); their names may not clash with the generic
        methods of `METHOD_NAMES`.
        """
        return {}

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary recorded with every run (kind, features, samples)."""
        return {
            "name": self.name,
            "kind": self.definition.kind,
            "features": list(self.feature_names),
            "signal_samples": list(self.signal_samples),
            "background_samples": list(self.background_samples),
            "bins": self.n_bins,
            "definition": str(self.definition.path),
        }


def as_numpy_samples(samples: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Sample]:
    """Wrap ``{name: (x, w)}`` numpy pairs as float64 `Sample`s, checking shapes."""
    out = {}
    for name, (x, w) in samples.items():
        x = np.asarray(x, dtype=np.float64)
        w = np.asarray(w, dtype=np.float64)
        if x.ndim != 2 or w.shape != (x.shape[0],):
            raise ValueError(f"sample {name!r}: x must be (events, features), w (events,)")
        out[name] = Sample(x, w)
    return out


def to_jax(samples: Mapping[str, Sample]) -> dict[str, Sample]:
    """The same samples as JAX float64 arrays."""
    return {k: jax.tree.map(jnp.asarray, s) for k, s in samples.items()}
