"""Where regiongate keeps its data: ``$REGIONGATE_HOME`` (default ``~/.local/share/regiongate``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_home", "snapshot_path", "sources_dir"]

SNAPSHOT_NAME = "intel.rgsnap"


def data_home() -> Path:
    """The data directory; ``$REGIONGATE_HOME`` overrides the XDG default."""
    env = os.environ.get("REGIONGATE_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "regiongate"


def snapshot_path(home: Path | None = None) -> Path:
    """The installed snapshot."""
    return (home or data_home()) / SNAPSHOT_NAME


def sources_dir(home: Path | None = None) -> Path:
    """Downloaded and user-supplied source files, one folder per source."""
    return (home or data_home()) / "sources"
