"""`diffana.enable_compilation_cache`: a second process loads what a first compiled."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys, time
import diffana
folder = diffana.enable_compilation_cache(sys.argv[1])
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + x.sum())
jax.block_until_ready(f(jnp.ones((30, 30))))
print(folder)
"""


def _run(folder) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_compiled_programs_are_written_and_reused(tmp_path):
    folder = tmp_path / "cache"
    out = _run(folder)
    assert out.stdout.strip() == str(folder)
    entries = sorted(os.listdir(folder))
    assert entries, "nothing was written to the compilation cache"
    stamps = {e: os.path.getmtime(folder / e) for e in entries}
    _run(folder)
    # the second process found every program in the cache and wrote nothing new
    assert sorted(os.listdir(folder)) == entries
    assert all(os.path.getmtime(folder / e) == stamps[e] for e in entries)
