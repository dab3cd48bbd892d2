"""Planning, running and resuming a benchmark: one folder per training run."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

import diffana
from diffana import parallel
from diffana.bench._errors import BenchError
from diffana.bench._evaluate import evaluate_yields, hard_yields, template_key_str
from diffana.bench._methods import method_settings, scan_grid_points, train_method
from diffana.hf import to_hs3
from diffana.problems import Problem, load_problem
from diffana.train import RunTracker, atomic_write_json

__all__ = [
    "DEFAULT_PROBLEMS",
    "RUN_SCHEMA",
    "BenchError",
    "RunSpec",
    "plan_runs",
    "run_bench",
    "run_one",
]

#: The shared benchmarks run by ``diffana bench`` without arguments.
DEFAULT_PROBLEMS = ("gaussian_blobs", "inferno3d", "cut_scan")

#: Schema of a run's ``result.json``. Version 2: ``cuts_scan`` spends its budget on the
#: finest grid that fits and rejects selections without background events, so runs of
#: version 1 are redone rather than resumed.
RUN_SCHEMA = "diffana.bench.run/2"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: a method trained with one seed on one problem.

    **Fields:** `problem`, `method`, `seed`; `train_scenario` (the scenario whose model the
    loss uses, ``None`` for scenario-independent methods such as ``bce``) and
    `eval_scenarios` (the scenarios it is evaluated on).
    """

    problem: str
    method: str
    seed: int
    train_scenario: str | None
    eval_scenarios: tuple[str, ...]

    @property
    def label(self) -> str:
        return (
            self.method if self.train_scenario is None else f"{self.method}@{self.train_scenario}"
        )

    @property
    def rel_dir(self) -> Path:
        return Path(self.problem) / self.label / f"seed{self.seed}"


def plan_runs(
    problem: Problem, methods: Sequence[str] | None = None, seeds: int | None = None
) -> list[RunSpec]:
    """The runs of `problem`: its ``[bench]`` methods (or `methods` that it defines) times
    seeds ``0..seeds-1`` times, for per-scenario methods, its ``[bench]`` scenarios."""
    d = problem.definition
    chosen = list(methods) if methods else list(d.bench.get("methods") or d.methods)
    chosen = [m for m in chosen if m in d.methods]
    n_seeds = int(seeds if seeds is not None else d.bench.get("seeds", 1))
    scenarios = tuple(d.bench.get("scenarios") or d.scenarios)
    runs = []
    for method in chosen:
        per_scenario = bool(d.methods[method].get("per_scenario", method != "bce"))
        for seed in range(n_seeds):
            if per_scenario:
                runs += [RunSpec(d.name, method, seed, s, (s,)) for s in scenarios]
            else:
                runs.append(RunSpec(d.name, method, seed, None, scenarios))
    return runs


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise BenchError(
            f"output folder {str(out)!r} is not writable: {err.strerror or err}"
        ) from None


def _jsonable_config(problem: Problem, spec: RunSpec, cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "problem": problem.describe(),
        "mode": problem.definition.mode,
        "method": spec.method,
        "method_settings": cfg,
        "seed": spec.seed,
        "train_scenario": spec.train_scenario,
        "eval_scenarios": list(spec.eval_scenarios),
        "generator": problem.definition.generator,
        "analysis": problem.definition.analysis,
    }


