"""The methods `diffana bench` compares: how each one builds and trains its pipeline."""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array

from diffana import hf, losses, parallel
from diffana._config import compiler_options
from diffana.baselines import candidate_ranges, train_classifier
from diffana.bench._evaluate import evaluate_yields, hard_yields
from diffana.errors import ConvergenceWarning, ProblemDefinitionError
from diffana.problems import Problem, Sample
from diffana.train import RunTracker, TrainedAnalysis, TrainResult, run_training, scan_thresholds
from diffana.train._pipelines import CutSelection, KDEBins, Network, SoftmaxBins, standardisation

__all__ = [
    "HF_LOSSES",
    "TrainedAnalysis",
    "hf_loss",
    "method_settings",
    "scan_grid_points",
    "train_method",
]

#: Losses computed on the HistFactory model built from the soft histograms.
HF_LOSSES = ("cls", "discovery", "poi_uncertainty")

_DEFAULT_LOSS = {
    "neos": "cls",
    "discovery": "discovery",
    "inferno": "poi_uncertainty",
    "bce": "bce",
    "cuts_grad": "discovery",
}
_DEFAULT_PIPELINE = {
    "neos": "nn_kde",
    "discovery": "nn_kde",
    "inferno": "nn_softmax",
    "bce": "classifier",
    "cuts_grad": "cuts",
}


def method_settings(problem: Problem, method: str, steps: int | None = None) -> dict[str, Any]:
    """The hyperparameters of `method` from the definition, with defaults filled in and
    `steps` (if given) overriding the definition's. A method the problem brings
    (`Problem.own_methods`) fills in its own defaults."""
    own = problem.own_methods().get(method)
    if own is not None:
        return own.settings(problem.definition.method(method), steps)
    cfg = dict(problem.definition.method(method))
    cfg.setdefault("loss", _DEFAULT_LOSS.get(method))
    cfg.setdefault("pipeline", _DEFAULT_PIPELINE.get(method))
    cfg.setdefault("per_scenario", method != "bce")
    cfg.setdefault("optimizer", "adam")
    cfg.setdefault("learning_rate", 1e-3)
    cfg.setdefault("lr_schedule", "constant")
    cfg.setdefault("hidden", [100, 100])
    cfg.setdefault("standardise", True)
    if steps is not None and method != "cuts_scan":
        cfg["steps"] = int(steps)
    restarts = int(cfg.get("restarts", 1))
    if (
        method == "cuts_grad"
        and restarts > 1
        and (cfg["loss"] != "discovery" or int(cfg.get("restart_candidates", 0)) < restarts - 1)
    ):
        raise ProblemDefinitionError(
            f"{problem.definition.path}: [methods.cuts_grad].restarts > 1 needs loss = "
            "'discovery' (the runs are compared by their hard discovery Z0) and "
            "restart_candidates >= restarts - 1"
        )
    if restarts > 1 and method not in ("cuts_grad", "cuts_scan"):
        if cfg["pipeline"] not in ("nn_softmax", "nn_kde"):
            raise ProblemDefinitionError(
                f"{problem.definition.path}: [methods.{method}].restarts > 1 needs a network "
                f"pipeline (nn_softmax, nn_kde), got {cfg['pipeline']!r}"
            )
        if problem.selection_metric(cfg["loss"]) is None:
            raise ProblemDefinitionError(
                f"{problem.definition.path}: [methods.{method}].restarts > 1: problems of kind "
                f"{problem.definition.kind!r} name no validation metric for loss "
                f"{cfg['loss']!r}: use loss 'cls', 'discovery' or 'poi_uncertainty', or "
                "define Problem.selection_metric for it"
            )
    if "bins" in cfg and cfg["pipeline"] == "cuts":
        raise ProblemDefinitionError(
            f"{problem.definition.path}: [methods.{method}].bins is for pipelines that bin "
            "a summary (nn_softmax, nn_kde, classifier); a cut selection has one bin"
        )
    if method != "cuts_scan":
        for key in ("steps", "batch_size"):
            if not isinstance(cfg.get(key), int) or cfg[key] < (0 if key == "steps" else 1):
                raise ProblemDefinitionError(
                    f"{problem.definition.path}: [methods.{method}].{key} must be a "
                    f"{'non-negative' if key == 'steps' else 'positive'} integer"
                )
    return cfg


