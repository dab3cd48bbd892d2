"""Chunked streaming of ROOT files and accumulation of sums and gradients over chunks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from diffana import parallel
from diffana.errors import DataError
from diffana.io._events import Events, Schema, events_from_arrays, pad_events
from diffana.io._read import check_branches, open_tree

__all__ = [
    "EventStream",
    "iterate_events",
    "loss_and_grad_over_chunks",
    "read_events",
    "sum_over_chunks",
    "value_and_grad_over_chunks",
]


def _where(path, tree_obj, tree) -> str:
    name = getattr(tree_obj, "name", None) or tree
    return f"'{path}':{name}"


def _exact(branches: Sequence[str]):
    wanted = frozenset(branches)
    return lambda name: name in wanted


def _check_schema(schema: Schema) -> None:
    if not isinstance(schema, Schema):
        raise DataError(f"expected a diffana.io.Schema, got {type(schema).__name__}")
    if not schema.branches():
        raise DataError("the schema reads no branches (no collections, columns or weight)")


def read_events(
    path: str | os.PathLike,
    schema: Schema,
    *,
    tree: str | None = None,
    entry_start: int | None = None,
    entry_stop: int | None = None,
) -> Events:
    """Read a whole tree (or an entry range) into one `Events` batch.

    **Arguments:**

    - `path`: the ROOT file.
    - `schema`: which collections, columns and weight to read (`diffana.io.Schema`).
    - `tree`: the TTree/RNTuple name; `None` picks the file's only tree.
    - `entry_start`, `entry_stop`: the range of events (Python slice semantics).

    **Returns:** `Events` with dense `(events, n_max)` object arrays and masks.

    **Raises:** `diffana.DataError` for a missing file, tree or branch (naming candidates),
    or a branch of the wrong structure (jagged where flat was expected or vice versa).
    """
    _check_schema(schema)
    branches = schema.branches()
    with open_tree(path, tree) as t:
        where = _where(path, t, tree)
        check_branches(t, branches, where)
        arrays = t.arrays(
            filter_name=_exact(branches),
            entry_start=entry_start,
            entry_stop=entry_stop,
            library="ak",
        )
        return events_from_arrays(arrays, schema, where=where)


class EventStream:
    """A re-iterable stream of `Events` chunks read with uproot's `iterate`.

    Iterating opens the files one after the other and yields chunks of `step_size`
    events; only one chunk is in memory at a time. With `pad_last=True` (default) a
    file's last, shorter chunk is padded with zero-weight, object-free events, so every
    chunk has the same shape and a jitted per-chunk function compiles once. Iterating
    again reads the files again, which is what two-pass gradient accumulation needs.

    Create it with `iterate_events`.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        schema: Schema,
        *,
        tree: str | None,
        step_size: int,
        pad_last: bool,
    ) -> None:
        self.files = tuple(files)
        self.schema = schema
        self.tree = tree
        self.step_size = step_size
        self.pad_last = pad_last

    def __iter__(self) -> Iterator[Events]:
        branches = self.schema.branches()
        for path in self.files:
            with open_tree(path, self.tree) as t:
                where = _where(path, t, self.tree)
                check_branches(t, branches, where)
                for arrays in t.iterate(
                    filter_name=_exact(branches), step_size=self.step_size, library="ak"
                ):
                    events = events_from_arrays(arrays, self.schema, where=where)
                    if self.pad_last and events.n_events < self.step_size:
                        events = pad_events(events, self.step_size)
                    yield events

    @property
    def num_entries(self) -> int:
        """Total number of events in the files (padding not counted)."""
        total = 0
        for path in self.files:
            with open_tree(path, self.tree) as t:
                total += int(t.num_entries)
        return total

    def __repr__(self) -> str:
        return (
            f"EventStream(files={[str(f) for f in self.files]}, tree={self.tree!r}, "
            f"step_size={self.step_size}, pad_last={self.pad_last})"
        )


def iterate_events(
    files: str | os.PathLike | Sequence[str | os.PathLike],
    schema: Schema,
    *,
    tree: str | None = None,
    step_size: int = 100_000,
    pad_last: bool = True,
) -> EventStream:
    """Stream one or more ROOT files as `Events` chunks of `step_size` events.

    Files, trees and branches are checked up front, so a typo fails here rather than
    half-way through a pass.

    **Arguments:**

    - `files`: a ROOT file or a sequence of them (read in order).
    - `schema`: which collections, columns and weight to read.
    - `tree`: the TTree/RNTuple name in every file; `None` picks each file's only tree.
    - `step_size`: events per chunk (an int).
    - `pad_last`: pad short chunks with zero-weight events to `step_size` (one compile).

    **Returns:** an `EventStream` (iterable any number of times).

    **Raises:** `diffana.DataError` for a missing file, tree or branch.
    """
    _check_schema(schema)
    if isinstance(files, str | os.PathLike):
        files = [files]
    files = list(files)
    if not files:
        raise DataError("iterate_events: no files given")
    if isinstance(step_size, bool) or not isinstance(step_size, int | np.integer) or step_size < 1:
        raise DataError(
            f"iterate_events: step_size must be an int >= 1 (events), got {step_size!r}"
        )
    branches = schema.branches()
    for path in files:
        with open_tree(path, tree) as t:
            check_branches(t, branches, _where(path, t, tree))
    return EventStream(
        [Path(f) for f in files], schema, tree=tree, step_size=int(step_size), pad_last=pad_last
    )


