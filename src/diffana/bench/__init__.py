"""`diffana bench`: train every method on the shared problems, evaluate honestly, report.

Each run (problem x method x seed, and the scenario a loss is trained on) gets a folder
``<out>/<problem>/<method>[@<scenario>]/seed<k>/`` with ``config.json``,
``metrics.jsonl`` (per step: loss, figure of merit, learning rate, relaxation
parameter), one ``workspace_<scenario>.json`` per evaluated scenario (a pyhf workspace of
the hard-evaluated analysis; ``workspace_<scenario>.hs3.json`` holds it as an HS3
document) and ``result.json``, written last and atomically: a run
whose result exists (with the same configuration) is skipped when the benchmark is run
again, so an interrupted benchmark resumes where it stopped. An output folder holding
runs of a method made with other settings (another ``--steps``, mode or definition) is
refused before anything runs, so that one results table never mixes settings. ``<out>/results.json``
(schema `RESULTS_SCHEMA`), ``<out>/results.md`` and ``<out>/plots/`` summarise all runs.

Example (the Python equivalent of ``diffana bench gaussian_blobs --quick``):

>>> from diffana.bench import run_bench
>>> results = run_bench(["gaussian_blobs"], mode="quick", out="bench-out")  # doctest: +SKIP
"""

from __future__ import annotations

from diffana.bench._evaluate import (
    CLS_TOYS,
    COVERAGE_TOYS,
    METRICS,
    evaluate_yields,
    hard_yields,
    profile_width,
    pyhf_referee,
    toy_metrics,
)
from diffana.bench._methods import TrainedAnalysis, hf_loss, method_settings, train_method
from diffana.bench._report import RESULTS_SCHEMA, summarise, write_docs_page, write_reports
from diffana.bench._runner import (
    DEFAULT_PROBLEMS,
    RUN_SCHEMA,
    BenchError,
    RunSpec,
    plan_runs,
    run_bench,
    run_one,
)

__all__ = [
    "CLS_TOYS",
    "COVERAGE_TOYS",
    "DEFAULT_PROBLEMS",
    "METRICS",
    "RESULTS_SCHEMA",
    "RUN_SCHEMA",
    "BenchError",
    "RunSpec",
    "TrainedAnalysis",
    "evaluate_yields",
    "hard_yields",
    "hf_loss",
    "method_settings",
    "plan_runs",
    "profile_width",
    "pyhf_referee",
    "run_bench",
    "run_one",
    "summarise",
    "toy_metrics",
    "train_method",
    "write_docs_page",
    "write_reports",
]