@functools.lru_cache(maxsize=256)
def hf_loss(problem: Problem, scenario: str, kind: str) -> Callable:
    """``loss_fn(pipeline, batch, relax) -> (loss, figure_of_merit)`` on the HistFactory
    model of `scenario` built from the pipeline's soft histograms of the batch.

    `kind`: ``"cls"`` (expected CLs at mu = 1, figure of merit CLs), ``"discovery"``
    (loss -Z0, figure of merit Z0) or ``"poi_uncertainty"`` (Cramér-Rao sigma of the POI;
    figure of merit in physical units, times `Problem.poi_scale`). Cached, so that runs
    of the same problem and scenario share one compiled training step.
    """
    if kind not in HF_LOSSES:
        raise ValueError(f"HistFactory loss must be one of {HF_LOSSES}, got {kind!r}")
    settings = problem.modifier_settings(scenario)
    scale = problem.poi_scale

    def loss(pipeline, batch: Mapping[str, Sample], relax_value):
        templates = problem.templates(batch)
        yields = {k: pipeline.histogram(s, relax_value) for k, s in templates.items()}
        model = hf.Model.from_pyhf(problem.workspace(yields, scenario), modifier_settings=settings)
        if kind == "cls":
            value = losses.cls_loss(model, mu_test=1.0)
            return value, value
        if kind == "discovery":
            value = losses.discovery_loss(model)
            return value, -value
        value = losses.poi_uncertainty_loss(model)
        return value, value * scale

    return loss


@functools.lru_cache(maxsize=256)
def _native_loss(problem: Problem, method: str, scenario: str) -> Callable:
    native = problem.native_loss(method, scenario)
    if native is None:
        raise ProblemDefinitionError(
            f"{problem.definition.path}: [methods.{method}].loss = 'native', but problem "
            f"kind {problem.definition.kind!r} has no native loss for {method!r}"
        )

    def loss_fn(pipeline, batch, relax_value):
        return native(lambda s: pipeline.histogram(s, relax_value), batch)

    return loss_fn


def summary_bins(problem: Problem, cfg: Mapping[str, Any]) -> int:
    """Bins of a method's summary histogram: its ``bins`` setting, else the problem's
    ``[analysis].bins``."""
    return int(cfg.get("bins", problem.n_bins))


def _network_pipeline(problem: Problem, cfg, train, key):
    allx = np.concatenate([np.asarray(s.x) for s in train.values()])
    shift, scale = standardisation(allx) if cfg["standardise"] else (None, None)
    kind = cfg["pipeline"]
    n_bins = summary_bins(problem, cfg)
    n_out = n_bins if kind == "nn_softmax" else 1
    net = Network(problem.n_features, n_out, cfg["hidden"], key=key, shift=shift, scale=scale)
    if kind == "nn_softmax":
        return SoftmaxBins(net)
    if kind == "nn_kde":
        return KDEBins(net, n_bins, bool(cfg.get("trainable_edges", True)))
    raise ProblemDefinitionError(
        f"{problem.definition.path}: unknown pipeline {kind!r}; "
        "known: nn_softmax, nn_kde, classifier, cuts"
    )


def _relax_setting(cfg: Mapping[str, Any], pipeline) -> Any:
    name = getattr(pipeline, "relax_name", "relax")
    return cfg.get(name, 1.0)


