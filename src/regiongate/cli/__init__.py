"""The ``regiongate`` command. Parsing and printing only: the work is in the library."""

from __future__ import annotations

from regiongate.cli.app import app, main

__all__ = ["app", "main"]