def _existing(result_path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The finished result at `result_path` if it was made with the same `config`."""
    if not result_path.is_file():
        return None
    try:
        with open(result_path, encoding="utf-8") as f:
            done = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    same = _comparable(json.loads(json.dumps(config, default=str))) == _comparable(
        done.get("config")
    )
    return done if done.get("schema") == RUN_SCHEMA and same else None


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for every leaf where two configurations differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _check_settings(out: Path, plans, steps: int | None) -> None:
    """Refuse to mix, in one output folder, runs of a method made with other settings.

    Every finished run under ``<out>/<problem>/<label>/`` (any seed, also seeds this
    benchmark does not plan) must have the configuration this benchmark would give it.
    """
    for problem, runs in plans:
        for spec in {s.label: s for s in runs}.values():
            cfg = method_settings(problem, spec.method, steps)
            new = _comparable(
                json.loads(json.dumps(_jsonable_config(problem, spec, cfg), default=str))
            )
            new.pop("seed", None)
            for path in sorted((out / spec.rel_dir.parent).glob("seed*/result.json")):
                try:
                    done = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    continue
                if not isinstance(done, dict) or done.get("schema") != RUN_SCHEMA:
                    continue
                old = _comparable(done.get("config"))
                if not isinstance(old, dict):
                    continue
                old = {k: v for k, v in old.items() if k != "seed"}
                diff = _differences(old, new)
                if diff:
                    more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
                    raise BenchError(
                        f"{path.parent} was made with other settings ({'; '.join(diff[:3])}"
                        f"{more}): runs with different settings are not mixed in one "
                        f"results table; give another --out, or rerun with the settings "
                        f"of {out} to resume it"
                    )


def _comparable(config: Any) -> Any:
    """A run configuration without where its definition file was read from (the same
    definition installed elsewhere, e.g. after reinstalling diffana, is the same run)."""
    if not isinstance(config, dict) or not isinstance(config.get("problem"), dict):
        return config
    problem = {k: v for k, v in config["problem"].items() if k != "definition"}
    return {**config, "problem": problem}


class _DataCache:
    """Generated events of one problem, reused across methods: its test sample and the
    current seed's other samples (training, validation)."""

    def __init__(self):
        self._store: dict[tuple[str, int, str], Any] = {}

    def get(self, problem: Problem, seed: int, split: str):
        key = (problem.name, seed if split != "test" else -1, split)
        if key not in self._store:
            # Keep only this problem's test sample and the current seed's samples.
            self._store = {
                k: v
                for k, v in self._store.items()
                if k[0] == problem.name and (k[2] == "test" or k[1] == seed)
            }
            self._store[key] = problem.generate(seed, split)
        return self._store[key]


def run_one(
    problem: Problem,
    spec: RunSpec,
    out: Path,
    *,
    steps: int | None = None,
    tensorboard: bool | None = None,
    cache: _DataCache | None = None,
    on_step: Callable[[int, float], None] | None = None,
    referee: bool = True,
    mesh: Mesh | None = None,
    on_stage: Callable[[str, str | None], None] | None = None,
    toys: bool = True,
) -> tuple[dict[str, Any], bool]:
    """Train, evaluate and record one run; skip it if its result already exists.

    With a `mesh`, every training batch is split over its devices (`diffana.train.run_training`).
    With several processes (`diffana.parallel.initialize_distributed`), every process
    calls it with the same arguments; process 0 decides whether a finished run is reused,
    and it alone evaluates the trained pipeline and writes the run folder (the others
    return an empty result after training).
    `on_stage(stage, scenario)` is called when the evaluation after training enters a
    stage: ``"hard"`` (hard histograms of the test sample), then per evaluated scenario
    ``"fits"`` (diffana's fits), with `toys` ``"toys"`` (pseudo-experiments) and, with
    `referee`, ``"referee"`` (pyhf's).

    **Returns:** ``(result, reused)``; `reused` tells whether a finished result with the same
    configuration was found and returned without running.
    """
    cache = cache or _DataCache()
    cfg = method_settings(problem, spec.method, steps)
    config = _jsonable_config(problem, spec, cfg)
    run_dir = out / spec.rel_dir
    result_path = run_dir / "result.json"
    done = _existing(result_path, config)
    writer = jax.process_index() == 0
    if jax.process_count() > 1:  # every process must take part in the same runs
        from jax.experimental import multihost_utils

        if bool(multihost_utils.broadcast_one_to_all(np.int32(done is not None))):
            return (done if done is not None else {}), True
        done = None
    if done is not None:
        return done, True
    if result_path.exists() and writer:
        result_path.unlink()  # made with another configuration: redo it
    train = cache.get(problem, spec.seed, "train")
    scenario = spec.train_scenario or spec.eval_scenarios[0]
    tracking = (
        RunTracker(run_dir, config, tensorboard=tensorboard)
        if writer
        else contextlib.nullcontext(None)
    )
    with tracking as tracker:
        valid = cache.get(problem, spec.seed, "valid") if int(cfg.get("restarts", 1)) > 1 else None
        trained = train_method(
            problem,
            spec.method,
            cfg,
            scenario,
            spec.seed,
            train,
            tracker,
            on_step,
            mesh,
            valid=valid,
        )
    if jax.process_count() > 1:  # trained on all processes' devices: evaluate locally
        if not writer:  # the evaluation is local: process 0 does it and writes it
            return {}, False
        trained = trained._replace(pipeline=parallel.process_local(trained.pipeline))
    t0 = time.perf_counter()
    if on_stage is not None:
        on_stage("hard", None)
    test = cache.get(problem, spec.seed, "test")
    yields, counts = hard_yields(trained.pipeline, problem.templates(test))
    evaluation = evaluate_yields(
        problem, yields, spec.eval_scenarios, referee=referee, seed=spec.seed, toys=toys,
        progress=None if on_stage is None else (lambda scen, stage: on_stage(stage, scen)),
    )  # fmt: skip
    for scen, entry in evaluation.items():
        ws = entry.pop("workspace", None)
        if ws is not None and writer:  # the analysis as a pyhf workspace and in HS3
            atomic_write_json(run_dir / f"workspace_{scen}.json", ws)
            hs3 = to_hs3(ws, modifier_settings=problem.modifier_settings(scen))
            atomic_write_json(run_dir / f"workspace_{scen}.hs3.json", hs3)
    result = {
        "schema": RUN_SCHEMA,
        "config": json.loads(json.dumps(config, default=str)),
        "problem": spec.problem,
        "method": spec.method,
        "label": spec.label,
        "seed": spec.seed,
        "train_scenario": spec.train_scenario,
        "training": trained.training,
        "evaluation": evaluation,
        "eval_time_s": time.perf_counter() - t0,
        "hard_yields": {template_key_str(k): v.tolist() for k, v in yields.items()},
        "mc_counts": {template_key_str(k): v.tolist() for k, v in counts.items()},
        "history": _thin_history(trained.history),
    }
    if writer:
        atomic_write_json(result_path, result)
    return json.loads(json.dumps(result, default=str)), False


def _thin_history(history: dict[str, np.ndarray], max_points: int = 400) -> dict[str, list]:
    out = {}
    for k, v in history.items():
        v = np.asarray(v, dtype=np.float64)
        idx = np.unique(np.linspace(0, len(v) - 1, min(len(v), max_points)).astype(int))
        out[k] = v[idx].tolist() if len(v) else []
        out["step"] = idx.tolist()
    return out


def _environment() -> dict[str, Any]:
    return {
        "diffana": diffana.__version__,
        "jax": jax.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
    }


def run_bench(
    problems: Sequence[str | os.PathLike] = (),
    *,
    methods: Sequence[str] | None = None,
    seeds: int | None = None,
    steps: int | None = None,
    out: str | os.PathLike = "bench-results",
    mode: str = "default",
    tensorboard: bool | None = None,
    referee: bool = True,
    toys: bool = True,
    plots: bool = True,
    progress: bool = True,
    command: str | None = None,
    devices: int | None = None,
) -> dict[str, Any]:
    """Run `diffana bench`: train every method on every problem, evaluate, report.

    **Arguments:**

    - `problems`: names or definition-file paths; empty runs `DEFAULT_PROBLEMS`.
    - `methods`: restrict to these methods (each must be defined by at least one problem).
    - `seeds`: seeds per method (default: the definition's ``[bench].seeds``).
    - `steps`: override the training steps of every trained method.
    - `out`: output folder (created); finished runs there are reused (resume).
    - `mode`: ``"quick"``, ``"default"`` or ``"full"`` (the definitions' ``[modes]``).
    - `tensorboard`: as in `diffana.train.RunTracker`.
    - `referee`: also compute pyhf's CLs and Z0 on every exported workspace.
    - `toys`: also run the pseudo-experiments (coverage, interval width, FAIR Universe
      score, toy-based CLs); without them those metrics are left out.
    - `plots`: write the plots.
    - `progress`: show rich progress bars on stderr.
    - `command`: the command line, recorded in the results.
    - `devices`: split every training batch over this many devices
      (`diffana.parallel.event_mesh`); on a CPU-only host call
      `diffana.parallel.use_cpu_devices` first (the CLI's ``--devices`` does). None: one
      device, no sharding.

    With several processes (`diffana.parallel.initialize_distributed`, the CLI's
    ``--coordinator``/``--distributed``), every process calls it with the same arguments
    and every training batch is split over the devices of all processes (`devices` must
    be None); only process 0 writes to `out` (which the others read to resume, so it
    must be on a file system that all of them see), shows progress and writes the
    plots. The other processes return ``{"runs_done", "wall_time_s", "meta"}`` only.

    **Returns:** the content of ``results.json``.

    **Raises:** `BenchError` or `ProblemDefinitionError` before any run starts when the
    arguments, a definition or the output folder are at fault.
    """
    from diffana.bench._report import write_reports
    from diffana.problems import METHOD_NAMES, available_problems

    out = Path(out)
    names = list(problems) or [p for p in DEFAULT_PROBLEMS if p in available_problems()]
    loaded = [load_problem(p, mode=mode) for p in names]
    if len({p.name for p in loaded}) != len(loaded):
        raise BenchError("the same problem was given twice")
    if methods:
        known = [*METHOD_NAMES, *(m for p in loaded for m in p.own_methods())]
        unknown = [m for m in methods if m not in known]
        if unknown:
            raise BenchError(f"unknown method(s) {unknown}; known: {', '.join(known)}")
        undefined = [m for m in methods if not any(m in p.definition.methods for p in loaded)]
        if undefined:
            raise BenchError(f"method(s) {undefined} are not defined by any selected problem")
    if seeds is not None and seeds < 1:
        raise BenchError(f"--seeds must be >= 1, got {seeds}")
    if steps is not None and steps < 0:
        raise BenchError(f"--steps must be >= 0, got {steps}")
    mesh = None
    distributed = jax.process_count() > 1
    writer = jax.process_index() == 0
    if distributed:
        if devices is not None:
            raise BenchError(
                "--devices applies to one process; with several processes every training "
                "batch is split over the devices of all of them"
            )
        mesh = parallel.event_mesh()  # the devices of all processes
    elif devices is not None:
        try:
            mesh = parallel.event_mesh(devices)
        except ValueError as err:
            raise BenchError(f"--devices: {err}") from None
    for p in loaded:  # validate every method's settings before running anything
        for m in p.definition.methods:
            cfg = method_settings(p, m, steps)
            batch = cfg.get("batch_size")
            if mesh is not None and m != "cuts_scan" and batch and batch % mesh.size:
                raise BenchError(
                    f"--devices {mesh.size}: {p.name}'s method {m} has batch_size {batch}, "
                    f"which does not split evenly over {mesh.size} devices"
                )
    plans = [(p, plan_runs(p, methods, seeds)) for p in loaded]
    _check_settings(out, plans, steps)
    if writer:
        _check_writable(out)
    total = sum(len(r) for _, r in plans)
    meta = {
        "command": command or " ".join(sys.argv),
        "mode": mode,
        "steps_override": steps,
        "seeds_override": seeds,
        "devices": 1 if mesh is None else mesh.size,
        "runs_reused": 0,
        "environment": _environment(),
    }
    if distributed:
        meta["processes"] = jax.process_count()
        progress, plots = progress and writer, plots and writer
    results: dict[str, list[dict[str, Any]]] = {p.name: [] for p, _ in plans}
    cache = _DataCache()
    t_start = time.perf_counter()
    with _Progress(progress, total) as bar:
        for problem, runs in plans:
            for spec in runs:
                n_steps = _progress_total(problem, spec, steps)
                label = f"{spec.problem} {spec.label} seed {spec.seed}"
                bar.start_run(label, n_steps, compiling=(problem.name, spec.label))
                n_stages = 1 + len(spec.eval_scenarios) * (1 + int(toys) + int(referee))
                res, reused = run_one(
                    problem, spec, out, steps=steps, tensorboard=tensorboard, cache=cache,
                    on_step=bar.step, referee=referee, mesh=mesh, toys=toys,
                    on_stage=functools.partial(bar.stage, label, n_stages=n_stages,
                                               problem=problem.name, method=spec.method),
                )  # fmt: skip
                results[problem.name].append(res)
                meta["runs_reused"] += int(reused)
                bar.finish_run(reused)
                if writer:
                    write_reports(out, plans, results, meta, time.perf_counter() - t_start, False)
        if not writer:
            done = sum(len(v) for v in results.values())
            return {"runs_done": done, "wall_time_s": time.perf_counter() - t_start, "meta": meta}
        if plots:
            bar.start_run("writing the results and plots", 0, what="")
        return write_reports(out, plans, results, meta, time.perf_counter() - t_start, plots)


def _progress_total(problem: Problem, spec: RunSpec, steps: int | None) -> int:
    cfg = method_settings(problem, spec.method, steps)
    if spec.method != "cuts_scan":
        return int(cfg.get("steps", 0)) * int(cfg.get("restarts", 1))
    n_cuts = len(problem.cuts(spec.train_scenario or spec.eval_scenarios[0]) or ())
    grid = scan_grid_points(cfg, n_cuts) ** n_cuts
    budget = int(cfg.get("budget", 1000))
    return grid if grid <= budget else budget


_STAGE_WORDS = {
    "hard": "hard histograms of the test sample",
    "fits": "profile-likelihood fits",
    "toys": "pseudo-experiments (coverage, toy CLs)",
    "referee": "pyhf referee",
}


class _Progress:
    """Rich progress bars on stderr (or nothing): one for all runs, one for the current
    run's training steps, then its evaluation stages. A stage whose first call in this
    process compiles says so."""

    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self.total = total
        self._seen: set[tuple] = set()  # what has been compiled in this process
        self._label = ""
        self._compile_key: tuple | None = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._p = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._p.__enter__()
            self._all = self._p.add_task("runs", total=self.total)
            self._run = None
        return self

    def start_run(
        self, label: str, steps: int, compiling: tuple | None = None, what: str = "training"
    ) -> None:
        """A run starts; `compiling`: the key of its training step, which compiles on
        its first use in this process."""
        self._label = label
        self._compile_key = None if compiling is None else ("train", *compiling)
        first = self._compile_key is not None and self._compile_key not in self._seen
        if self.enabled:
            if self._run is not None:
                self._p.remove_task(self._run)
            desc = (f"{label}: {what}" if what else label) + (" (compiling)" if first else "")
            self._run = self._p.add_task(desc, total=max(int(steps), 1))

    def step(self, i: int, loss: float) -> None:
        if self._compile_key is not None:
            self._seen.add(self._compile_key)
        if self.enabled and self._run is not None:
            self._p.update(self._run, completed=i + 1, description=f"{self._label}: training")

    def stage(
        self, label: str, stage: str, scenario: str | None, n_stages: int, problem: str,
        method: str,
    ) -> None:  # fmt: skip
        """The run's evaluation entered `stage` (see `run_one`'s `on_stage`)."""
        key = (stage, problem, method if stage == "hard" else scenario)
        first = stage != "referee" and key not in self._seen
        self._seen.add(key)
        if not self.enabled:
            return
        what = _STAGE_WORDS.get(stage, stage) + (f" ({scenario})" if scenario else "")
        desc = f"{label}: evaluating: {what}" + (" (compiling)" if first else "")
        if stage == "hard":
            if self._run is not None:
                self._p.remove_task(self._run)
            self._run = self._p.add_task(desc, total=n_stages)
        elif self._run is not None:
            self._p.update(self._run, advance=1, description=desc)

    def finish_run(self, reused: bool, advance: bool = True) -> None:
        if self.enabled:
            if self._run is not None:
                self._p.remove_task(self._run)
                self._run = None
            if advance:
                self._p.advance(self._all)

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)