def _fit_info(res, cfg) -> dict[str, Any]:
    finite = res.history["loss"][np.isfinite(res.history["loss"])]
    return {
        "steps": int(cfg["steps"]),
        "batch_size": int(cfg["batch_size"]),
        "train_time_s": res.train_time,
        "compile_time_s": res.compile_time,
        "steps_per_second": res.steps_per_second,
        "skipped_steps": res.skipped_steps,
        "final_loss": float(finite[-1]) if finite.size else float("nan"),
        "fom_evaluations": int(cfg["steps"]),
        "fit_warnings": res.warnings,
    }


def _cut_selection(problem: Problem, scenario: str, train, init_keep: float = 0.98):
    cuts = problem.cuts(scenario)
    if not cuts:
        raise ProblemDefinitionError(
            f"{problem.definition.path}: problem {problem.name!r} defines no cuts for "
            f"scenario {scenario!r}, so cut-based methods do not apply"
        )
    allx = np.concatenate([np.asarray(train[n].x) for n in problem.background_samples])
    shift, scale = standardisation(allx)

    def to_std(f, v):
        return (v - shift[f]) / scale[f]

    ranges = candidate_ranges(train, problem.signal_samples, cuts, to_std, keep=0.02)
    # Start (almost) open: each cut keeps init_keep of the signal.
    sig = np.concatenate([np.asarray(train[n].x) for n in problem.signal_samples])
    init = []
    for c in cuts:
        q = 1.0 - init_keep if c.direction.startswith(">") else init_keep
        init.append(to_std(c.feature, np.quantile(sig[:, c.feature], q)))
    sel = CutSelection(np.asarray(init, dtype=np.float64), cuts, shift, scale)
    return sel, ranges


def scan_grid_points(cfg: Mapping[str, Any], n_cuts: int) -> int:
    """Points per threshold of ``cuts_scan``'s grid: as many as its ``budget`` allows, at
    least ``grid_points`` (default 10). Where even that grid exceeds the budget, the scan
    draws ``budget`` random points instead (`diffana.train.scan_thresholds`), so the scan
    spends all or nearly all of its budget (1936 of 2000 points for two thresholds): one
    threshold on a 10-point grid would be a weak baseline next to a gradient run of
    hundreds of steps.

    >>> scan_grid_points({"grid_points": 10, "budget": 2000}, 1), scan_grid_points(
    ...     {"grid_points": 10, "budget": 2000}, 2), scan_grid_points({"budget": 2000}, 4)
    (2000, 44, 10)
    """
    budget, minimum = int(cfg.get("budget", 1000)), int(cfg.get("grid_points", 10))
    if n_cuts < 1:
        return minimum
    n = max(round(budget ** (1.0 / n_cuts)), 1)
    while n > 1 and n**n_cuts > budget:
        n -= 1
    while (n + 1) ** n_cuts <= budget:
        n += 1
    return max(n, minimum)


def _scan_fom(
    problem: Problem, scenario: str, sel: CutSelection, train, chunk: int = 256
) -> Callable:
    """Expected discovery Z0 of hard cuts, vectorised over candidate thresholds:
    ``fom(candidates (n, cuts)) -> (n,)``, evaluated `chunk` candidates at a time (the
    last chunk padded, so that every call runs one compiled program).

    The baseline gets its fastest form: every cut is turned into ``x' > t'`` on the
    standardised feature (sign-flipped for ``"<"``), so that a candidate's yields are a
    boolean mask times the weights (a matrix product), and the HistFactory fits of all
    candidates in a chunk run vmapped.

    A selection that keeps no background Monte Carlo event is invalid (NaN): its expected
    background is zero, the evaluation takes such a bin out of the statistics
    (`neutralise_empty_bins` of ``diffana.bench``), and on the training sample it would claim
    a significance that comes from the simulation's statistics alone.
    """
    sign = np.asarray([1.0 if c.direction.startswith(">") else -1.0 for c in sel.cuts])
    columns = {}
    weights = {}
    for key, s in problem.templates(train).items():
        x = np.asarray(s.x)
        shift, scale = np.asarray(sel.shift), np.asarray(sel.scale)
        cols = [sign[i] * (x[:, c.feature] - shift[c.feature]) / scale[c.feature]
                for i, c in enumerate(sel.cuts)]  # fmt: skip
        columns[key] = jnp.asarray(np.stack(cols, axis=1))
        weights[key] = jnp.asarray(np.asarray(s.w))
    z0 = _scan_z0(problem, scenario)

    def fom(candidates):
        candidates = np.asarray(candidates, dtype=np.float64) * sign[None, :]
        out = []
        for start in range(0, len(candidates), chunk):
            c = candidates[start : start + chunk]
            pad = np.concatenate([c, np.repeat(c[-1:], chunk - len(c), axis=0)])
            out.append(np.asarray(z0(jnp.asarray(pad), columns, weights))[: len(c)])
        return np.concatenate(out) if out else np.empty(0)

    return fom


