"""The how-to pages whose code is a script: every ``python`` block runs, in order, in one
namespace (a fresh working directory), as a reader would run them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

HOWTO = Path(__file__).resolve().parent.parent / "docs" / "howto"
SCRIPTS = ["train-your-pipeline.md", "your-own-workspace.md"]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.parametrize("page", SCRIPTS)
def test_howto_code_runs(page, tmp_path, monkeypatch):
    blocks = python_blocks((HOWTO / page).read_text(encoding="utf-8"))
    assert len(blocks) >= 3, f"{page}: expected its code in ```python blocks"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__howto__"}
    for i, block in enumerate(blocks):
        code = compile(block, f"{page}[block {i}]", "exec")
        exec(code, namespace)  # the page's own code, as a reader runs it