def _tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(
        lambda x, y: None if x is None else x + y, a, b, is_leaf=lambda x: x is None
    )


def _first_and_rest(chunks: Iterable[Events]) -> tuple[Events, Iterator[Events]]:
    it = iter(chunks)
    try:
        first = next(it)
    except StopIteration:
        raise DataError("no chunks to accumulate over (empty stream or empty files)") from None
    return first, it


def sum_over_chunks(
    fn: Callable[[Any, Events], PyTree],
    params: Any,
    chunks: Iterable[Events],
    *,
    across_processes: bool = False,
) -> PyTree:
    """Sum `fn(params, chunk)` over chunks (e.g. histograms accumulated over a file).

    **Arguments:**

    - `fn`: `(params, events) -> PyTree of arrays`, additive over events (histograms,
      weighted counts). It is jitted once (`equinox.filter_jit`).
    - `params`: any PyTree (arrays, an equinox module).
    - `chunks`: an iterable of `Events` (e.g. `iterate_events(...)`).
    - `across_processes`: with several processes (`diffana.parallel.initialize_distributed`),
      each streaming its own chunks, also sum over the processes (every process must
      call it; all get the total).

    **Returns:** the sum over chunks, same structure as `fn`'s output.
    """
    f = eqx.filter_jit(fn)
    first, rest = _first_and_rest(chunks)
    total = f(params, first)
    for chunk in rest:
        total = _tree_add(total, f(params, chunk))
    return parallel.sum_over_processes(total) if across_processes else total


def value_and_grad_over_chunks(
    fn: Callable[[Any, Events], Float[Array, ""]], params: Any, chunks: Iterable[Events]
) -> tuple[Float[Array, ""], Any]:
    """Value and gradient of `sum over chunks of fn(params, chunk)`, in one pass.

    Exact when the quantity is a sum over events (a weighted count, a log-likelihood of
    independent events). For a loss that is a nonlinear function of summed histograms
    (CLs, Z0) use `loss_and_grad_over_chunks`.

    **Arguments:**

    - `fn`: `(params, events) -> scalar`.
    - `params`: the PyTree to differentiate (arrays; equinox modules are filtered).
    - `chunks`: an iterable of `Events`.

    **Returns:** `(value, grad)` with `grad` shaped like `params`.
    """
    vg = eqx.filter_jit(eqx.filter_value_and_grad(fn))
    first, rest = _first_and_rest(chunks)
    value, grad = vg(params, first)
    for chunk in rest:
        v, g = vg(params, chunk)
        value = value + v
        grad = _tree_add(grad, g)
    return value, grad


def loss_and_grad_over_chunks(
    summary_fn: Callable[[Any, Events], PyTree],
    loss_fn: Callable[[PyTree], Float[Array, ""]],
    params: Any,
    chunks: Iterable[Events],
    *,
    across_processes: bool = False,
) -> tuple[Float[Array, ""], Any]:
    """Value and gradient of `loss_fn(sum over chunks of summary_fn(params, chunk))`.

    Two passes over the data: the first sums the summaries (e.g. soft histograms per
    sample and variation) and differentiates the loss with respect to that sum; the
    second accumulates each chunk's vector-Jacobian product with that cotangent. The
    result equals the gradient computed on all events at once, with one chunk in memory.

    **Arguments:**

    - `summary_fn`: `(params, events) -> PyTree of arrays`, additive over events.
    - `loss_fn`: `summary -> scalar` (e.g. a CLs or Z0 loss of a model built from the
      summed histograms).
    - `params`: the PyTree to differentiate.
    - `chunks`: a re-iterable of `Events` (an `EventStream` or a list; not a generator).
    - `across_processes`: with several processes (`diffana.parallel.initialize_distributed`),
      each streaming its own chunks (e.g. its own files): the summaries are summed over
      the processes before the loss, and the gradients after the second pass, so every
      process gets the loss and gradient of all events (two small all-reduces; every
      process must call it).

    **Returns:** `(loss, grad)` with `grad` shaped like `params`.

    **Raises:** `diffana.DataError` when `chunks` is a one-shot iterator.
    """
    if iter(chunks) is chunks:
        raise DataError(
            "loss_and_grad_over_chunks needs two passes over the chunks; pass a re-iterable "
            "(an EventStream from iterate_events, or a list), not an iterator or generator"
        )
    total = sum_over_chunks(summary_fn, params, chunks, across_processes=across_processes)
    loss, cotangent = jax.value_and_grad(loss_fn)(total)

    @eqx.filter_jit
    def chunk_grad(p, chunk, cot):
        def projected(q):
            out = summary_fn(q, chunk)
            dots = jax.tree.leaves(jax.tree.map(lambda o, c: jnp.sum(o * c), out, cot))
            return sum(dots, jnp.zeros((), dtype=jnp.float64))

        return eqx.filter_grad(projected)(p)

    first, rest = _first_and_rest(chunks)
    grad = chunk_grad(params, first, cotangent)
    for chunk in rest:
        grad = _tree_add(grad, chunk_grad(params, chunk, cotangent))
    return loss, parallel.sum_over_processes(grad) if across_processes else grad
