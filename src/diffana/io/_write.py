"""Writing results: hard histograms as `hist.Hist`, ROOT files and pyhf workspaces."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import hist
import jax
import numpy as np
import uproot
from jaxtyping import ArrayLike, Float

from diffana._files import atomic_path as _atomic_path
from diffana.errors import DataError, SpecError

__all__ = ["atomic_path", "to_hist", "write_histograms", "write_workspace"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically.

    Readers never see a half-written file: the content goes to a temporary file in the
    same folder, which `os.replace` moves over `path` only when the block succeeds. On an
    exception the temporary file is removed and `path` is untouched.

    **Raises:** `DataError` if the folder of `path` does not exist.
    """
    target = Path(path)
    if not target.parent.exists():
        raise DataError(f"cannot write '{target}': folder '{target.parent}' does not exist")
    with _atomic_path(target, suffix or ".tmp") as tmp:
        yield tmp


def _concrete(x: Any, what: str) -> np.ndarray:
    if isinstance(x, jax.core.Tracer):
        raise DataError(
            f"{what} is a traced JAX value; evaluate it outside jit/grad/vmap before writing"
        )
    return np.asarray(x, dtype=np.float64)


def to_hist(
    counts: Float[ArrayLike, " bins"],
    edges: Float[ArrayLike, " edges"],
    *,
    variances: Float[ArrayLike, " bins"] | None = None,
    name: str = "observable",
    label: str | None = None,
) -> hist.Hist:
    """A histogram's bin contents as a `hist.Hist` (plottable with mplhep, writable to ROOT).

    **Arguments:**

    - `counts`: bin contents `(bins,)` (e.g. a hard histogram's weighted counts).
    - `edges`: bin edges `(bins + 1,)`, increasing.
    - `variances`: optional sum of squared weights per bin; gives `Weight` storage.
    - `name`, `label`: the axis name and label (e.g. `"mass"`, `"m_μμ [GeV]"`).

    **Returns:** a `hist.Hist` with one `Variable` axis (no flow bins).

    Example:

    >>> from diffana.io import to_hist
    >>> h = to_hist([3.0, 5.0], [0.0, 1.0, 2.0], name="x")
    >>> h.values().tolist(), h.axes[0].edges.tolist()
    ([3.0, 5.0], [0.0, 1.0, 2.0])
    """
    counts = _concrete(counts, "counts").reshape(-1)
    edges = _concrete(edges, "edges").reshape(-1)
    if edges.size != counts.size + 1:
        raise DataError(
            f"to_hist: {counts.size} bins need {counts.size + 1} edges, got {edges.size}"
        )
    if not np.all(np.diff(edges) > 0):
        raise DataError(f"to_hist: edges must increase strictly, got {edges.tolist()}")
    axis = hist.axis.Variable(edges, name=name, label=label or name, flow=False)
    if variances is None:
        h = hist.Hist(axis, storage=hist.storage.Double())
        h.view()[...] = counts
        return h
    variances = _concrete(variances, "variances").reshape(-1)
    if variances.shape != counts.shape:
        raise DataError(f"to_hist: variances have shape {variances.shape}, counts {counts.shape}")
    h = hist.Hist(axis, storage=hist.storage.Weight())
    view = h.view()
    view.value = counts
    view.variance = variances
    return h


def write_histograms(path: str | os.PathLike, histograms: Mapping[str, hist.Hist]) -> Path:
    """Write histograms to a ROOT file (as TH1D), atomically.

    **Arguments:**

    - `path`: the output ROOT file (replaced if it exists).
    - `histograms`: `{name: hist.Hist}`; names may contain `/` to make folders.

    **Returns:** the path written.
    """
    if not isinstance(histograms, Mapping) or not histograms:
        raise DataError("write_histograms: pass a non-empty mapping {name: hist.Hist}")
    for name, h in histograms.items():
        if not isinstance(h, hist.Hist):
            raise DataError(f"write_histograms: '{name}' is a {type(h).__name__}, not a hist.Hist")
    with atomic_path(path, suffix=".root") as tmp, uproot.recreate(tmp) as out:
        for name, h in histograms.items():
            out[name] = h
    return Path(path)


def _jsonable(obj: Any, where: str) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, jax.core.Tracer):
        raise DataError(f"{where} is a traced JAX value; evaluate the workspace outside jit/grad")
    if isinstance(obj, jax.Array | np.ndarray):
        arr = np.asarray(obj)
        if np.issubdtype(arr.dtype, np.number) and not np.all(np.isfinite(arr)):
            raise DataError(
                f"{where} holds non-finite values {arr.tolist()}; "
                "a pyhf workspace needs finite numbers"
            )
        return arr.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        raise DataError(f"{where} is non-finite ({obj}); a pyhf workspace needs finite numbers")
    return obj


def write_workspace(path: str | os.PathLike, workspace: Any, *, validate: bool = True) -> Path:
    """Write a pyhf workspace JSON file atomically (temporary file, then `os.replace`).

    **Arguments:**

    - `path`: the output `.json` file (replaced if it exists).
    - `workspace`: a pyhf workspace dict (JAX/numpy arrays are converted to lists), a
      `pyhf.Workspace`, or an object with a `to_pyhf()` method (a `diffana.hf.Model`).
    - `validate`: check the result against pyhf's workspace JSON schema first.

    **Returns:** the path written.

    **Raises:** `diffana.SpecError` when the workspace fails pyhf's schema;
    `diffana.DataError` for traced or non-finite values.
    """
    if hasattr(workspace, "to_pyhf") and not isinstance(workspace, Mapping):
        workspace = workspace.to_pyhf()
    if not isinstance(workspace, Mapping):
        raise DataError(
            f"write_workspace: expected a workspace dict, got {type(workspace).__name__}"
        )
    spec = _jsonable(dict(workspace), "workspace")
    if validate:
        import pyhf

        try:
            pyhf.Workspace(spec)
        except Exception as err:  # pyhf raises InvalidSpecification and schema errors
            raise SpecError(f"write_workspace: not a valid pyhf workspace: {err}") from err
    text = json.dumps(spec, indent=2, sort_keys=True)
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(text + "\n")
    return Path(path)
