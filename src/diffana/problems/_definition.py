"""Declarative benchmark definitions: finding, reading and validating the TOML files."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.resources
import math
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from diffana.errors import ProblemDefinitionError

__all__ = [
    "DEFINITION_SCHEMA",
    "METHOD_FIELDS",
    "METHOD_NAMES",
    "MODES",
    "Field",
    "ProblemDefinition",
    "available_problems",
    "check_table",
    "check_value",
    "definition_dirs",
    "find_definition",
    "load_definition",
]

#: Version of the definition-file format this diffana reads.
DEFINITION_SCHEMA = 1

#: The generic methods ``diffana bench`` knows how to train and evaluate on every problem
#: (a problem kind may bring more, `diffana.problems.Problem.own_methods`).
METHOD_NAMES = ("neos", "discovery", "inferno", "bce", "cuts_grad", "cuts_scan")

#: Run modes; a definition may override any of its fields per mode in ``[modes.<mode>]``.
MODES = ("quick", "default", "full")

_TOP_LEVEL = {"schema", "problem", "generator", "analysis", "scenarios", "methods"}
_OPTIONAL_TOP_LEVEL = {"bench", "modes", "references", "notes"}


@dataclasses.dataclass(frozen=True)
class Field:
    """What one key of a definition table may hold; checked when the file is loaded.

    **Fields:**

    - `kind`: ``"int"``, ``"number"`` (int or float), ``"bool"``, ``"str"``, ``"list"``,
      ``"table"``, ``"relax"`` (a positive number or ``{start, end[, kind]}``) or
      ``"any"``.
    - `required`: the key must be present.
    - `minimum`, `maximum`: inclusive bounds of a number (`positive` excludes zero).
    - `positive`: a number that must be > 0.
    - `choices`: the allowed values.
    - `items`: the `Field` of every element of a list.
    - `length`: the exact length of a list.
    - `keys`: for a table, ``{key: Field}``; other keys are rejected (None: any keys).
    """

    kind: str
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False
    choices: tuple[Any, ...] | None = None
    items: Field | None = None
    length: int | None = None
    keys: Mapping[str, Field] | None = None

    def expected(self) -> str:
        """What the value must be, in words (for error messages)."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind in ("int", "number"):
            noun = "an integer" if self.kind == "int" else "a number"
            if self.positive:
                return f"{noun} > 0"
            if self.minimum is not None and self.maximum is not None:
                return f"{noun} in [{self.minimum:g}, {self.maximum:g}]"
            if self.minimum is not None:
                return f"{noun} >= {self.minimum:g}"
            return noun
        if self.kind == "list":
            if self.length is not None:
                each = f", each {self.items.expected()}" if self.items is not None else ""
                return f"a list of {self.length} elements{each}"
            each = f" of which every element is {self.items.expected()}" if self.items else ""
            return f"a list{each}"
        if self.kind == "relax":
            return "a number > 0 or a table {start, end[, kind]} of numbers > 0"
        return {"bool": "true or false", "str": "a string", "table": "a table"}.get(
            self.kind, self.kind
        )


def _fail(path: Path, where: str, field: Field, value: Any) -> ProblemDefinitionError:
    return ProblemDefinitionError(f"{path}: {where} must be {field.expected()}, got {value!r}")