@functools.lru_cache(maxsize=64)
def _scan_z0(problem: Problem, scenario: str) -> Callable:
    # One jitted function per problem and scenario, the events passed as arguments: the
    # scans and restart searches of a benchmark with the same sample sizes and chunk size
    # share one compilation.
    settings = problem.modifier_settings(scenario)

    def one(y):
        model = hf.Model.from_pyhf(problem.workspace(y, scenario), modifier_settings=settings)
        return -losses.discovery_loss(model)

    @functools.partial(jax.jit, compiler_options=compiler_options())
    def z0(t, columns, weights):
        yields = {}
        for key, cols in columns.items():
            mask = jnp.ones((t.shape[0], cols.shape[0]), dtype=bool)
            for i in range(t.shape[1]):
                mask = mask & (cols[None, :, i] > t[:, i, None])
            yields[key] = (mask.astype(jnp.float64) @ weights[key])[:, None]
        background = sum(yields[(b, "nominal")][:, 0] for b in problem.background_samples)
        return jnp.where(background > 0, jax.vmap(one)(yields), jnp.nan)

    return z0


def _valid(values: np.ndarray) -> np.ndarray:
    """Figures of merit with NaN (invalid selections) as -inf."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, -np.inf)


def _train_cuts_with_restarts(
    problem: Problem, cfg, scenario: str, seed: int, train, loss_fn, key, common
) -> TrainedAnalysis:
    """Gradient-optimised cuts from several starts; the best by the hard figure of merit.

    A run from the open selection can settle on thresholds that a better selection does
    not need. So ``restart_candidates`` random threshold sets in the scan's box
    (`diffana.baselines.candidate_ranges`; drawn as ``cuts_scan`` draws its random points
    for the same seed) are evaluated with hard cuts on the training sample, and the
    gradient runs from the open selection and from the best ``restarts - 1`` valid ones
    (selections that keep background events). The result is the run whose final
    thresholds have the highest hard discovery Z0 on the training sample (the test
    sample is not looked at), recorded as ``train_fom``. Figure-of-merit evaluations: the
    candidates, every run's steps and the final comparison.
    """
    t_start = time.perf_counter()
    restarts, n_cand = int(cfg["restarts"]), int(cfg.get("restart_candidates", 0))
    sel, ranges = _cut_selection(problem, scenario, train)
    fom = _scan_fom(problem, scenario, sel, train)
    rng = np.random.default_rng(seed)
    cand = ranges[:, 0] + rng.uniform(size=(n_cand, len(ranges))) * (ranges[:, 1] - ranges[:, 0])
    values = _valid(fom(cand))
    best = [i for i in np.argsort(-values, kind="stable")[: restarts - 1] if values[i] > -np.inf]
    starts = [np.asarray(sel.thresholds)] + [cand[i] for i in best]
    steps, callback = int(common["steps"]), common["callback"]
    runs = []
    for r, t0 in enumerate(starts):
        runs.append(run_training(
            loss_fn, CutSelection(t0, sel.cuts, sel.shift, sel.scale), train,
            key=jax.random.fold_in(key, r), relax=_relax_setting(cfg, sel),
            **{**common, "tracker": None, "callback": _restart_callback(callback, r, steps)},
        ))  # fmt: skip
    final = _valid(fom(np.stack([np.asarray(r.pipeline.thresholds) for r in runs])))
    pick = int(np.argmax(final))
    res = runs[pick]
    _log_history(common["tracker"], res, sel.relax_name, steps)
    info = _fit_info(res, cfg)
    warned: Counter = Counter()
    for r in runs:
        warned.update(r.warnings)
    info.update(
        train_time_s=time.perf_counter() - t_start,
        compile_time_s=runs[0].compile_time,
        skipped_steps=sum(r.skipped_steps for r in runs),
        fit_warnings=dict(warned),
        fom_evaluations=n_cand + len(runs) * steps + len(runs),
        restart_train_fom=[float(v) for v in final],
        restart_chosen=pick,
        train_fom=float(final[pick]),
        thresholds=np.asarray(res.pipeline.physical_thresholds()).tolist(),
    )
    return TrainedAnalysis(res.pipeline, info, res.history)


def _log_history(tracker: RunTracker | None, res: TrainResult, relax_name: str, steps: int) -> None:
    """Record a finished run's per-step history (the run a restart search kept)."""
    if tracker is None:
        return
    for i in range(steps):
        tracker.log(
            i, loss=res.history["loss"][i], fom=res.history["fom"][i],
            learning_rate=res.history["learning_rate"][i],
            **{relax_name: res.history["relax"][i]},
        )  # fmt: skip
    tracker.flush()


