"""The project's exception hierarchy.

Every error a user can cause carries a message that names the offending value and says what
to do about it. Library code raises these, never bare driver or parser exceptions.
"""

from __future__ import annotations


class RegiongateError(Exception):
    """Base class of every error regiongate raises on purpose."""


class DataError(RegiongateError):
    """IP data could not be read, verified, compiled or installed."""


class SourceError(DataError):
    """A data source file is unreadable, malformed or of an unknown format."""


class SnapshotError(DataError):
    """A compiled snapshot is missing, truncated, corrupt or of an unsupported version."""


class FetchError(DataError):
    """Downloading a data source from a registry or URL failed."""


class PolicyError(RegiongateError):
    """A policy document is malformed: the message names the file, the key and the value."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.key = key
        where = ": ".join(p for p in (source, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(RegiongateError):
    """A configuration value is invalid: the message names the key and the value."""
