"""Dense, padded JAX views of jagged physics objects, and the `Events` batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import awkward as ak
import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from diffana.errors import DataError
from diffana.io._read import check_branch_kind

__all__ = [
    "Collection",
    "Events",
    "Objects",
    "Schema",
    "events_from_arrays",
    "pad_events",
    "pad_objects",
    "to_dense",
]


class Objects(eqx.Module):
    """One object collection (muons, jets, ...) as dense arrays plus a validity mask.

    Event `i` holds `mask[i].sum()` real objects in slots `0..k-1`; the remaining slots are
    padding (`mask` False, values set to the collection's fill value). Selections should
    multiply per-object weights by `mask` (or use `jnp.where(mask, ...)` on both the
    input and the output of any op that is unsafe at the fill value).

    **Fields:**

    - `fields`: `{name: Float[Array, "events n_max"]}` (float64), e.g. `"pt"`, `"eta"`.
    - `mask`: `Bool[Array, "events n_max"]`, True for real objects.
    - `fill_value`: the value of padding slots (static).
    """

    fields: dict[str, Float[Array, "events n_max"]]
    mask: Bool[Array, "events n_max"]
    fill_value: float = eqx.field(default=0.0, static=True)

    def __getitem__(self, name: str) -> Float[Array, "events n_max"]:
        try:
            return self.fields[name]
        except KeyError:
            raise KeyError(
                f"no field '{name}' in this collection; fields: {sorted(self.fields)}"
            ) from None

    @property
    def n_max(self) -> int:
        """Number of object slots per event."""
        return int(self.mask.shape[-1])

    @property
    def counts(self) -> Float[Array, " events"]:
        """Number of real (unpadded, unclipped) objects per event, as float64."""
        return jnp.sum(self.mask, axis=-1, dtype=jnp.float64)

    def replace(self, name: str, values: Float[Array, "events n_max"]) -> Objects:
        """A copy with field `name` replaced by `values` (same shape)."""
        if name not in self.fields:
            raise KeyError(f"no field '{name}' in this collection; fields: {sorted(self.fields)}")
        values = jnp.asarray(values, dtype=jnp.float64)
        if values.shape != self.mask.shape:
            raise DataError(
                f"replacement for field '{name}' has shape {values.shape}, "
                f"expected {self.mask.shape}"
            )
        return Objects({**self.fields, name: values}, self.mask, self.fill_value)


class Events(eqx.Module):
    """A batch of events: object collections, event-level columns and event weights.

    A PyTree, so it passes through `jax.jit`, `jax.vmap` and `jax.grad` as an argument.

    **Fields:**

    - `objects`: `{collection: Objects}`, e.g. `events.objects["Muon"]["pt"]`.
    - `columns`: `{name: Float[Array, " events"]}` event-level numbers (e.g. `"MET_pt"`).
    - `weights`: `Float[Array, " events"]` event weights (ones when the schema names none).
      Padding events added to fill a fixed-size chunk carry weight 0, so pipelines must
      weight every per-event contribution by `weights`.

    `events["Muon"]` returns a collection, `events["MET_pt"]` a column, and
    `events["Muon.pt"]` a collection field.
    """

    objects: dict[str, Objects]
    columns: dict[str, Float[Array, " events"]]
    weights: Float[Array, " events"]

    def __getitem__(self, key: str):
        if key in self.objects:
            return self.objects[key]
        if key in self.columns:
            return self.columns[key]
        if "." in key:
            coll, field = key.split(".", 1)
            if coll in self.objects:
                return self.objects[coll][field]
        raise KeyError(
            f"no collection or column '{key}'; collections: {sorted(self.objects)}, "
            f"columns: {sorted(self.columns)}"
        )

    @property
    def n_events(self) -> int:
        """Number of events in the batch (padding events included)."""
        return int(self.weights.shape[-1])

    def replace(self, key: str, values: Float[Array, "..."]) -> Events:
        """A copy with `key` (`"Collection.field"`, a column name, or `"weights"`) replaced."""
        values = jnp.asarray(values, dtype=jnp.float64)
        if key == "weights":
            if values.shape != self.weights.shape:
                raise DataError(f"weights have shape {values.shape}, expected {self.weights.shape}")
            return Events(self.objects, self.columns, values)
        if key in self.columns:
            if values.shape != self.columns[key].shape:
                raise DataError(
                    f"column '{key}' replacement has shape {values.shape}, "
                    f"expected {self.columns[key].shape}"
                )
            return Events(self.objects, {**self.columns, key: values}, self.weights)
        if "." in key:
            coll, field = key.split(".", 1)
            if coll in self.objects:
                objs = self.objects[coll].replace(field, values)
                return Events({**self.objects, coll: objs}, self.columns, self.weights)
        raise KeyError(
            f"cannot replace '{key}': not 'weights', a column ({sorted(self.columns)}) "
            f"or 'Collection.field' with a collection in {sorted(self.objects)}"
        )


@dataclasses.dataclass(frozen=True)
class Collection:
    """How to read one object collection from a tree.

    **Arguments:**

    - `name`: the collection's name (also the branch prefix), e.g. `"Muon"`.
    - `fields`: field names read from branches `f"{name}_{field}"` (NanoAOD convention),
      or a mapping `{field: branch}` for any other naming.
    - `n_max`: object slots per event. Events with more objects are clipped: the first
      `n_max` objects are kept, in file order, or in `sort_by` order when given.
    - `sort_by`: optional field to order objects by before clipping (e.g. `"pt"`).
    - `ascending`: sort order for `sort_by` (default False: leading objects first).
    - `fill_value`: value of padding slots (default 0.0).
    """

    name: str
    fields: Sequence[str] | Mapping[str, str]
    n_max: int
    sort_by: str | None = None
    ascending: bool = False
    fill_value: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DataError(f"Collection name must be a non-empty string, got {self.name!r}")
        if isinstance(self.fields, str) or not isinstance(self.fields, Sequence | Mapping):
            raise DataError(
                f"Collection '{self.name}': fields must be a sequence of names or a mapping "
                f"{{field: branch}}, got {self.fields!r}"
            )
        if not isinstance(self.fields, Mapping):
            object.__setattr__(self, "fields", tuple(self.fields))
        if len(self.fields) == 0:
            raise DataError(f"Collection '{self.name}': no fields")
        if isinstance(self.n_max, bool) or not isinstance(self.n_max, int | np.integer):
            raise DataError(f"Collection '{self.name}': n_max must be an int, got {self.n_max!r}")
        if self.n_max < 1:
            raise DataError(f"Collection '{self.name}': n_max must be >= 1, got {self.n_max}")
        if self.sort_by is not None and self.sort_by not in self.branch_map:
            raise DataError(
                f"Collection '{self.name}': sort_by='{self.sort_by}' is not one of its fields "
                f"{list(self.branch_map)}"
            )

    @property
    def branch_map(self) -> dict[str, str]:
        """`{field: branch}`."""
        if isinstance(self.fields, Mapping):
            return dict(self.fields)
        return {f: f"{self.name}_{f}" for f in self.fields}


@dataclasses.dataclass(frozen=True)
class Schema:
    """What to read from a tree into an `Events` batch.

    **Arguments:**

    - `collections`: object collections (`Collection`s), padded to dense arrays + masks.
    - `columns`: event-level branches, as names or a mapping `{column: branch}`.
    - `weight`: the branch holding event weights, or `None` for unit weights.
    - `weight_scale`: a constant multiplying every weight (e.g. cross-section × luminosity
      / generated events).

    Example:

    >>> import diffana.io
    >>> schema = diffana.io.Schema(
    ...     collections=[diffana.io.Collection("Muon", ["pt", "eta"], n_max=2, sort_by="pt")],
    ...     columns=["MET_pt"],
    ...     weight="genWeight",
    ... )
    >>> schema.branches()
    ['Muon_pt', 'Muon_eta', 'MET_pt', 'genWeight']
    """

    collections: Sequence[Collection] = ()
    columns: Sequence[str] | Mapping[str, str] = ()
    weight: str | None = None
    weight_scale: float = 1.0

    def __post_init__(self) -> None:
        colls = tuple(self.collections)
        for c in colls:
            if not isinstance(c, Collection):
                raise DataError(f"Schema.collections must hold Collection objects, got {c!r}")
        names = [c.name for c in colls]
        if len(set(names)) != len(names):
            raise DataError(f"Schema: duplicate collection names in {names}")
        object.__setattr__(self, "collections", colls)
        if isinstance(self.columns, str):
            raise DataError(
                f"Schema.columns must be a list of names, got the string {self.columns!r}"
            )
        if not isinstance(self.columns, Mapping):
            object.__setattr__(self, "columns", tuple(self.columns))
        clash = set(self.column_map) & set(names)
        if clash:
            raise DataError(f"Schema: names used both as column and collection: {sorted(clash)}")
        if self.weight is not None and not isinstance(self.weight, str):
            raise DataError(f"Schema.weight must be a branch name or None, got {self.weight!r}")
        if not np.isfinite(self.weight_scale):
            raise DataError(f"Schema.weight_scale must be finite, got {self.weight_scale}")

    @property
    def column_map(self) -> dict[str, str]:
        """`{column: branch}`."""
        if isinstance(self.columns, Mapping):
            return dict(self.columns)
        return {c: c for c in self.columns}

    def branches(self) -> list[str]:
        """Every branch the schema reads, without duplicates, in a stable order."""
        out: list[str] = []
        for coll in self.collections:
            out.extend(coll.branch_map.values())
        out.extend(self.column_map.values())
        if self.weight is not None:
            out.append(self.weight)
        return list(dict.fromkeys(out))


def _as_jagged_fields(fields) -> dict[str, ak.Array]:
    if isinstance(fields, ak.Array):
        if not fields.fields:
            raise DataError(
                "pad_objects: pass a mapping {field: jagged array} or a record array, "
                f"got an array of type {fields.type} without fields"
            )
        return {f: fields[f] for f in fields.fields}
    if isinstance(fields, Mapping):
        if not fields:
            raise DataError("pad_objects: no fields given")
        return {str(k): v if isinstance(v, ak.Array) else ak.Array(v) for k, v in fields.items()}
    raise DataError(
        "pad_objects: expected a mapping {field: jagged array} or an awkward record array, "
        f"got {type(fields).__name__}"
    )


def pad_objects(
    fields: Mapping[str, ak.Array] | ak.Array,
    n_max: int,
    *,
    sort_by: str | None = None,
    ascending: bool = False,
    fill_value: float = 0.0,
    name: str = "objects",
) -> Objects:
    """Turn jagged per-object arrays into dense float64 JAX arrays plus a validity mask.

    Each event's object list is padded with `fill_value` (mask False) or clipped to
    `n_max` entries. Clipping keeps the first `n_max` objects in file order, or in the
    order of field `sort_by` (descending unless `ascending=True`; ties keep file order).

    **Arguments:**

    - `fields`: `{field: jagged array (events × var)}` sharing one multiplicity per event,
      or an awkward record array `events × var × {fields}`.
    - `n_max`: object slots per event.
    - `sort_by`, `ascending`: optional ordering before clipping.
    - `fill_value`: value of padding slots.
    - `name`: the collection's name, for error messages.

    **Returns:** `Objects` with `fields[f]: Float[Array, "events n_max"]` and
    `mask: Bool[Array, "events n_max"]`.

    **Raises:** `diffana.DataError` for a flat (non-jagged) field or fields whose object
    counts differ.

    Example:

    >>> import awkward as ak
    >>> from diffana.io import pad_objects
    >>> muons = pad_objects({"pt": ak.Array([[20.0, 50.0, 5.0], []])}, 2, sort_by="pt")
    >>> muons["pt"].tolist(), muons.mask.tolist()
    ([[50.0, 20.0], [0.0, 0.0]], [[True, True], [False, False]])
    """
    if isinstance(n_max, bool) or not isinstance(n_max, int | np.integer) or n_max < 1:
        raise DataError(f"pad_objects({name}): n_max must be an int >= 1, got {n_max!r}")
    arrays = _as_jagged_fields(fields)
    counts = None
    first = None
    for key, arr in arrays.items():
        check_branch_kind(arr, key, "jagged", f"collection '{name}'")
        num = ak.to_numpy(ak.num(arr, axis=1))
        if counts is None:
            counts, first = num, key
        elif num.shape != counts.shape or not np.array_equal(num, counts):
            bad = int(np.argmax(num != counts)) if num.shape == counts.shape else None
            detail = (
                f"event {bad} has {num[bad]} '{key}' values but {counts[bad]} '{first}' values"
                if bad is not None
                else f"{len(num)} events vs {len(counts)}"
            )
            raise DataError(
                f"collection '{name}': fields '{first}' and '{key}' have different object "
                f"counts ({detail}); fields of one collection must share one multiplicity"
            )
    if sort_by is not None:
        if sort_by not in arrays:
            raise DataError(
                f"pad_objects({name}): sort_by='{sort_by}' is not a field; fields: {list(arrays)}"
            )
        order = ak.argsort(arrays[sort_by], axis=1, ascending=ascending, stable=True)
        arrays = {k: v[order] for k, v in arrays.items()}
    dense = {}
    mask = None
    for key, arr in arrays.items():
        padded = ak.pad_none(arr, int(n_max), axis=1, clip=True)
        if mask is None:
            mask = ~ak.to_numpy(ak.is_none(padded, axis=1))
        values = ak.to_numpy(ak.fill_none(padded, fill_value)).astype(np.float64)
        dense[key] = jnp.asarray(values)
    return Objects(dense, jnp.asarray(mask.astype(bool)), float(fill_value))


def _to_column(array: ak.Array, name: str, where: str) -> Float[Array, " events"]:
    check_branch_kind(array, name, "flat", where)
    return jnp.asarray(ak.to_numpy(array).astype(np.float64))


def to_dense(array: ak.Array | np.ndarray, name: str = "column") -> Float[Array, " events"]:
    """An event-level (flat) array as a float64 JAX array.

    **Arguments:**

    - `array`: one number per event (awkward or numpy).
    - `name`: the column's name, for error messages.

    **Returns:** `Float[Array, " events"]`.

    **Raises:** `diffana.DataError` when `array` is jagged (a list per event) or not numeric.

    Example:

    >>> import awkward as ak
    >>> from diffana.io import to_dense
    >>> to_dense(ak.Array([1, 2, 3]), "nMuon").tolist()
    [1.0, 2.0, 3.0]
    """
    if not isinstance(array, ak.Array):
        array = ak.Array(np.asarray(array))
    return _to_column(array, name, "to_dense")


def events_from_arrays(arrays: ak.Array, schema: Schema, *, where: str = "arrays") -> Events:
    """Build an `Events` batch from an awkward record array holding the schema's branches.

    **Arguments:**

    - `arrays`: e.g. the output of `read_arrays(path, schema.branches())`.
    - `schema`: the `Schema` to apply.
    - `where`: the data's origin (file and tree), for error messages.

    **Returns:** `Events`.

    **Raises:** `diffana.DataError` for missing fields or the wrong structure.
    """
    have = set(arrays.fields)
    missing = [b for b in schema.branches() if b not in have]
    if missing:
        raise DataError(f"{where}: missing branches {missing}; have {sorted(have)}")
    objects = {}
    for coll in schema.collections:
        bmap = coll.branch_map
        for branch in bmap.values():
            check_branch_kind(arrays[branch], branch, "jagged", where)
        objects[coll.name] = pad_objects(
            {field: arrays[branch] for field, branch in bmap.items()},
            coll.n_max,
            sort_by=coll.sort_by,
            ascending=coll.ascending,
            fill_value=coll.fill_value,
            name=f"{coll.name} in {where}",
        )
    columns = {
        col: _to_column(arrays[branch], branch, where) for col, branch in schema.column_map.items()
    }
    n = len(arrays)
    if schema.weight is None:
        weights = jnp.full((n,), float(schema.weight_scale), dtype=jnp.float64)
    else:
        weights = _to_column(arrays[schema.weight], schema.weight, where) * float(
            schema.weight_scale
        )
    return Events(objects, columns, weights)


def pad_events(events: Events, n_events: int) -> Events:
    """Append zero-weight, object-free padding events up to `n_events` events."""
    extra = n_events - events.n_events
    if extra < 0:
        raise DataError(f"cannot pad {events.n_events} events down to {n_events}")
    if extra == 0:
        return events

    def grow(x, value):
        pad = [(0, extra)] + [(0, 0)] * (x.ndim - 1)
        return jnp.pad(x, pad, constant_values=value)

    objects = {
        name: Objects(
            {k: grow(v, o.fill_value) for k, v in o.fields.items()},
            grow(o.mask, False),
            o.fill_value,
        )
        for name, o in events.objects.items()
    }
    columns = {k: grow(v, 0.0) for k, v in events.columns.items()}
    return Events(objects, columns, grow(events.weights, 0.0))
