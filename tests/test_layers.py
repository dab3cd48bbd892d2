"""diffana's packages import only downward (docs/design.md), and no package's modules
import each other in a cycle.

Reads every module's source with `ast` (nothing is imported), so it costs milliseconds.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "diffana"

#: The layers, lowest first. A module may import its own layer and the ones below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_config", "_files"),
    ("relax", "hf", "infer", "io", "parallel"),
    ("losses", "systematics"),
    ("train",),
    ("problems",),
    ("baselines",),
    ("bench",),
    ("cli",),
)
#: Outside the layers: the package's root (lazy access to every subpackage) and the test
#: helpers.
UNLAYERED = ("__init__", "__main__", "testing")
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(text: str, module: str, is_package: bool = False) -> set[str]:
    """The ``diffana...`` modules that the source `text` of `module` imports, wherever
    the import statement is (module level or inside a function)."""
    package = module if is_package else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "diffana"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "diffana":
                continue
            out.add(target)
            folder = SRC.parent / target.replace(".", "/")
            # ``from diffana.bench import _plots`` imports a submodule
            out |= {f"{target}.{a.name}" for a in node.names if (folder / f"{a.name}.py").exists()}
    return out


def _modules() -> dict[str, set[str]]:
    return {
        _module_name(p): _imports(
            p.read_text(encoding="utf-8"), _module_name(p), p.name == "__init__.py"
        )
        for p in sorted(SRC.rglob("*.py"))
    }


def _part(module: str) -> str:
    """``diffana.bench._runner`` -> ``bench``; ``diffana`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_has_a_layer():
    parts = {_part(m) for m in _modules()}
    unknown = sorted(parts - set(RANK) - set(UNLAYERED))
    assert not unknown, f"add {unknown} to a layer in tests/test_layers.py and docs/design.md"


def test_layers_import_only_downward():
    upward = []
    for module, imports in _modules().items():
        here = _part(module)
        if here in UNLAYERED:
            continue
        for target in imports:
            there = _part(target)
            if there in UNLAYERED:
                continue  # ``import diffana`` (the root's lazy attributes)
            if RANK[there] > RANK[here]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports reaching up a layer:\n" + "\n".join(sorted(upward))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", sorted(p for p in RANK if (SRC / p).is_dir()))
def test_no_import_cycle_between_the_modules_of_a_package(package):
    # a package's __init__ re-exports its modules: edges into it are not counted
    modules = _modules()
    prefix = f"diffana.{package}."
    graph = {
        m: {t for t in imports if t.startswith(prefix) and t != m}
        for m, imports in modules.items()
        if m.startswith(prefix)
    }
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_check_sees_lazy_relative_and_submodule_imports():
    text = (
        "import numpy\n"
        "from . import _data\n"
        "def f():\n"
        "    from diffana.bench import run_bench\n"
        "    from ..problems import Sample\n"
    )
    found = _imports(text, "diffana.train._loop")
    assert found == {"diffana.bench", "diffana.train", "diffana.train._data", "diffana.problems"}
    assert RANK[_part("diffana.bench")] > RANK["train"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