def _hint(key: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_table(
    table: Mapping[str, Any], fields: Mapping[str, Field], where: str, path: Path
) -> None:
    """Check the keys and values of a definition table against `fields`.

    **Arguments:**

    - `table`: the table as read from the file.
    - `fields`: ``{key: Field}``; keys not in it are rejected, with a suggestion.
    - `where`: the table's name in messages, e.g. ``"[methods.neos]"``.
    - `path`: the definition file.

    **Raises:** `ProblemDefinitionError` naming the file, the table, the key and what
    was expected.
    """
    for key in table:
        if key not in fields:
            raise ProblemDefinitionError(
                f"{path}: {where} has unknown key {key!r}{_hint(key, fields)}; "
                f"allowed: {', '.join(sorted(fields))}"
            )
    for key, field in fields.items():
        if key not in table:
            if field.required:
                raise ProblemDefinitionError(f"{path}: {where}.{key} is required")
            continue
        check_value(table[key], field, f"{where}.{key}", path)


def check_value(value: Any, field: Field, where: str, path: Path) -> None:
    """Check one value against its `Field`; `ProblemDefinitionError` naming `where`."""
    kind = field.kind
    if kind == "any":
        return
    if kind == "relax":
        if isinstance(value, Mapping):
            check_table(value, _RELAX_FIELDS, where, path)
            return
        kind = "number"
        field = dataclasses.replace(field, kind="number", positive=True)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    ok = {
        "int": is_int,
        "number": is_int or isinstance(value, float),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "list": isinstance(value, list),
        "table": isinstance(value, Mapping),
    }.get(kind)
    if ok is None:
        raise ValueError(f"unknown Field kind {kind!r}")
    if not ok or (field.choices is not None and value not in field.choices):
        raise _fail(path, where, field, value)
    if kind in ("int", "number"):
        if not math.isfinite(value) or (field.positive and value <= 0):
            raise _fail(path, where, field, value)
        if field.minimum is not None and value < field.minimum:
            raise _fail(path, where, field, value)
        if field.maximum is not None and value > field.maximum:
            raise _fail(path, where, field, value)
    elif kind == "list":
        if field.length is not None and len(value) != field.length:
            raise _fail(path, where, field, value)
        if field.items is not None:
            for i, item in enumerate(value):
                check_value(item, field.items, f"{where}[{i}]", path)
    elif kind == "table" and field.keys is not None:
        check_table(value, field.keys, where, path)


_RELAX_FIELDS = {
    "start": Field("number", required=True, positive=True),
    "end": Field("number", required=True, positive=True),
    "kind": Field("str", choices=("geometric", "linear", "cosine")),
}

_PROBLEM_FIELDS = {
    "name": Field("str", required=True),
    "kind": Field("str", required=True),
    "description": Field("str"),
}

_BENCH_FIELDS = {
    "seeds": Field("int", minimum=1),
    "methods": Field("list", items=Field("str")),
    "scenarios": Field("list", items=Field("str")),
}

_SCAN_FIELDS = {
    "grid_points": Field("int", minimum=2),
    "budget": Field("int", minimum=1),
    "batch": Field("int", minimum=1),
    "per_scenario": Field("bool"),
    "description": Field("str"),
}

_TRAINED_FIELDS = {
    "pipeline": Field("str", choices=("nn_kde", "nn_softmax", "classifier", "cuts")),
    "loss": Field("str", choices=("cls", "discovery", "poi_uncertainty", "native", "bce")),
    "hidden": Field("list", items=Field("int", minimum=1)),
    "optimizer": Field("str", choices=("adam", "adamw", "sgd")),
    "learning_rate": Field("number", positive=True),
    "lr_schedule": Field("str", choices=("constant", "cosine")),
    "steps": Field("int", minimum=0),
    "batch_size": Field("int", minimum=1),
    "bins": Field("int", minimum=1),
    "restarts": Field("int", minimum=1),
    "standardise": Field("bool"),
    "per_scenario": Field("bool"),
    "trainable_edges": Field("bool"),
    "bandwidth": Field("relax"),
    "temperature": Field("relax"),
    "slope": Field("relax"),
    "relax": Field("relax"),
    "description": Field("str"),
}

#: Gradient-optimised cuts may restart from the best points of a random scan.
_CUTS_GRAD_FIELDS = {
    **_TRAINED_FIELDS,
    "restart_candidates": Field("int", minimum=0),
}

#: ``{method: {key: Field}}``: the settings each method accepts in ``[methods.<method>]``.
METHOD_FIELDS: dict[str, dict[str, Field]] = {
    m: {"cuts_scan": _SCAN_FIELDS, "cuts_grad": _CUTS_GRAD_FIELDS}.get(m, _TRAINED_FIELDS)
    for m in METHOD_NAMES
}


@dataclasses.dataclass(frozen=True)
class ProblemDefinition:
    """A benchmark problem as read from its TOML definition file.

    The fields mirror the file's tables. Values are plain Python (dicts, lists,
    numbers, strings), already merged with the ``[modes.<mode>]`` overrides when the
    definition was loaded for a mode.

    **Fields:**

    - `name`: the problem's name (``[problem].name``), unique among definitions.
    - `kind`: the registry key of its generator/analysis, or ``"module:attribute"``.
    - `description`: one paragraph for humans.
    - `generator`: parameters handed to the generator (sample sizes, shapes, ...).
    - `analysis`: binning, yields and systematics of the statistical model.
    - `scenarios`: named variants of the statistical model (``{name: {...}}``), at least one.
    - `methods`: ``{method: hyperparameters}``; method names from `METHOD_NAMES` or the
      kind's `Problem.own_methods` (checked by `load_problem`).
    - `bench`: defaults of ``diffana bench`` (``seeds``, ``methods``, ``scenarios``, ...).
    - `references`: published numbers to compare with.
    - `notes`: free text (deviations from a publication, choices made).
    - `path`: the file it was read from.
    - `mode`: the mode whose overrides were applied (``"default"`` if none).
    """

    name: str
    kind: str
    description: str
    generator: dict[str, Any]
    analysis: dict[str, Any]
    scenarios: dict[str, dict[str, Any]]
    methods: dict[str, dict[str, Any]]
    bench: dict[str, Any]
    references: dict[str, Any]
    notes: str
    path: Path
    mode: str
    raw: dict[str, Any] = dataclasses.field(repr=False, compare=False)

    def method(self, name: str) -> dict[str, Any]:
        """The hyperparameters of method `name`; `ProblemDefinitionError` if not defined."""
        try:
            return self.methods[name]
        except KeyError:
            raise ProblemDefinitionError(
                f"{self.path}: method {name!r} is not defined for problem {self.name!r}; "
                f"defined: {', '.join(self.methods) or 'none'}"
            ) from None

    def with_mode(self, mode: str) -> ProblemDefinition:
        """The same definition re-read with the overrides of `mode` applied."""
        return _from_dict(self.raw, self.path, mode)

    def other_modes(self) -> list[ProblemDefinition]:
        """The definition in every other mode that the file overrides in
        ``[modes.<mode>]`` (checked when loaded, so that a mistake there shows now, not
        when that mode is run)."""
        modes = self.raw.get("modes")
        if not isinstance(modes, Mapping):
            return []
        return [self.with_mode(m) for m in MODES if m != self.mode and m in modes]


def definition_dirs() -> list[Path]:
    """Folders searched for definitions, in order: the installed package's
    ``diffana/_toy_problems`` (wheel), the source checkout's ``toy_problems/`` (when
    diffana runs from its sources), then ``toy_problems/`` in the current directory (a
    checkout with diffana installed from it)."""
    dirs: list[Path] = []
    try:
        packaged = importlib.resources.files("diffana") / "_toy_problems"
        if packaged.is_dir():
            dirs.append(Path(str(packaged)))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - exotic loaders
        pass
    source = Path(__file__).resolve().parents[3] / "toy_problems"
    here = Path.cwd().resolve() / "toy_problems"
    for checkout in (source, here):
        if checkout.is_dir() and checkout not in dirs:
            dirs.append(checkout)
    return dirs


def available_problems() -> dict[str, Path]:
    """``{name: path}`` of every definition found in `definition_dirs` (first wins).

    The name is the file's stem, which must equal its ``[problem].name``.
    """
    found: dict[str, Path] = {}
    for d in definition_dirs():
        for path in sorted(d.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def find_definition(name_or_path: str | Path) -> Path:
    """Resolve a problem name (``"inferno3d"``) or a path to a ``.toml`` file.

    **Raises:** `ProblemDefinitionError` naming the problem and the available ones.
    """
    text = str(name_or_path)
    looks_like_path = text.endswith(".toml") or "/" in text or "\\" in text
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ProblemDefinitionError(f"definition file {text!r} does not exist")
        return path
    problems = available_problems()
    if text in problems:
        return problems[text]
    raise ProblemDefinitionError(
        f"unknown problem {text!r}; available: {', '.join(sorted(problems)) or 'none'} "
        "(or give the path to a .toml definition file)"
    )


def load_definition(name_or_path: str | Path, mode: str = "default") -> ProblemDefinition:
    """Read and validate a definition by name or path, applying `mode`'s overrides.

    **Arguments:**

    - `name_or_path`: a problem name from `available_problems`, or a ``.toml`` path.
    - `mode`: one of `MODES`; fields under ``[modes.<mode>]`` override the top level.

    **Returns:** a `ProblemDefinition`.

    **Raises:** `ProblemDefinitionError` naming the file and the field at fault.

    Example:

    >>> from diffana.problems import load_definition
    >>> d = load_definition("gaussian_blobs", mode="quick")
    >>> d.kind, d.mode
    ('gaussian_blobs', 'quick')
    """
    if mode not in MODES:
        raise ProblemDefinitionError(f"mode must be one of {MODES}, got {mode!r}")
    path = find_definition(name_or_path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ProblemDefinitionError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        raise ProblemDefinitionError(f"{path}: cannot be read ({err.strerror})") from None
    return _from_dict(raw, path, mode)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _table(raw: Mapping[str, Any], key: str, path: Path, required: bool = True) -> dict:
    if key not in raw:
        if required:
            raise ProblemDefinitionError(f"{path}: missing table [{key}]")
        return {}
    value = raw[key]
    if not isinstance(value, Mapping):
        raise ProblemDefinitionError(f"{path}: [{key}] must be a table, got {type(value).__name__}")
    return dict(value)


def _from_dict(raw: dict[str, Any], path: Path, mode: str) -> ProblemDefinition:
    definition = _build(raw, path, mode)
    # A mistake in another mode's overrides is reported now, not when that mode is run.
    modes = raw.get("modes") if isinstance(raw.get("modes"), Mapping) else {}
    for other in MODES:
        if other != mode and other in modes:
            try:
                _build(raw, path, other)
            except ProblemDefinitionError as err:
                raise ProblemDefinitionError(f"{err} (with [modes.{other}] applied)") from None
    return definition


def _build(raw: dict[str, Any], path: Path, mode: str) -> ProblemDefinition:
    if not isinstance(raw, Mapping):
        raise ProblemDefinitionError(f"{path}: a definition is a TOML table")
    allowed = _TOP_LEVEL | _OPTIONAL_TOP_LEVEL
    for key in raw:
        if key not in allowed:
            raise ProblemDefinitionError(
                f"{path}: unknown top-level field {key!r}{_hint(key, allowed)}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
    schema = raw.get("schema")
    if schema != DEFINITION_SCHEMA:
        raise ProblemDefinitionError(
            f"{path}: 'schema' must be {DEFINITION_SCHEMA} (the definition format this "
            f"diffana reads), got {schema!r}"
        )
    modes = _table(raw, "modes", path, required=False)
    bad_modes = set(modes) - set(MODES)
    if bad_modes:
        raise ProblemDefinitionError(
            f"{path}: [modes] has unknown mode(s) {sorted(bad_modes)}; allowed: {MODES}"
        )
    merged = dict(raw)
    if mode in modes:
        override = modes[mode]
        if not isinstance(override, Mapping):
            raise ProblemDefinitionError(f"{path}: [modes.{mode}] must be a table")
        bad = set(override) & {"schema", "problem", "modes"} | (
            set(override) - _TOP_LEVEL - _OPTIONAL_TOP_LEVEL
        )
        if bad:
            raise ProblemDefinitionError(f"{path}: [modes.{mode}] may not override {sorted(bad)}")
        merged = _deep_merge(raw, override)

    problem = _table(merged, "problem", path)
    check_table(problem, _PROBLEM_FIELDS, "[problem]", path)
    for field in ("name", "kind"):
        if not problem[field]:
            raise ProblemDefinitionError(f"{path}: [problem].{field} must be a non-empty string")
    scenarios = _table(merged, "scenarios", path)
    if not scenarios:
        raise ProblemDefinitionError(f"{path}: [scenarios] needs at least one scenario")
    for sname, scen in scenarios.items():
        if not isinstance(scen, Mapping):
            raise ProblemDefinitionError(f"{path}: [scenarios.{sname}] must be a table")
    methods = _table(merged, "methods", path)
    if not methods:
        raise ProblemDefinitionError(f"{path}: [methods] needs at least one method")
    # The names are checked against the problem's kind (generic or its own methods) by
    # `load_problem`; the settings of a generic method are checked here.
    for mname, cfg in methods.items():
        if not isinstance(cfg, Mapping):
            raise ProblemDefinitionError(f"{path}: [methods.{mname}] must be a table")
        if mname in METHOD_FIELDS:
            check_table(cfg, METHOD_FIELDS[mname], f"[methods.{mname}]", path)
    bench = _table(merged, "bench", path, required=False)
    check_table(bench, _BENCH_FIELDS, "[bench]", path)
    for key in ("methods", "scenarios"):
        listed = bench.get(key, [])
        pool = methods if key == "methods" else scenarios
        if not isinstance(listed, list) or any(x not in pool for x in listed):
            raise ProblemDefinitionError(
                f"{path}: [bench].{key} must list names from [{key}], got {listed!r}"
            )
    seeds = bench.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ProblemDefinitionError(f"{path}: [bench].seeds must be a positive integer")
    notes = merged.get("notes", "")
    if not isinstance(notes, str):
        raise ProblemDefinitionError(f"{path}: 'notes' must be a string")
    return ProblemDefinition(
        name=problem["name"],
        kind=problem["kind"],
        description=str(problem.get("description", "")),
        generator=_table(merged, "generator", path),
        analysis=_table(merged, "analysis", path),
        scenarios={k: dict(v) for k, v in scenarios.items()},
        methods={k: dict(v) for k, v in methods.items()},
        bench=bench,
        references=_table(merged, "references", path, required=False),
        notes=notes,
        path=path,
        mode=mode,
        raw=raw,
    )
