"""Declarative benchmark definitions: finding, reading and validating the TOML files."""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffana.errors import ProblemDefinitionError

__all__ = [
    "DEFINITION_SCHEMA",
    "METHOD_NAMES",
    "MODES",
    "ProblemDefinition",
    "available_problems",
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
    if not isinstance(raw, Mapping):
        raise ProblemDefinitionError(f"{path}: a definition is a TOML table")
    unknown = set(raw) - _TOP_LEVEL - _OPTIONAL_TOP_LEVEL
    if unknown:
        raise ProblemDefinitionError(
            f"{path}: unknown top-level field(s) {sorted(unknown)}; "
            f"allowed: {sorted(_TOP_LEVEL | _OPTIONAL_TOP_LEVEL)}"
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
    for field in ("name", "kind"):
        if not isinstance(problem.get(field), str) or not problem[field]:
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
    for mname, cfg in methods.items():  # the names are checked against the problem's kind
        if not isinstance(cfg, Mapping):
            raise ProblemDefinitionError(f"{path}: [methods.{mname}] must be a table")
    bench = _table(merged, "bench", path, required=False)
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
