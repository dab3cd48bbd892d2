"""Opening ROOT files and reading branches into awkward arrays, with clear errors."""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np
import uproot

from diffana.errors import DataError

__all__ = ["check_branch_kind", "close_matches", "list_trees", "open_tree", "read_arrays"]

_TREE_CLASSES = ("TTree", "ROOT::RNTuple", "ROOT::Experimental::RNTuple")


def close_matches(name: str, candidates: Sequence[str], n: int = 5) -> list[str]:
    """Candidates that look like `name` (difflib ratio, then case-insensitive substring)."""
    candidates = list(candidates)
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    lowered = name.lower()
    for cand in candidates:
        if len(found) >= n:
            break
        if cand not in found and (lowered in cand.lower() or cand.lower() in lowered):
            found.append(cand)
    return found


def _hint(name: str, candidates: Sequence[str]) -> str:
    matches = close_matches(name, candidates)
    if matches:
        return "; did you mean " + ", ".join(repr(m) for m in matches) + "?"
    shown = sorted(candidates)[:20]
    more = f" (and {len(candidates) - 20} more)" if len(candidates) > 20 else ""
    return "; available: " + ", ".join(repr(c) for c in shown) + more


def _check_path(path: str | os.PathLike) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise DataError(
            f"expected a ROOT file path (str or os.PathLike), got {type(path).__name__}"
        )
    p = Path(path)
    if not p.exists():
        raise DataError(f"ROOT file not found: '{p}'")
    if not p.is_file():
        raise DataError(f"'{p}' is not a file")
    return p


def list_trees(path: str | os.PathLike) -> dict[str, str]:
    """The TTrees and RNTuples of a ROOT file, as `{name: class name}` (cycles dropped).

    **Arguments:**

    - `path`: a ROOT file.

    **Returns:** a dict from object path inside the file (e.g. `"Events"`) to its ROOT class
    (`"TTree"` or `"ROOT::RNTuple"`).

    **Raises:** `diffana.DataError` when the file is missing or is not a ROOT file.
    """
    with _open_file(_check_path(path)) as file:
        return _trees_in(file)


def _trees_in(file: Any) -> dict[str, str]:
    out = {}
    for key, cls in file.classnames(cycle=False).items():
        if cls in _TREE_CLASSES:
            out[key] = cls
    return out


@contextlib.contextmanager
def _open_file(path: Path) -> Iterator[Any]:
    try:
        file = uproot.open(path)
    except Exception as err:  # uproot raises several kinds for a non-ROOT file
        raise DataError(f"could not open '{path}' as a ROOT file: {err}") from err
    with file:
        yield file


@contextlib.contextmanager
def open_tree(path: str | os.PathLike, tree: str | None = None) -> Iterator[Any]:
    """Open the TTree or RNTuple `tree` of the ROOT file `path` (a context manager).

    **Arguments:**

    - `path`: the ROOT file.
    - `tree`: the tree's name inside the file (e.g. `"Events"`); `None` picks the file's
      only TTree/RNTuple.

    **Returns:** (as the context value) uproot's `TTree` or `RNTuple` object; the file is
    closed when the `with` block ends.

    **Raises:** `diffana.DataError` for a missing file, a file that is not ROOT, a missing
    tree (naming the trees the file does hold), or an object that is not a tree.

    Example:

    >>> import diffana.io
    >>> with diffana.io.open_tree("no/such/file.root") as t:  # doctest: +IGNORE_EXCEPTION_DETAIL
    ...     pass
    Traceback (most recent call last):
    diffana.errors.DataError: ROOT file not found: 'no/such/file.root'
    """
    p = _check_path(path)
    with _open_file(p) as file:
        trees = _trees_in(file)
        if tree is None:
            if len(trees) != 1:
                what = "no TTree or RNTuple" if not trees else f"{len(trees)} trees"
                raise DataError(
                    f"'{p}' holds {what} ({', '.join(repr(t) for t in trees) or 'none'}); "
                    "pass tree=<name> to choose one"
                )
            tree = next(iter(trees))
        if not isinstance(tree, str):
            raise DataError(f"tree must be a string name, got {type(tree).__name__}")
        name = tree.split(";")[0]
        if name not in file.keys(cycle=False):
            if not trees:
                raise DataError(f"no tree '{name}' in '{p}': the file holds no TTree or RNTuple")
            raise DataError(f"no tree '{name}' in '{p}'" + _hint(name, list(trees)))
        obj = file[tree]
        cls = file.classnames(cycle=False).get(name, type(obj).__name__)
        if cls not in _TREE_CLASSES:
            raise DataError(
                f"'{name}' in '{p}' is a {cls}, not a TTree or RNTuple"
                + (f"; trees in the file: {', '.join(map(repr, trees))}" if trees else "")
            )
        yield obj


