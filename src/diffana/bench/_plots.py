"""Plots of a benchmark: loss curves, final hard histograms, metric comparison.

Built on `matplotlib.figure.Figure` directly (no pyplot state), so they work headless and
leave a notebook's backend alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from diffana._files import atomic_path

__all__ = ["plot_problem"]

_MAIN = ("cls", "z0", "sigma_poi_fisher", "sigma_poi_profile")
_LOG_METRICS = {"cls", "pyhf_cls"}


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


def _labels(runs) -> list[str]:
    seen: list[str] = []
    for r in runs:
        if r["label"] not in seen:
            seen.append(r["label"])
    return seen


def _loss_curves(runs, labels, path: Path, title: str) -> None:
    rows, cols = _grid(len(labels))
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, label in zip(axes, labels, strict=False):
        key = "loss"
        for r in (r for r in runs if r["label"] == label):
            h = r.get("history", {})
            key = "loss" if h.get("loss") else "fom"
            y = np.asarray([np.nan if v is None else v for v in h.get(key, [])], dtype=float)
            x = np.asarray(h.get("step", range(len(y))))[: len(y)]
            ax.plot(x, y, lw=0.8, alpha=0.8, label=f"seed {r['seed']}")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step" if key == "loss" else "scan chunk")
        ax.set_ylabel(key if key == "loss" else "best training FoM")
        finite = [v for r in runs if r["label"] == label for v in r["history"].get(key, [])
                  if v is not None and v > 0]  # fmt: skip
        if finite and max(finite) / min(finite) > 100:
            ax.set_yscale("log")
    for ax in axes[len(labels) :]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: training curves")
    fig.tight_layout()
    _save(fig, path)


def _hard_histograms(runs, labels, problem, path: Path, title: str) -> None:
    rows, cols = _grid(len(labels))
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, label in zip(axes, labels, strict=False):
        r = min((r for r in runs if r["label"] == label), key=lambda r: r["seed"])
        y = r.get("hard_yields", {})
        bkg = sum(np.asarray(y[f"{b}/nominal"]) for b in problem.background_samples)
        sig = sum(np.asarray(y[f"{s}/nominal"]) for s in problem.signal_samples)
        edges = np.arange(len(bkg) + 1)
        ax.stairs(bkg, edges, fill=True, alpha=0.6, label="background")
        ax.stairs(bkg + sig, edges, baseline=bkg, fill=True, alpha=0.6, label="signal")
        ax.set_yscale("log" if np.max(bkg + sig) / max(np.min(bkg + sig), 1e-3) > 100 else "linear")
        ax.set_title(f"{label} (seed {r['seed']})", fontsize=9)
        ax.set_xlabel("bin")
        ax.set_ylabel("expected events")
    if labels:
        axes[0].legend(fontsize=7)
    for ax in axes[len(labels) :]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: hard histograms on the test sample")
    fig.tight_layout()
    _save(fig, path)


def _metric_comparison(runs, labels, metrics, path: Path, title: str) -> None:
    scenarios = sorted({s for r in runs for s in r["evaluation"]})
    fig = Figure(figsize=(max(4.0, 1.1 * len(labels) * len(scenarios)), 2.6 * len(metrics)))
    axes = fig.subplots(len(metrics), 1, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=True):
        ticks, names = [], []
        pos = 0
        for scen in scenarios:
            for label in labels:
                vals = [r["evaluation"][scen].get(metric) for r in runs
                        if r["label"] == label and scen in r["evaluation"]]  # fmt: skip
                vals = [v for v in vals if v is not None and np.isfinite(v)]
                if not vals:
                    continue
                ax.scatter(np.full(len(vals), pos), vals, s=12, alpha=0.7)
                ax.hlines(np.median(vals), pos - 0.3, pos + 0.3, color="k")
                ticks.append(pos)
                names.append(f"{label}\n[{scen}]" if len(scenarios) > 1 else label)
                pos += 1
            pos += 0.5
        ax.set_xticks(ticks, names, fontsize=7)
        ax.set_ylabel(metric)
        if metric in _LOG_METRICS:
            ax.set_yscale("log")
    fig.suptitle(f"{title}: metrics on the test sample (dots: seeds, bars: medians)")
    fig.tight_layout()
    _save(fig, path)


def plot_problem(
    out: Path, problem: Any, runs: Sequence[Mapping[str, Any]], summary: Any
) -> list[str]:
    """Write the three plots of one problem to ``out/plots``; returns their paths
    relative to `out`."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    labels = _labels(runs)
    name = problem.name
    metrics = [m for m in _MAIN if any(m in e for r in runs for e in r["evaluation"].values())]
    extra = sorted({k for r in runs for e in r["evaluation"].values() for k, v in e.items()
                    if isinstance(v, float) and k not in METRIC_KEYS})  # fmt: skip
    paths = []
    for fname, fn in (
        (f"{name}_loss.png", lambda p: _loss_curves(runs, labels, p, name)),
        (f"{name}_hists.png", lambda p: _hard_histograms(runs, labels, problem, p, name)),
        (
            f"{name}_metrics.png",
            lambda p: _metric_comparison(runs, labels, metrics + extra, p, name),
        ),
    ):
        fn(plots / fname)
        paths.append(f"plots/{fname}")
    return paths


METRIC_KEYS = {"cls", "pyhf_cls", "z0", "pyhf_z0", "sigma_poi_fisher", "sigma_poi_profile"}
