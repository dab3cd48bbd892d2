"""Registry of problem kinds: name -> factory building a `Problem` from its definition."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from diffana.errors import ProblemDefinitionError
from diffana.problems._base import Problem
from diffana.problems._definition import (
    METHOD_NAMES,
    ProblemDefinition,
    _hint,
    load_definition,
)

__all__ = ["load_problem", "problem_kinds", "register_problem"]

ProblemFactory = Callable[[ProblemDefinition], Problem]

# Built-in kinds, imported on first use so that ``import diffana.problems`` stays light.
_BUILTIN: dict[str, str] = {
    "gaussian_blobs": "diffana.problems._gaussian_blobs:GaussianBlobs",
    "inferno3d": "diffana.problems._inferno3d:Inferno3D",
    "cut_scan": "diffana.problems._cut_scan:CutScan",
}
_REGISTRY: dict[str, ProblemFactory] = {}


def register_problem(kind: str, factory: ProblemFactory | None = None):
    """Register `factory` (a `Problem` subclass or any callable taking a
    `ProblemDefinition`) under `kind`; usable as a class decorator.

    Example:

    >>> from diffana.problems import Problem, register_problem
    >>> @register_problem("my_toy")
    ... class MyToy(Problem):
    ...     ...
    >>> "my_toy" in problem_kinds()
    True
    """
    if not isinstance(kind, str) or not kind or ":" in kind:
        raise ValueError(f"kind must be a non-empty name without ':', got {kind!r}")

    def _register(f: ProblemFactory) -> ProblemFactory:
        if not callable(f):
            raise TypeError(f"the factory of problem kind {kind!r} must be callable")
        _REGISTRY[kind] = f
        return f

    return _register if factory is None else _register(factory)


def problem_kinds() -> tuple[str, ...]:
    """Names of the registered and built-in problem kinds."""
    return tuple(sorted(set(_BUILTIN) | set(_REGISTRY)))


def _import_factory(target: str, path: Path) -> ProblemFactory:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ProblemDefinitionError(
            f"{path}: [problem].kind {target!r}: cannot import module {module_name!r} ({err})"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ProblemDefinitionError(
            f"{path}: [problem].kind {target!r}: module {module_name!r} has no {attr!r}"
        ) from None


def _factory(definition: ProblemDefinition) -> ProblemFactory:
    kind = definition.kind
    if kind in _REGISTRY:
        return _REGISTRY[kind]
    if kind in _BUILTIN:
        return _import_factory(_BUILTIN[kind], definition.path)
    if ":" in kind:
        return _import_factory(kind, definition.path)
    raise ProblemDefinitionError(
        f"{definition.path}: unknown [problem].kind {kind!r}; known kinds: "
        f"{', '.join(problem_kinds())} (or 'package.module:Factory')"
    )


def load_problem(
    name_or_definition: str | Path | ProblemDefinition, mode: str = "default"
) -> Problem:
    """Build the `Problem` of a name, a definition file or a `ProblemDefinition`.

    **Arguments:**

    - `name_or_definition`: a problem name (``"inferno3d"``), a path to a ``.toml``
      definition, or an already loaded `ProblemDefinition`.
    - `mode`: ``"quick"``, ``"default"`` or ``"full"`` (ignored for a `ProblemDefinition`).

    **Returns:** the `Problem`.

    **Raises:** `ProblemDefinitionError` for an unknown name, a malformed file, a field
    the problem kind rejects or a method that is neither generic (`METHOD_NAMES`) nor one
    the kind brings (`Problem.own_methods`).

    Example:

    >>> from diffana.problems import load_problem
    >>> problem = load_problem("inferno3d", mode="quick")
    >>> problem.feature_names
    ('x0', 'x1', 'x2')
    """
    if isinstance(name_or_definition, ProblemDefinition):
        definition = name_or_definition
    else:
        definition = load_definition(name_or_definition, mode=mode)
    factory = _factory(definition)
    if isinstance(factory, type) and issubclass(factory, Problem):
        factory.check_definition(definition)
    problem = factory(definition)
    if not isinstance(problem, Problem):
        raise ProblemDefinitionError(
            f"{definition.path}: kind {definition.kind!r} built a {type(problem).__name__}, "
            "not a diffana.problems.Problem"
        )
    _check_methods(problem)
    return problem


def _check_methods(problem: Problem) -> None:
    """Every ``[methods.<name>]``, in every mode, is a generic method or one the problem
    brings, and the settings of the problem's own methods are valid."""
    own = problem.own_methods()
    definition = problem.definition
    clash = sorted(set(own) & set(METHOD_NAMES))
    if clash:
        raise ProblemDefinitionError(
            f"{definition.path}: kind {definition.kind!r} brings method(s) {clash} that clash "
            "with the generic methods"
        )
    known = [*METHOD_NAMES, *own]
    for d in [definition, *definition.other_modes()]:
        try:
            for name, table in d.methods.items():
                if name not in known:
                    raise ProblemDefinitionError(
                        f"{d.path}: unknown method [methods.{name}]{_hint(name, known)}; "
                        f"known: {', '.join(known)}"
                    )
                if name in own:
                    own[name].settings(table, None)
        except ProblemDefinitionError as err:
            if d is definition:
                raise
            raise ProblemDefinitionError(f"{err} (with [modes.{d.mode}] applied)") from None
