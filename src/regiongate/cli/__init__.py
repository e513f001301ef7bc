"""The ``regiongate`` command. Parsing and printing only: the work is in the library."""

from __future__ import annotations

import os

# OpenBLAS (numpy's) starts a thread per core at import that spins ~0.1 CPU-s before it
# sleeps; nothing here multiplies matrices. Before the imports below bring numpy in.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from regiongate.cli.app import app, main

__all__ = ["app", "main"]
