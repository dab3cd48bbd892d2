"""Standard methods the differentiable analyses are compared with.

- A binary classifier trained with cross-entropy, then binned in its signal probability
  (`train_classifier`, `classifier_loss`, `make_classifier`).
- Rectangular cuts optimised by a grid or random scan (`scan_thresholds`,
  `candidate_ranges`).

Example:

>>> import numpy as np
>>> from diffana.baselines import scan_thresholds
>>> f = lambda t: -np.abs(t[:, 0] - 0.5)
>>> scan_thresholds(f, np.array([[0.0, 1.0]]), grid_points=5, budget=10, seed=0).thresholds
array([0.5])
"""

from __future__ import annotations

from diffana.baselines._classifier import classifier_loss, make_classifier, train_classifier
from diffana.baselines._scan import candidate_ranges
from diffana.train import ScanResult, scan_thresholds

__all__ = [
    "ScanResult",
    "candidate_ranges",
    "classifier_loss",
    "make_classifier",
    "scan_thresholds",
    "train_classifier",
]