def _restart_callback(
    callback: Callable[[int, float], None] | None, run: int, steps: int
) -> Callable[[int, float], None] | None:
    """The progress callback of restart `run`, counting on from the earlier runs' steps."""
    if callback is None:
        return None
    return functools.partial(lambda off, i, loss: callback(off + i, loss), run * steps)


def validation_score(
    problem: Problem, scenario: str, pipeline: Any, templates: Mapping, metric: str
) -> float:
    """`metric` of `pipeline`'s hard histograms of the validation `templates`: the
    problem's `extra_metrics`, else `evaluate_yields` without pseudo-experiments or
    referee. NaN where it cannot be computed."""
    yields, _ = hard_yields(pipeline, templates)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            extra = problem.extra_metrics(yields, scenario)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            extra = {}
        if metric in extra:
            return float(extra[metric])
        entry = evaluate_yields(problem, yields, [scenario], referee=False, toys=False)
    return float(entry[scenario].get(metric, math.nan))


def _restart_key(key: Array, run: int) -> Array:
    """The key of restart `run`: run 0 keeps the key of a single training."""
    return key if run == 0 else jax.random.fold_in(key, run)


def best_restart(scores: Sequence[float], higher_is_better: bool) -> int:
    """Index of the best of `scores` (NaN counts as the worst; 0 if none is finite)."""
    values = np.asarray(scores, dtype=np.float64) * (1.0 if higher_is_better else -1.0)
    return int(np.argmax(np.where(np.isfinite(values), values, -np.inf)))