def _branch_names(tree: Any) -> list[str]:
    return [str(k) for k in tree.keys()]  # noqa: SIM118  (uproot trees are not dicts)


def check_branches(tree: Any, branches: Sequence[str], where: str) -> None:
    """Raise `DataError` naming close candidates when a branch is missing from `tree`."""
    available = _branch_names(tree)
    have = set(available)
    for branch in branches:
        if not isinstance(branch, str):
            raise DataError(f"{where}: branch names must be strings, got {branch!r}")
        if branch not in have:
            raise DataError(f"{where}: no branch '{branch}'" + _hint(branch, available))


def check_branch_kind(
    array: ak.Array, branch: str, kind: Literal["flat", "jagged"], where: str
) -> None:
    """Check that a read branch is numeric and flat (one value per event) or jagged.

    **Arguments:**

    - `array`: the branch as read by uproot, one entry per event.
    - `branch`: its name, for the message.
    - `kind`: `"flat"` (one number per event) or `"jagged"` (a list of numbers per event).
    - `where`: the file/tree, for the message.

    **Raises:** `diffana.DataError` when the branch has the other structure or is not numeric.
    """
    ndim = array.ndim
    try:
        leaf = ak.to_numpy(ak.flatten(array, axis=None)[:0])
        numeric = np.issubdtype(leaf.dtype, np.number) or leaf.dtype == np.bool_
    except Exception:
        numeric = False
    if not numeric:
        raise DataError(f"{where}: branch '{branch}' has type {array.type.content}, not numbers")
    if kind == "flat" and ndim != 1:
        raise DataError(
            f"{where}: branch '{branch}' is jagged (type {array.type.content}), but a flat "
            "event-level column (one number per event) was expected; read it as a "
            "Collection field (padded to n objects with a mask) instead"
        )
    if kind == "jagged" and ndim != 2:
        raise DataError(
            f"{where}: branch '{branch}' has type {array.type.content}, but an object "
            "collection field (a list of numbers per event) was expected; read it as an "
            "event-level column instead"
            if ndim == 1
            else f"{where}: branch '{branch}' is nested {ndim - 1} levels deep "
            f"(type {array.type.content}); only one level of objects per event is supported"
        )


def read_arrays(
    path: str | os.PathLike,
    branches: Sequence[str],
    *,
    tree: str | None = None,
    entry_start: int | None = None,
    entry_stop: int | None = None,
) -> ak.Array:
    """Read branches of a TTree/RNTuple into one awkward array of records.

    **Arguments:**

    - `path`: the ROOT file.
    - `branches`: branch (TTree) or field (RNTuple) names, read as they are (no expressions).
    - `tree`: the tree's name; `None` picks the file's only tree.
    - `entry_start`, `entry_stop`: the range of events to read (Python slice semantics).

    **Returns:** an `ak.Array` of `n_events` records with one field per branch.

    **Raises:** `diffana.DataError` for a missing file, tree or branch (naming candidates).
    """
    branches = list(branches)
    if not branches:
        raise DataError("read_arrays: no branches requested")
    with open_tree(path, tree) as t:
        where = f"'{path}':{t.name if hasattr(t, 'name') else tree}"
        check_branches(t, branches, where)
        return t.arrays(
            filter_name=_exact(branches),
            entry_start=entry_start,
            entry_stop=entry_stop,
            library="ak",
        )[branches]


def _exact(branches: Sequence[str]):
    wanted = frozenset(branches)
    return lambda name: name in wanted
