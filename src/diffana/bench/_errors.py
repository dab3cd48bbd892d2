"""The error of `diffana bench`, below the runner and the report that both raise it."""

from __future__ import annotations

from diffana.errors import DiffanaError

__all__ = ["BenchError"]


class BenchError(DiffanaError):
    """`diffana bench` cannot run as asked (bad arguments, unwritable output folder)."""
