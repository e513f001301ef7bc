"""Writing the CLI's output files: all or nothing, so a reader never sees half a file."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["atomic_output", "write_atomic"]


@contextlib.contextmanager
def atomic_output(
    output: Path | None, *, mode: int = 0o644, newline: str = "\n"
) -> Iterator[TextIO]:
    """stdout when ``output`` is None; else a temporary file next to ``output``, fsynced,
    given ``mode`` and renamed over it on success only (removed on failure)."""
    if output is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    directory = output.parent if str(output.parent) else Path()
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """``text`` into ``path``, all or nothing."""
    with atomic_output(path, mode=mode) as fh:
        fh.write(text)
