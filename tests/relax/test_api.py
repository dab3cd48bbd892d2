"""The public surface of diffana.relax: names, hard twins with matching signatures, doctests."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import diffana.relax as relax

TWINS = {
    "cut": "hard_cut",
    "window": "hard_window",
    "hist": "hard_hist",
    "softmax_hist": "hard_softmax_hist",
    "object_cut": "hard_object_cut",
    "object_window": "hard_object_window",
    "count_at_least": "hard_count_at_least",
    "leading_weights": "hard_leading_weights",
}
MODULES = ["_binning", "_cuts", "_hist", "_objects", "_schedules"]


def test_public_names_exist_and_are_documented():
    assert sorted(relax.__all__) == relax.__all__
    for name in relax.__all__:
        obj = getattr(relax, name)
        assert callable(obj), name
        doc = inspect.getdoc(obj)
        assert doc and "Returns" in doc, f"{name} lacks a docstring with a Returns section"


@pytest.mark.parametrize(("soft", "hard"), sorted(TWINS.items()))
def test_hard_twin_has_the_same_signature(soft, hard):
    soft_params = inspect.signature(getattr(relax, soft)).parameters
    hard_params = inspect.signature(getattr(relax, hard)).parameters
    assert list(hard_params) == [p for p in soft_params if p != "hard"]
    assert soft_params["hard"].kind is inspect.Parameter.KEYWORD_ONLY
    assert soft_params["hard"].default is False


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"diffana.relax.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{module} has no examples"
    assert result.failed == 0
