"""Validation of pyhf JSON against pyhf's own JSON schema, tolerant of JAX tracers.

The numbers in a specification may be JAX tracers (yields inside ``jit``/``grad``), numpy
arrays or plain lists. Validation runs on a *skeleton* of the specification in which every
numeric array is replaced by a marker carrying only its shape; the skeleton is hashable, so
a structure that validated once is not validated again. Only the shape and the types of a
specification's numbers matter to the schema, never their values.
"""

from __future__ import annotations

import functools
import json
import numbers
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import jax
import jsonschema
import numpy as np
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT6

from diffana.errors import SpecError

__all__ = ["describe_path", "skeleton", "validate"]

SCHEMA_VERSION = "1.0.0"


_PLAIN_NUMBERS = frozenset({float, int})


class _NumArray(tuple):
    """Skeleton marker of a numeric array: the tuple is its shape."""

    __slots__ = ()


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def skeleton(obj: Any) -> Any:
    """A hashable, value-free copy of a JSON-like object.

    Dicts become sorted tuples of items, lists of plain numbers and numeric (JAX or numpy)
    arrays become a `_NumArray` holding their shape, numeric scalars (including 0-d arrays
    and tracers) become the marker `_NumArray(())`; strings, booleans and ``None`` stay.
    """
    if isinstance(obj, Mapping):
        return ("__dict__", tuple(sorted((str(k), skeleton(v)) for k, v in obj.items())))
    if isinstance(obj, jax.Array | np.ndarray | np.generic):
        dtype = obj.dtype
        if np.issubdtype(dtype, np.number) and not np.issubdtype(dtype, np.bool_):
            return _NumArray(tuple(int(d) for d in obj.shape))
        return ("__opaque__", repr(type(obj)), str(dtype))
    if _is_number(obj):
        return _NumArray(())
    if isinstance(obj, str | bool) or obj is None:
        return obj
    if isinstance(obj, list | tuple) and obj and set(map(type, obj)) <= _PLAIN_NUMBERS:
        return _NumArray((len(obj),))  # fast path for JSON lists of numbers
    if isinstance(obj, Sequence):
        items = [skeleton(x) for x in obj]
        if items and all(isinstance(x, _NumArray) for x in items):
            shapes = {tuple(x) for x in items}
            if len(shapes) == 1:
                return _NumArray((len(items), *items[0]))
        return ("__list__", tuple(items))
    return ("__opaque__", repr(type(obj)))


def _expand(skel: Any) -> Any:
    """Turn a skeleton back into JSON-like data (numbers become 0.0)."""
    if isinstance(skel, _NumArray):
        out: Any = 0.0
        for n in reversed(skel):
            out = [out] * n
        return out
    if isinstance(skel, tuple):
        tag, payload = skel[0], skel[1]
        if tag == "__dict__":
            return {k: _expand(v) for k, v in payload}
        if tag == "__list__":
            return [_expand(v) for v in payload]
        return _Opaque(payload)
    return skel


class _Opaque:
    """Stands for an object that is neither JSON nor an array; fails every type check."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"


@functools.cache
def _validator(schema_name: str) -> jsonschema.protocols.Validator:
    base = resources.files("pyhf") / "schemas" / SCHEMA_VERSION
    registry: Registry = Registry()
    for item in base.iterdir():
        if item.name.endswith(".json"):
            contents = json.loads(item.read_text(encoding="utf-8"))
            resource = Resource.from_contents(contents, default_specification=DRAFT6)
            registry = registry.with_resource(contents["$id"], resource)
    # pyhf's top-level schemas are a bare "$ref" (so draft 6 ignores their "$id"); refer to
    # them by their full URI to resolve "defs.json" relative to it
    schema = {"$ref": f"https://scikit-hep.org/pyhf/schemas/{SCHEMA_VERSION}/{schema_name}"}
    return jsonschema.Draft6Validator(schema, registry=registry)


def describe_path(obj: Any, path: Sequence[Any]) -> str:
    """Name the channel/sample/modifier/measurement that a JSON path points into."""
    parts: list[str] = []
    node = obj
    labels = {
        "channels": "channel",
        "samples": "sample",
        "modifiers": "modifier",
        "measurements": "measurement",
        "observations": "observation",
        "parameters": "parameter config",
    }
    key = None
    for step in path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            parts.append(f"[{step!r}]")
            break
        if isinstance(step, int) and key in labels:
            name = node.get("name") if isinstance(node, Mapping) else None
            label = labels[key]
            parts.append(f"{label} {name!r}" if isinstance(name, str) else f"{label} #{step}")
        elif not isinstance(step, int) and step not in labels:
            parts.append(f"field {step!r}")
        key = step
    return ", ".join(parts) if parts else "top level"


@functools.lru_cache(maxsize=512)
def _validate_skeleton(skel: Any, schema_name: str) -> tuple[tuple[Any, ...], str] | None:
    instance = _expand(skel)
    error = jsonschema.exceptions.best_match(_validator(schema_name).iter_errors(instance))
    if error is None:
        return None
    message = error.message
    if error.validator == "anyOf" and error.context:
        # an invalid modifier: report against the alternative of its declared type
        groups: dict[Any, list[Any]] = {}
        for sub in error.context:
            groups.setdefault(sub.relative_schema_path[0], []).append(sub)
        matching = [
            errs
            for errs in groups.values()
            if not any(e.validator == "const" and list(e.relative_path) == ["type"] for e in errs)
        ]
        candidates = [e for errs in (matching or list(groups.values())) for e in errs]
        inner = jsonschema.exceptions.best_match(candidates)
        return tuple(inner.absolute_path), inner.message
    return tuple(error.absolute_path), message


def validate(obj: Any, schema_name: str, *, skel: Any = None, source: str = "") -> None:
    """Validate `obj` against pyhf's schema `schema_name` (``workspace.json``, ...).

    **Arguments:**

    - `obj`: the JSON-like object; numeric leaves may be arrays or JAX tracers.
    - `schema_name`: a schema file of pyhf (version 1.0.0).
    - `skel`: a precomputed `skeleton(obj)`, to save a second walk.
    - `source`: where `obj` came from (a file name), used in the error message.

    **Raises:** `SpecError` naming the channel/sample/modifier at fault and the violation.
    """
    if skel is None:
        skel = skeleton(obj)
    result = _validate_skeleton(skel, schema_name)
    if result is None:
        return
    path, message = result
    where = describe_path(obj, path)
    prefix = f"{source}: " if source else ""
    if len(message) > 300:
        message = message[:300] + "..."
    raise SpecError(f"{prefix}{where}: does not follow pyhf's schema {schema_name}: {message}")
