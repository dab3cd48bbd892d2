"""The object-level methods the dimuon problem brings to `diffana bench`.

Four ways to choose the thresholds of the object-level selection (`pair_selection`):

- ``object_cuts_default``: the hand-chosen `DEFAULT_CUTS`, nothing trained;
- ``object_cuts_scan``: a grid or random scan of the four thresholds in `SCAN_RANGES`,
  hard cuts, maximising the expected Z0 of the scenario's model on the training sample;
- ``object_cuts_grad``: Adam on sigmoid cuts through the HistFactory model (discovery
  loss by default, annealed slope), `DimuonCuts`;
- ``object_neos``: a per-pair network whose score is binned with a KDE histogram,
  trained jointly with the cuts (expected-CLs loss by default), `DimuonNeural`.

Each is a `diffana.problems.ProblemMethod`: settings from the definition's
``[methods.<name>]`` table (defaults in `OBJECT_METHOD_DEFAULTS`) and a training function
returning a `diffana.train.TrainedAnalysis`, which the bench evaluates like every other
method. Training losses evaluate the pipeline once per sample and variation batch
(`dimuon_loss`), the same statistical model as `diffana.bench.hf_loss`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array

from diffana import hf, losses
from diffana._config import compiler_options
from diffana.errors import DataError, ProblemDefinitionError
from diffana.io import Events
from diffana.problems._definition import Field, check_table
from diffana.problems._dimuon.analysis import (
    CUT_NAMES,
    CUT_SCALES,
    DEFAULT_CUTS,
    LAYOUT,
    DimuonCuts,
    DimuonNeural,
    pair_features,
    pair_selection,
)
from diffana.problems._dimuon.generator import NANOAOD_SAMPLES
from diffana.systematics import evaluate_variations
from diffana.train import RunTracker, Sample, TrainedAnalysis, run_training, scan_thresholds

__all__ = [
    "OBJECT_METHODS",
    "OBJECT_METHOD_DEFAULTS",
    "OBJECT_METHOD_FIELDS",
    "SCAN_RANGES",
    "dimuon_loss",
    "object_method_settings",
    "train_object_method",
]

#: The object-level methods, in the order of the report.
OBJECT_METHODS = ("object_cuts_default", "object_cuts_scan", "object_cuts_grad", "object_neos")
#: Scan box of the thresholds (physical units, order `CUT_NAMES`).
SCAN_RANGES = ((15.0, 70.0), (0.04, 0.4), (0.1, 1.0), (25.0, 150.0))
#: Settings of each method that its ``[methods.<name>]`` table may override.
OBJECT_METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "object_cuts_default": {},
    "object_cuts_scan": {"grid_points": 5, "budget": 400, "chunk": 8},
    "object_cuts_grad": {
        "loss": "discovery",
        "steps": 150,
        "batch_size": 4000,
        "learning_rate": 0.05,
        "slope": {"start": 0.3, "end": 0.03},
    },
    "object_neos": {
        "loss": "cls",
        "steps": 150,
        "batch_size": 4000,
        "learning_rate": 3e-3,
        "hidden": [32, 32],
        "bandwidth": {"start": 0.1, "end": 0.05},
        "cut_slope": 0.05,
    },
}
_LOSS = Field("str", choices=("discovery", "cls"))
_TRAINED_FIELDS = {
    "loss": _LOSS,
    "steps": Field("int", minimum=0),
    "batch_size": Field("int", minimum=1),
    "learning_rate": Field("number", positive=True),
}
#: ``{method: {key: Field}}``: the settings each object-level method accepts in its
#: ``[methods.<name>]`` table (those of `OBJECT_METHOD_DEFAULTS` and ``per_scenario``,
#: which the bench reads), checked when the problem is loaded.
OBJECT_METHOD_FIELDS: dict[str, dict[str, Field]] = {
    "object_cuts_default": {"per_scenario": Field("bool")},
    "object_cuts_scan": {
        "grid_points": Field("int", minimum=2),
        "budget": Field("int", minimum=1),
        "chunk": Field("int", minimum=1),
        "per_scenario": Field("bool"),
    },
    "object_cuts_grad": {**_TRAINED_FIELDS, "slope": Field("relax"), "per_scenario": Field("bool")},
    "object_neos": {
        **_TRAINED_FIELDS,
        "hidden": Field("list", items=Field("int", minimum=1)),
        "bandwidth": Field("relax"),
        "cut_slope": Field("number", positive=True),
        "per_scenario": Field("bool"),
    },
}
_TRAINED = ("object_cuts_grad", "object_neos")


def object_method_settings(
    method: str, table: Mapping[str, Any], steps: int | None, path: Any = "<definition>"
) -> dict[str, Any]:
    """The settings of object-level `method`: `OBJECT_METHOD_DEFAULTS` overridden by the
    definition's `table`, `steps` (if given) overriding a trained method's steps.

    **Raises:** `ProblemDefinitionError` naming the field for a field the method does not
    take (with the closest one suggested) or a value outside `OBJECT_METHOD_FIELDS` (a
    loss other than ``"discovery"``/``"cls"``, a negative step count, ...).
    """
    check_table(table, OBJECT_METHOD_FIELDS[method], f"[methods.{method}]", Path(path))
    cfg = {**OBJECT_METHOD_DEFAULTS[method], **dict(table)}
    if method in _TRAINED and steps is not None:
        cfg["steps"] = int(steps)
    return cfg


def _stack(samples: Mapping[str, Sample]) -> Events:
    """The samples' events stacked along a new leading axis (order `NANOAOD_SAMPLES`)."""
    events = [
        LAYOUT.unflatten(jnp.asarray(samples[n].x), jnp.asarray(samples[n].w))
        for n in NANOAOD_SAMPLES
    ]
    sizes = {e.n_events for e in events}
    if len(sizes) != 1:
        raise DataError(f"the samples must have equal sizes to be stacked, got {sorted(sizes)}")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *events)


