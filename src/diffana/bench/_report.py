"""Reports of a benchmark: ``results.json`` (versioned), ``results.md`` and plots."""

from __future__ import annotations

import copy
import datetime
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffana.bench._evaluate import METRICS
from diffana.train import atomic_write_json, atomic_write_text

__all__ = ["RESULTS_SCHEMA", "summarise", "write_docs_page", "write_reports"]

#: Schema of ``results.json``; bump on incompatible changes.
RESULTS_SCHEMA = "diffana.bench.results/1"

_METRIC_ORDER = (
    "cls",
    "pyhf_cls",
    "z0",
    "pyhf_z0",
    "sigma_poi_fisher",
    "sigma_poi_profile",
)
_LOWER_IS_BETTER = {"cls", "pyhf_cls", "sigma_poi_fisher", "sigma_poi_profile"}


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    n_all = len(values)
    if v.size == 0:
        return {"n": 0, "n_runs": n_all, "median": math.nan, "q16": math.nan, "q84": math.nan,
                "min": math.nan, "max": math.nan}  # fmt: skip
    return {
        "n": int(v.size),
        "n_runs": n_all,
        "median": float(np.median(v)),
        "q16": float(np.quantile(v, 0.16)),
        "q84": float(np.quantile(v, 0.84)),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def _metric_names(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for r in runs:
        for entry in r["evaluation"].values():
            for k, v in entry.items():
                if isinstance(v, int | float) and k not in names and k != "bins_dropped":
                    names.append(k)
    ordered = [m for m in _METRIC_ORDER if m in names]
    return ordered + sorted(set(names) - set(ordered))


def summarise(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Median and spread over seeds per (method label, evaluation scenario, metric), plus
    training time and speed."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in runs:
        for scen in r["evaluation"]:
            groups.setdefault((r["label"], scen), []).append(r)
    metrics = _metric_names(runs)
    rows = []
    for (label, scen), rs in sorted(groups.items()):
        row: dict[str, Any] = {
            "label": label,
            "method": rs[0]["method"],
            "train_scenario": rs[0]["train_scenario"],
            "eval_scenario": scen,
            "seeds": sorted(r["seed"] for r in rs),
            "metrics": {m: _stats([r["evaluation"][scen].get(m) for r in rs]) for m in metrics},
            "train_time_s": _stats([r["training"].get("train_time_s") for r in rs]),
            "steps_per_second": _stats([r["training"].get("steps_per_second") for r in rs]),
            "fom_evaluations": _stats([r["training"].get("fom_evaluations") for r in rs]),
            "warnings": sorted({w for r in rs for w in r["evaluation"][scen].get("warnings", [])}),
        }
        rows.append(row)
    return rows


def _fmt(x: float, digits: int = 4) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def _cell(stats: Mapping[str, float]) -> str:
    if not stats or stats["n"] == 0:
        return "–"
    if stats["n"] == 1:
        return _fmt(stats["median"])
    return f"{_fmt(stats['median'])} [{_fmt(stats['q16'], 3)}, {_fmt(stats['q84'], 3)}]"


def _reference_tables(problem: str, refs: Mapping[str, Any], rows) -> list[str]:
    """Compare medians with published tables of the form {benchmarks, <method>: [...],
    metric, tolerance}."""
    lines: list[str] = []
    for name, ref in refs.items():
        if not isinstance(ref, Mapping) or "benchmarks" not in ref or "metric" not in ref:
            continue
        metric, tol = ref["metric"], float(ref.get("tolerance", 0.05))
        methods = [m for m in ref.get("methods", []) if isinstance(ref.get(m), list)]
        skip = (*methods, "benchmarks", "methods")
        others = [k for k, v in ref.items() if isinstance(v, list) and k not in skip]
        published = (*methods, *others)
        lines += [
            f"#### Compared with {name} ({ref.get('source', '')})",
            "",
            f"Metric `{metric}`; ours = median over seeds (of the method trained on that "
            f"benchmark, where it trains per benchmark); ✓ = within {tol:.0%} of the "
            "published value.",
            "",
            "| benchmark | "
            + " | ".join(f"{m} (published)" for m in published)
            + " | "
            + " | ".join(f"{m} (ours)" for m in methods)
            + " |",
            "|---" * (1 + len(published) + len(methods)) + "|",
        ]
        for i, bench in enumerate(ref["benchmarks"]):
            ours = []
            for m in methods:
                cand = [r for r in rows if r["method"] == m and r["eval_scenario"] == bench
                        and r["train_scenario"] in (None, bench)]  # fmt: skip
                if not cand:
                    ours.append("–")
                    continue
                st = cand[0]["metrics"].get(metric)
                med = st["median"] if st else math.nan
                pub = ref[m][i]
                ok = math.isfinite(med) and abs(med - pub) <= tol * pub
                ours.append(f"{_fmt(med)} ({st['n']} seeds) {'✓' if ok else '✗'}")
            if all(o == "–" for o in ours):
                continue
            pubs = [_fmt(ref[m][i]) for m in published]
            lines.append(f"| {bench} | " + " | ".join(pubs) + " | " + " | ".join(ours) + " |")
        lines.append("")
    return lines


def referee_differences(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Relative differences ``|diffana - pyhf| / |pyhf|`` of CLs and Z0 over all evaluations."""
    out: dict[str, list[float]] = {"cls": [], "z0": []}
    for r in runs:
        for entry in r["evaluation"].values():
            for m in out:
                a, b = entry.get(m), entry.get(f"pyhf_{m}")
                if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
                    continue
                out[m].append(abs(a - b) / max(abs(b), 1e-300))
    return out


def _referee_lines(runs) -> list[str]:
    diffs = referee_differences(runs)
    if not any(diffs.values()):
        return []
    parts = []
    for m, d in diffs.items():
        if d:
            n_off = sum(x > 1e-3 for x in d)
            parts.append(
                f"{m}: largest relative difference {max(d):.1e}, {n_off} of {len(d)} "
                "evaluations differ by more than 0.1%"
            )
    return [
        "Referee (pyhf on the exported workspaces) versus diffana: " + "; ".join(parts) + ". "
        "A difference means the two fits stopped at different local minima of a "
        "non-convex likelihood (e.g. a histosys with extreme templates): compare their NLL "
        "on the run's workspace. diffana's evaluation starts its fits from the model's "
        "init and from every histosys parameter at -1 and +1 and keeps the deepest "
        "minimum (the lower Z0, the higher CLs); pyhf's fits start from the init only.",
        "",
    ]


def _markdown(summary: Mapping[str, Any], title: str = "diffana bench results") -> str:
    lines = [
        f"# {title}",
        "",
        f"Created {summary['created']} with `{summary['meta']['command']}` "
        f"(mode `{summary['meta']['mode']}`, {summary['meta']['environment']['cpu_count']} CPU "
        f"cores, diffana {summary['meta']['environment']['diffana']}, jax "
        f"{summary['meta']['environment']['jax']}); wall time "
        f"{summary['wall_time_s']:.0f} s{'' if summary['complete'] else ' (incomplete)'}.",
        "",
        "Every figure is the hard twin of the trained pipeline evaluated on an independent "
        "test sample with full profile-likelihood fits (diffana) and, as the referee, pyhf on "
        "the exported workspace. Cells: median [16%, 84% quantiles] over seeds.",
        "",
        "Metrics: " + "; ".join(f"`{k}` = {v}" for k, v in METRICS.items()) + ".",
        "",
    ]
    for name, prob in summary["problems"].items():
        rows = prob["summary"]
        lines += [f"## {name}", "", f"Definition: `{prob['definition']}`.", ""]
        if not rows:
            lines += ["No finished runs.", ""]
            continue
        metrics = list(rows[0]["metrics"])
        for scen in sorted({r["eval_scenario"] for r in rows}):
            srows = [r for r in rows if r["eval_scenario"] == scen]
            lines += [
                f"### scenario `{scen}`",
                "",
                "| method | seeds | "
                + " | ".join(metrics)
                + " | train time (s) | steps/s | FoM evaluations |",
                "|---" * (len(metrics) + 5) + "|",
            ]
            for r in srows:
                lines.append(
                    f"| {r['label']} | {len(r['seeds'])} | "
                    + " | ".join(_cell(r["metrics"][m]) for m in metrics)
                    + f" | {_cell(r['train_time_s'])} | {_cell(r['steps_per_second'])}"
                    + f" | {_cell(r['fom_evaluations'])} |"
                )
            lines.append("")
        lines += _reference_tables(name, prob.get("references", {}), rows)
        lines += _referee_lines(prob.get("runs", []))
        warns = sorted({w for r in rows for w in r["warnings"]})
        if warns:
            lines += ["Warnings raised during evaluation:", ""]
            lines += [f"- {w}" for w in warns[:20]] + [""]
        if prob.get("plots"):
            lines += [f"![{p}]({p})" for p in prob["plots"]] + [""]
    return "\n".join(lines) + "\n"


_RUN_KEYS = ("label", "method", "seed", "train_scenario", "training", "evaluation")


def _run_entry(result: Mapping[str, Any], specs) -> dict[str, Any]:
    spec = next(s for s in specs if s.label == result["label"] and s.seed == result["seed"])
    return {k: result[k] for k in _RUN_KEYS} | {"dir": str(spec.rel_dir)}


def write_reports(out: Path, plans, results, meta, wall_time: float, plots: bool) -> dict:
    """Write ``results.json`` and ``results.md`` (and the plots if `plots`) to `out`."""
    planned = sum(len(r) for _, r in plans)
    done = sum(len(v) for v in results.values())
    summary: dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "meta": meta,
        "wall_time_s": wall_time,
        "complete": done == planned,
        "runs_planned": planned,
        "runs_done": done,
        "metrics": METRICS,
        "problems": {},
    }
    for problem, runs in plans:
        prob_runs = results[problem.name]
        entry = {
            "definition": str(problem.definition.path),
            "mode": problem.definition.mode,
            "description": problem.definition.description,
            "notes": problem.definition.notes,
            "references": problem.definition.references,
            "summary": summarise(prob_runs),
            "runs": [_run_entry(r, runs) for r in prob_runs],
            "plots": [],
        }
        if plots and prob_runs:
            from diffana.bench._plots import plot_problem

            entry["plots"] = plot_problem(out, problem, prob_runs, entry["summary"])
        summary["problems"][problem.name] = entry
    atomic_write_json(out / "results.json", summary)
    atomic_write_text(out / "results.md", _markdown(summary))
    return summary


def write_docs_page(
    out: str | Path,
    page: str | Path | None = None,
    title: str = "Benchmark results",
    *,
    overwrite: bool = False,
) -> Path:
    """Render the results of a finished ``diffana bench`` run as a documentation page.

    Reads ``<out>/results.json`` and writes the same tables as ``results.md`` to `page`
    (a Markdown file; default ``<out>/report.md``), with the definitions named by file
    name (not by the path on the machine that ran the benchmark) and the plots copied to
    a folder beside the page (``<page stem>/``), linked relatively. Written atomically.

    **Raises:** `BenchError` if `out` has no ``results.json`` of this schema, or if
    `page` exists and `overwrite` is false.

    Example:

    >>> write_docs_page("bench-results", "docs/results.md", overwrite=True)  # doctest: +SKIP
    PosixPath('docs/results.md')
    """
    from diffana.bench._errors import BenchError

    out = Path(out)
    page = out / "report.md" if page is None else Path(page)
    path = out / "results.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"{path} does not exist: run `diffana bench --out {out}` first") from None
    except json.JSONDecodeError as err:
        raise BenchError(f"{path} is not valid JSON ({err})") from None
    if summary.get("schema") != RESULTS_SCHEMA:
        raise BenchError(f"{path}: schema {summary.get('schema')!r}, expected {RESULTS_SCHEMA!r}")
    if page.exists() and not overwrite:
        raise BenchError(f"{page} exists: give --force (overwrite=True) to replace it")
    summary = copy.deepcopy(summary)
    assets = page.parent / page.stem
    assets.mkdir(parents=True, exist_ok=True)
    for prob in summary["problems"].values():
        prob["definition"] = Path(prob["definition"]).name
        links = []
        for plot in prob.get("plots", []):
            shutil.copyfile(out / plot, assets / Path(plot).name)
            links.append(f"{page.stem}/{Path(plot).name}")
        prob["plots"] = links
    atomic_write_text(page, _markdown(summary, title))
    return page
