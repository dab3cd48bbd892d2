"""The public API: every module's `__all__` names exist, and public callables have docstrings."""

from __future__ import annotations

import importlib
import inspect

import pytest

import diffana

MODULES = ["diffana", *(f"diffana.{name}" for name in diffana._SUBMODULES)]


def _public(module_name):
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module_name} has no __all__"
    return module, names


@pytest.mark.parametrize("module_name", MODULES)
def test_all_names_exist_and_are_unique(module_name):
    module, names = _public(module_name)
    assert len(set(names)) == len(names), f"{module_name}.__all__ has duplicates"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module_name}.__all__ names missing from the module: {missing}"


@pytest.mark.parametrize("module_name", MODULES)
def test_module_has_a_docstring(module_name):
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no module docstring"


@pytest.mark.parametrize("module_name", MODULES)
def test_public_functions_and_classes_have_docstrings(module_name):
    module, names = _public(module_name)
    undocumented = []
    for name in names:
        obj = getattr(module, name)
        if not callable(obj) or getattr(obj, "__origin__", None) is not None:
            continue  # constants and type aliases are documented by `#:` comments
        own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else inspect.getdoc(obj)
        if not (own or "").strip():
            undocumented.append(name)
    assert not undocumented, f"{module_name}: public names without a docstring: {undocumented}"


def test_submodules_are_listed_for_lazy_access():
    for name in diffana._SUBMODULES:
        assert getattr(diffana, name).__name__ == f"diffana.{name}"
    assert set(diffana._SUBMODULES) <= set(dir(diffana))