def _train_network_with_restarts(
    problem: Problem, cfg, scenario: str, seed: int, train, valid, loss_fn, keys, common
) -> TrainedAnalysis:
    """A network pipeline trained from ``restarts`` initialisations; the best on the
    validation sample is kept.

    Run 0 uses the keys of a single training, run ``r`` their ``fold_in(key, r)``. Each
    trained pipeline is evaluated hard on the validation sample (``problem.generate(seed,
    "valid")``: events apart from the training and the test samples) by the problem's
    `Problem.selection_metric` for the loss (INFERNO: the paper's sigma of s) in the
    training `scenario` (also for a network shared by all scenarios, ``per_scenario =
    false``); the test sample is not looked at. Training events and steps per run are
    those of one training; ``train_time_s`` includes the validation evaluations
    (``restart_valid_time_s``).
    """
    t_start = time.perf_counter()
    valid_time = 0.0
    restarts = int(cfg["restarts"])
    metric, higher = problem.selection_metric(cfg["loss"])
    k_init, k_fit = keys
    templates = problem.templates(valid if valid is not None else problem.generate(seed, "valid"))
    steps, callback = int(common["steps"]), common["callback"]
    runs, scores = [], []
    for r in range(restarts):
        pipe = _network_pipeline(problem, cfg, train, _restart_key(k_init, r))
        res = run_training(
            loss_fn, pipe, train, key=_restart_key(k_fit, r), relax=_relax_setting(cfg, pipe),
            **{**common, "tracker": None, "callback": _restart_callback(callback, r, steps)},
        )  # fmt: skip
        runs.append(res)
        # every process scores its local copy (the same numbers on each)
        local = parallel.process_local(res.pipeline) if jax.process_count() > 1 else res.pipeline
        t0 = time.perf_counter()
        scores.append(validation_score(problem, scenario, local, templates, metric))
        valid_time += time.perf_counter() - t0
    pick = best_restart(scores, higher)
    res = runs[pick]
    _log_history(common["tracker"], res, res.pipeline.relax_name, steps)
    info = _fit_info(res, cfg)
    warned: Counter = Counter()
    for run in runs:
        warned.update(run.warnings)
    if not np.any(np.isfinite(scores)):
        text = f"no initialisation has a finite validation {metric}; the first one is kept"
        warnings.warn(text, ConvergenceWarning, stacklevel=2)
        warned[f"ConvergenceWarning: {text}"] += 1
    info.update(
        train_time_s=time.perf_counter() - t_start,
        compile_time_s=runs[0].compile_time,
        skipped_steps=sum(run.skipped_steps for run in runs),
        fit_warnings=dict(warned),
        fom_evaluations=restarts * steps,
        restart_metric=metric,
        restart_valid=[float(v) for v in scores],
        restart_valid_time_s=valid_time,
        restart_chosen=pick,
    )
    return TrainedAnalysis(res.pipeline, info, res.history)


