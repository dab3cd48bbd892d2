"""Griffe extension for the API reference: doctest examples as Python code blocks.

diffana's docstrings write runnable examples as bare doctest lines (``>>> ...``), which
pytest's ``--doctest-modules`` runs. Markdown would render their ``>>>`` as nested block
quotes; this extension wraps each doctest block (prompt lines and their expected output,
up to the next blank line) in a fenced ``pycon`` code block when the docs are built. The
source docstrings are not changed.
"""

from __future__ import annotations

import griffe


def fence_doctests(text: str) -> str:
    """Wrap every bare doctest block of `text` in a fenced ``pycon`` block."""
    out: list[str] = []
    in_fence = False
    in_doctest = False
    indent = ""
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("```"):
            if in_doctest:
                out.append(indent + "```")
                in_doctest = False
            in_fence = not in_fence
            out.append(line)
            continue
        if in_fence:
            out.append(line)
            continue
        if not in_doctest and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(indent + "```pycon")
            in_doctest = True
        elif in_doctest and not stripped:
            out.append(indent + "```")
            in_doctest = False
        out.append(line)
    if in_doctest:
        out.append(indent + "```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence the doctest blocks of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
