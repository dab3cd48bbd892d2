"""Run tracking: a run folder with its config and per-step metrics, written safely."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from diffana._files import atomic_path

__all__ = ["RunTracker", "atomic_write_json", "atomic_write_text", "json_default", "read_metrics"]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically: a temporary file in the same folder, then
    `os.replace`. A reader sees the old file or the new one, never half of it."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def json_default(obj: Any) -> Any:
    """`json.dumps` fallback for numpy/JAX scalars and arrays and paths."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return np.asarray(obj).tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _finite(obj: Any) -> Any:
    # JSON has no NaN/inf: write them as null so that every reader can parse the file.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically (non-finite floats become null)."""
    obj = json.loads(json.dumps(obj, default=json_default))
    atomic_write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=False) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a truncated last line is ignored)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


class RunTracker:
    """Experiment tracking for one training run.

    Creates `run_dir`, writes ``config.json`` (atomically) and streams one JSON record per
    logged step to ``metrics.jsonl`` (loss, figure of merit, learning rate, relaxation
    parameter, ...). Optionally mirrors the scalars to TensorBoard with ``tensorboardX``.

    **Arguments:**

    - `run_dir`: the run's folder (created if needed).
    - `config`: JSON-able description of the run (problem, method, hyperparameters, seed).
    - `tensorboard`: ``None`` logs to TensorBoard when ``tensorboardX`` is installed and
      skips it silently otherwise; ``True`` requires it; ``False`` never logs.

    Use as a context manager, or call `close`.

    Example:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with RunTracker(d, {"method": "neos"}, tensorboard=False) as t:
    ...         t.log(0, loss=0.5, learning_rate=1e-3)
    ...     read_metrics(f"{d}/metrics.jsonl")
    [{'step': 0, 'loss': 0.5, 'learning_rate': 0.001}]
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        config: Mapping[str, Any],
        tensorboard: bool | None = None,
    ):
        writer_cls = None
        if tensorboard is not False:
            try:
                from tensorboardX import SummaryWriter as writer_cls
            except ImportError:
                if tensorboard:
                    raise ImportError(
                        "TensorBoard logging needs tensorboardX: pip install 'diffana[tensorboard]'"
                    ) from None
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_dir / "config.json", dict(config))
        # A restarted run starts its log afresh (its result file did not exist).
        self._file = open(self.run_dir / "metrics.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._writer = None if writer_cls is None else writer_cls(str(self.run_dir / "tensorboard"))

    def log(self, step: int, **metrics: float) -> None:
        """Record the scalars `metrics` at `step` (non-finite values are written as null)."""
        record = {"step": int(step)}
        record.update({k: float(v) for k, v in metrics.items()})
        self._file.write(json.dumps(_finite(record)) + "\n")
        if self._writer is not None:
            for k, v in record.items():
                if k != "step" and v is not None:
                    self._writer.add_scalar(k, v, int(step))

    def flush(self) -> None:
        self._file.flush()
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