def train_method(
    problem: Problem,
    method: str,
    cfg: Mapping[str, Any],
    scenario: str,
    seed: int,
    train: Mapping[str, Sample],
    tracker: RunTracker | None = None,
    callback: Callable[[int, float], None] | None = None,
    mesh: Mesh | None = None,
    valid: Mapping[str, Sample] | None = None,
) -> TrainedAnalysis:
    """Build and train (or scan) `method`'s pipeline on `train` for `scenario`.

    **Arguments:**

    - `problem`, `method`, `cfg`: the problem, the method's name (generic, or one the
      problem brings: `Problem.own_methods`) and its settings (`method_settings`).
    - `scenario`: the scenario whose statistical model the loss uses (ignored by
      ``bce``, whose loss does not depend on it).
    - `seed`: the run seed (initialisation, batches, random scans).
    - `train`: the training events from ``problem.generate(seed, "train")``.
    - `tracker`, `callback`: per-step tracking and progress.
    - `mesh`: split every training batch over these devices (`diffana.train.run_training`); the
      scan (``cuts_scan``) runs on the default device.
    - `valid`: the validation events (``problem.generate(seed, "valid")``, drawn when
      needed and not given), by which network restarts are compared (``restarts``).

    **Returns:** a `TrainedAnalysis`.
    """
    own = problem.own_methods().get(method)
    if own is not None:
        return own.train(cfg, scenario, seed, train, tracker=tracker, callback=callback, mesh=mesh)
    key = jax.random.fold_in(jax.random.key(seed), 7)
    k_init, k_fit = jax.random.split(key)
    common = {
        "steps": cfg.get("steps", 0),
        "batch_size": cfg.get("batch_size", 1),
        "optimizer": cfg["optimizer"],
        "learning_rate": float(cfg["learning_rate"]),
        "lr_schedule": cfg["lr_schedule"],
        "tracker": tracker,
        "callback": callback,
        "mesh": mesh,
    }
    if method == "bce":
        res = train_classifier(
            train, problem.signal_samples, problem.background_samples,
            n_bins=summary_bins(problem, cfg), hidden=cfg["hidden"], key=key,
            standardise=bool(cfg["standardise"]), **common,
        )  # fmt: skip
        return TrainedAnalysis(res.pipeline, _fit_info(res, cfg), res.history)

    if method == "cuts_scan":
        sel, ranges = _cut_selection(problem, scenario, train)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            t0 = time.perf_counter()
            chunk = int(cfg.get("batch", 256))
            fom = _scan_fom(problem, scenario, sel, train, chunk)
            fom(np.repeat(ranges.mean(axis=1)[None, :], chunk, axis=0))  # compile: timed too
            compile_time = time.perf_counter() - t0
            res = scan_thresholds(
                fom, ranges,
                grid_points=scan_grid_points(cfg, len(sel.cuts)),
                budget=int(cfg.get("budget", 1000)),
                seed=seed, chunk=chunk,
                progress=None if callback is None else (lambda d, n: callback(d - 1, math.nan)),
            )  # fmt: skip
        pipe = CutSelection(res.thresholds, sel.cuts, sel.shift, sel.scale)
        if tracker is not None:
            for i, v in enumerate(res.history):
                tracker.log(i, fom=v)
            tracker.flush()
        info = {
            "scan": res.kind,
            "fom_evaluations": res.n_evaluations,
            "train_time_s": res.scan_time + compile_time,
            "compile_time_s": compile_time,
            "evaluations_per_second": res.n_evaluations / max(res.scan_time, 1e-9),
            "train_fom": res.fom,
            "thresholds": np.asarray(pipe.physical_thresholds()).tolist(),
            "fit_warnings": dict(Counter(f"{w.category.__name__}: {w.message}" for w in caught)),
        }
        return TrainedAnalysis(pipe, info, {"fom": res.history})

    loss_kind = cfg["loss"]
    if method == "cuts_grad" and int(cfg.get("restarts", 1)) > 1:
        return _train_cuts_with_restarts(
            problem, cfg, scenario, seed, train, hf_loss(problem, scenario, loss_kind),
            k_fit, common,
        )  # fmt: skip
    if loss_kind == "native":
        loss_fn = _native_loss(problem, method, scenario)
    elif loss_kind in HF_LOSSES:
        loss_fn = hf_loss(problem, scenario, loss_kind)
    else:
        raise ProblemDefinitionError(
            f"{problem.definition.path}: [methods.{method}].loss must be one of "
            f"{(*HF_LOSSES, 'native')}, got {loss_kind!r}"
        )
    if method != "cuts_grad" and int(cfg.get("restarts", 1)) > 1:
        return _train_network_with_restarts(
            problem, cfg, scenario, seed, train, valid, loss_fn, (k_init, k_fit), common
        )
    if method == "cuts_grad":
        pipe, _ = _cut_selection(problem, scenario, train)
    else:
        pipe = _network_pipeline(problem, cfg, train, k_init)
    res = run_training(loss_fn, pipe, train, key=k_fit, relax=_relax_setting(cfg, pipe), **common)
    info = _fit_info(res, cfg)
    if method == "cuts_grad":
        info["thresholds"] = np.asarray(res.pipeline.physical_thresholds()).tolist()
        info["train_fom"] = float(res.history["fom"][-1]) if cfg["steps"] else float("nan")
    return TrainedAnalysis(res.pipeline, info, res.history)