def _variant_yields(problem, fn, pipeline, stacked: Events) -> dict[tuple[str, str], Array]:
    """`{(sample, variant): histogram}`: `fn(pipeline, events)` on every sample and
    systematic variant, one `vmap` over samples and one over variants."""
    hists = jax.vmap(lambda ev: evaluate_variations(fn, pipeline, ev, problem.variations))(stacked)
    return {(n, label): h[i] for label, h in hists.items() for i, n in enumerate(NANOAOD_SAMPLES)}


def dimuon_loss(problem: Any, scenario: str, kind: str = "discovery") -> Callable:
    """``loss_fn(pipeline, batch, relax) -> (loss, figure_of_merit)`` for
    `diffana.train.run_training`.

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


def _to_params(thresholds) -> np.ndarray:
    return (np.asarray(thresholds, dtype=np.float64) - np.asarray(DEFAULT_CUTS)) / np.asarray(
        CUT_SCALES
    )


def _scan_cuts(problem, scenario, train, cfg, seed, progress):
    """Hard-cut scan of the four thresholds in `SCAN_RANGES` (expected Z0, all variations)."""
    stacked = _stack(train)
    edges = tuple(float(e) for e in problem.edges)
    ranges = np.stack([_to_params(lo_hi) for lo_hi in zip(*SCAN_RANGES, strict=True)], 1)

    def z0_one(params, data):
        yields = _variant_yields(
            problem, lambda p, e: p.hard_histogram_events(e), DimuonCuts(params, edges), data
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
        progress=progress,
    )
    info = {"scan": res.kind, "fom_evaluations": res.n_evaluations, "train_fom": res.fom}
    return DimuonCuts(jnp.asarray(res.thresholds), edges), info, {"fom": res.history}


def _neural_pipeline(train, cfg, key, edges, n_bins) -> DimuonNeural:
    """A `DimuonNeural` at the default cuts, its inputs standardised on the training
    pairs that pass them."""

    @jax.jit
    def selected_features(x, w):
        ev = LAYOUT.unflatten(x, w)
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


def train_object_method(
    problem: Any,
    method: str,
    cfg: Mapping[str, Any],
    scenario: str,
    seed: int,
    train: Mapping[str, Sample],
    *,
    tracker: RunTracker | None = None,
    callback: Callable[[int, float], None] | None = None,
    mesh: Mesh | None = None,
) -> TrainedAnalysis:
    """Build, and train or scan, one object-level method of the dimuon problem.

    **Arguments:**

    - `problem`: a `DimuonNanoAOD` problem.
    - `method`: one of `OBJECT_METHODS`.
    - `cfg`: its settings (`object_method_settings`).
    - `scenario`: the statistical model of the loss (or of the scan's figure of merit).
    - `seed`: initialisation, minibatches and random scans.
    - `train`: the training events (`problem.generate(seed, "train")`).
    - `tracker`, `callback`: per-step (per scan chunk) tracking and progress.
    - `mesh`: split every training batch over these devices (`diffana.train.run_training`).

    **Returns:** a `diffana.train.TrainedAnalysis`; its ``training["thresholds"]`` maps
    `CUT_NAMES` to the chosen thresholds.
    """
    if method not in OBJECT_METHODS:
        raise ProblemDefinitionError(f"method must be one of {OBJECT_METHODS}, got {method!r}")
    problem.scenario(scenario)
    edges = tuple(float(e) for e in problem.edges)
    key = jax.random.fold_in(jax.random.key(seed), 11)
    k_init, k_fit = jax.random.split(key)
    t0 = time.perf_counter()
    if method == "object_cuts_default":
        pipe = DimuonCuts.from_thresholds(DEFAULT_CUTS, edges)
        info, history = {"fom_evaluations": 0}, {}
    elif method == "object_cuts_scan":
        progress = None if callback is None else (lambda d, n: callback(d - 1, math.nan))
        pipe, info, history = _scan_cuts(problem, scenario, train, cfg, seed, progress)
        if tracker is not None:
            for i, v in enumerate(history["fom"]):
                tracker.log(i, fom=v)
            tracker.flush()
    else:
        if method == "object_cuts_grad":
            pipe = DimuonCuts.from_thresholds(DEFAULT_CUTS, edges)
            relax_value = cfg["slope"]
        else:
            pipe = _neural_pipeline(train, cfg, k_init, edges, problem.n_bins)
            relax_value = cfg["bandwidth"]
        res = run_training(
            dimuon_loss(problem, scenario, cfg["loss"]), pipe, train,
            steps=int(cfg["steps"]), batch_size=int(cfg["batch_size"]), key=k_fit,
            learning_rate=float(cfg["learning_rate"]), relax=relax_value,
            tracker=tracker, callback=callback, mesh=mesh,
        )  # fmt: skip
        pipe, history = res.pipeline, res.history
        finite = history["loss"][np.isfinite(history["loss"])]
        info = {
            "loss": cfg["loss"],
            "steps": int(cfg["steps"]),
            "batch_size": int(cfg["batch_size"]),
            "fom_evaluations": int(cfg["steps"]),
            "compile_time_s": res.compile_time,
            "steps_per_second": res.steps_per_second,
            "skipped_steps": res.skipped_steps,
            "final_loss": float(finite[-1]) if finite.size else float("nan"),
            "train_fom": float(history["fom"][-1]) if cfg["steps"] else float("nan"),
            "fit_warnings": res.warnings,
        }
    info["train_time_s"] = time.perf_counter() - t0
    cuts = pipe if isinstance(pipe, DimuonCuts) else pipe.cuts
    info["thresholds"] = dict(
        zip(CUT_NAMES, np.asarray(cuts.physical_thresholds()).tolist(), strict=True)
    )
    return TrainedAnalysis(pipe, info, {k: np.asarray(v) for k, v in history.items()})
