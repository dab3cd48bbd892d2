"""Training: optax loop with minibatches and annealing, trainable pipelines, run tracking.

Arrays and PyTrees in: weighted events (`Sample`, minibatches by `subsample`), a pipeline
(an equinox Module) and a loss function; no problem types. `scan_thresholds` is the
derivative-free alternative for a handful of thresholds.

Pipelines map weighted events to a histogram, each with a soft ``histogram(sample,
relax)`` and a hard twin ``hard_histogram(sample)``: `SoftmaxBins` (INFERNO), `KDEBins`
(neos), `Classifier` (cross-entropy baseline, binned afterwards) and `CutSelection`
(rectangular cuts); `Network` is their equinox MLP.

Example:

>>> import jax, jax.numpy as jnp
>>> from diffana.train import Annealing, run_training
>>> Annealing(1.0, 10.0)(step=5, steps=11)   # geometric: half-way is sqrt(10)
3.1622776601683795
"""

from __future__ import annotations

from diffana.train._data import CutVariable, Sample, subsample
from diffana.train._loop import LossFn, TrainedAnalysis, TrainResult, make_optimizer, run_training
from diffana.train._pipelines import (
    Classifier,
    CutSelection,
    KDEBins,
    Network,
    SoftmaxBins,
    standardisation,
)
from diffana.train._scan import ScanResult, scan_thresholds
from diffana.train._schedules import Annealing, as_annealing
from diffana.train._tracking import (
    RunTracker,
    atomic_write_json,
    atomic_write_text,
    json_default,
    read_metrics,
)

__all__ = [
    "Annealing",
    "Classifier",
    "CutSelection",
    "CutVariable",
    "KDEBins",
    "LossFn",
    "Network",
    "RunTracker",
    "Sample",
    "ScanResult",
    "SoftmaxBins",
    "TrainResult",
    "TrainedAnalysis",
    "as_annealing",
    "atomic_write_json",
    "atomic_write_text",
    "json_default",
    "make_optimizer",
    "read_metrics",
    "run_training",
    "scan_thresholds",
    "standardisation",
    "subsample",
]
