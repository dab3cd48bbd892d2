"""The documentation builds with `mkdocs build --strict` (warnings are errors)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _missing_docs_tools():
    needed = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    return [
        m
        for m in needed
        if importlib.util.find_spec(m.split(".")[0]) is None
        or ("." in m and importlib.util.find_spec(m) is None)
    ]


def test_nav_pages_exist():
    import re

    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:", 1)[1]
    pages = re.findall(r":\s*([\w./-]+\.md)\s*$", nav, flags=re.M)
    assert pages, "no pages found in mkdocs.yml's nav"
    missing = [p for p in pages if not (ROOT / "docs" / p).is_file()]
    assert not missing, f"pages in mkdocs.yml's nav but not in docs/: {missing}"


def test_docs_build_strict(tmp_path):
    missing = _missing_docs_tools()
    if missing:
        pytest.skip(
            f"the docs build needs mkdocs, mkdocs-material, mkdocstrings[python]: missing {missing}"
        )
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-5000:]}"
    for page in ("index.html", "getting-started/index.html", "api/hf/index.html"):
        assert (tmp_path / "site" / page).stat().st_size > 1000
    # Doctest examples are rendered as code, not as nested block quotes.
    html = (tmp_path / "site" / "api" / "hf" / "index.html").read_text(encoding="utf-8")
    assert "<blockquote>" not in html and 'class="gp"' in html
