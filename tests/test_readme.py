"""The README's two set-up commands stay true: CI runs the test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_has_the_two_commands():
    blocks = _bash_blocks((REPO_ROOT / "README.md").read_text())
    bench = [b for b in blocks if "diffana bench" in b]
    tests = [b for b in blocks if "pytest" in b]
    assert bench and tests, "README must show the bench command and the test command"
    assert "pip install" in bench[0] and "pip install" in tests[0]


def test_ci_runs_the_readme_test_command_verbatim():
    blocks = _bash_blocks((REPO_ROOT / "README.md").read_text())
    test_cmd = next(b for b in blocks if "pytest" in b)
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines(), f"{test_cmd!r} not run verbatim by .ci/run"
