"""Validation of pyhf JSON against pyhf's own JSON schema, tolerant of JAX tracers.

The numbers in a specification may be JAX tracers (yields inside ``jit``/``grad``), numpy
arrays or plain lists. Validation runs on a *skeleton* of the specification in which every
numeric array is replaced by a marker carrying only its shape; the skeleton is hashable, so
a structure that validated once is not validated again. Only the shape and the types of a
specification's numbers matter to the schema, never their values.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
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

    def __repr__(self) -> str:
        return f"_NumArray{tuple(self)!r}"


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def skeleton(obj: Any) -> Any:
    """A hashable, value-free copy of a JSON-like object.

    Dicts become sorted tuples of items, lists of plain numbers and numeric (JAX or numpy)
    arrays become a `_NumArray` holding their shape, numeric scalars (including 0-d arrays
    and tracers) become the marker `_NumArray(())`; strings, booleans and ``None`` stay.
    """
    # The exact types of parsed JSON first (a published workspace has ~10^5 nodes).
    kind = type(obj)
    if kind is dict:
        return ("__dict__", tuple(sorted([(str(k), skeleton(v)) for k, v in obj.items()])))
    if kind is str or kind is bool or obj is None:
        return obj
    if kind is float or kind is int:
        return _NumArray(())
    if kind is list:
        if obj and set(map(type, obj)) <= _PLAIN_NUMBERS:
            return _NumArray((len(obj),))  # fast path for JSON lists of numbers
        return _sequence_skeleton(obj)
    return _skeleton_general(obj)


def _sequence_skeleton(obj: Sequence[Any]) -> Any:
    items = [skeleton(x) for x in obj]
    if items and all(isinstance(x, _NumArray) for x in items):
        shapes = {tuple(x) for x in items}
        if len(shapes) == 1:
            return _NumArray((len(items), *items[0]))
    return ("__list__", tuple(items))


def _skeleton_general(obj: Any) -> Any:
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
        return _NumArray((len(obj),))
    if isinstance(obj, Sequence):
        return _sequence_skeleton(obj)
    return ("__opaque__", repr(type(obj)))


def _expand(skel: Any, *, one_element: bool = False) -> Any:
    """Turn a skeleton back into JSON-like data (numbers become 0.0).

    With `one_element`, for validation, a numeric array keeps one element along each
    axis (none where it has none): pyhf's schema constrains array lengths only by
    `minItems: 1` and treats every element of a numeric array alike, so the verdict is
    that of the full array for a fraction of the validator's work (the lengths are
    checked against the bins when the model is built).
    """
    if isinstance(skel, _NumArray):
        out: Any = 0.0
        for n in reversed(skel):
            out = [out] * (min(n, 1) if one_element else n)
        return out
    if isinstance(skel, tuple):
        tag, payload = skel[0], skel[1]
        if tag == "__dict__":
            return {k: _expand(v, one_element=one_element) for k, v in payload}
        if tag == "__list__":
            return [_expand(v, one_element=one_element) for v in payload]
        return _Opaque(payload)
    return skel


class _Opaque:
    """Stands for an object that is neither JSON nor an array; fails every type check."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"


def _schema_folder() -> Path:
    """pyhf's schema files, found without importing pyhf (which takes seconds)."""
    spec = importlib.util.find_spec("pyhf")
    if spec is None or not spec.submodule_search_locations:
        raise SpecError("pyhf's JSON schema is needed to validate a workspace; install pyhf")
    return Path(next(iter(spec.submodule_search_locations))) / "schemas" / SCHEMA_VERSION


@functools.cache
def _validator(schema_name: str) -> jsonschema.protocols.Validator:
    base = _schema_folder()
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


#: Sub-folder of JAX's persistent compilation cache (when it is on) that records the
#: structures found valid, one empty file per digest, so a later process skips the
#: validation (seconds for a published workspace of 10^4 modifiers).
VALID_STRUCTURES = "diffana-valid-structures"


def _cache_folder() -> str | None:
    return jax.config.jax_compilation_cache_dir


def _record_of(skel: Any, schema_name: str) -> Path | None:
    """The file recording that `skel` is valid, or `None` while the cache is off."""
    folder = _cache_folder()
    if not folder:
        return None
    try:
        pyhf_version = importlib.metadata.version("pyhf")
    except importlib.metadata.PackageNotFoundError:
        pyhf_version = "?"
    digest = hashlib.sha256(f"{pyhf_version}/{SCHEMA_VERSION}/{schema_name}/".encode())
    digest.update(repr(skel).encode())
    return Path(folder) / VALID_STRUCTURES / digest.hexdigest()


@functools.lru_cache(maxsize=512)
def _verdict(skel: Any, schema_name: str) -> tuple[tuple[Any, ...], str] | None:
    """`None` when `skel` follows the schema, else the path and message of the error;
    remembered in this process and, valid structures, on disk (:data:`VALID_STRUCTURES`)."""
    record = _record_of(skel, schema_name)
    if record is not None and record.exists():
        return None
    result = _validate_skeleton(skel, schema_name)
    if result is None and record is not None:
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.touch()  # empty: its name is the record, so a partial write cannot lie
        except OSError:
            pass  # a read-only cache only costs the next process a validation
    return result


def _validate_skeleton(skel: Any, schema_name: str) -> tuple[tuple[Any, ...], str] | None:
    instance = _expand(skel, one_element=True)
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
    result = _verdict(skel, schema_name)
    if result is None:
        return
    path, message = result
    where = describe_path(obj, path)
    prefix = f"{source}: " if source else ""
    if len(message) > 300:
        message = message[:300] + "..."
    raise SpecError(f"{prefix}{where}: does not follow pyhf's schema {schema_name}: {message}")
