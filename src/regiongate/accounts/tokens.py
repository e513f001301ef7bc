"""Bearer tokens for the admin API, kept as SHA-256 digests in a TOML file.

::

    [[token]]
    name = "ops"            # becomes the audit actor "admin:ops"
    role = "operator"       # viewer < operator < admin
    sha256 = "9f86d0..."    # hex SHA-256 of the token; the token itself is never stored

``regiongate`` never needs the tokens themselves: :func:`new_token` makes one and the entry to
paste into the file. A presented token is hashed and compared with every configured digest in
constant time (:func:`hmac.compare_digest`, no early exit), so neither the timing nor the
order of the file tells which digest came close.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from regiongate.errors import ConfigError

__all__ = ["Role", "TokenEntry", "Tokens", "new_token"]

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
_MAX_TOKEN: Final = 1024  # longer Authorization values are refused without hashing more
_SCHEME: Final = "bearer"


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may."""
        return self.rank >= needed.rank


_RANK: Final[dict[Role, int]] = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    role: Role
    digest: bytes  # SHA-256 of the token (32 bytes)

    def __repr__(self) -> str:  # the digest is not secret, but there is no need to print it
        return f"TokenEntry(name={self.name!r}, role={self.role.value!r})"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Tokens:
    """The configured tokens; :meth:`check` says who presented a bearer token, if anyone."""

    __slots__ = ("_entries", "source")

    def __init__(self, entries: Iterable[TokenEntry], *, source: str = "<tokens>") -> None:
        self._entries = tuple(entries)
        self.source = source
        names: set[str] = set()
        digests: set[bytes] = set()
        for entry in self._entries:
            if entry.name in names:
                raise ConfigError(f"{source}: token name {entry.name!r} appears twice")
            if entry.digest in digests:
                raise ConfigError(f"{source}: token {entry.name!r} has the digest of another")
            if len(entry.digest) != 32:
                raise ConfigError(f"{source}: token {entry.name!r}: the digest must be 32 bytes")
            names.add(entry.name)
            digests.add(entry.digest)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Tokens({len(self._entries)} from {self.source})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self._entries)

    # --- loading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Tokens:
        """Read a tokens file; ``ConfigError`` naming the file and the problem otherwise."""
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"{source}: no such tokens file (make an entry with "
                "regiongate.accounts.tokens.new_token())"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read the tokens file ({exc})") from None
        return cls.parse(text, source=source)

    @classmethod
    def parse(cls, text: str, *, source: str = "<tokens>") -> Tokens:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML ({exc})") from None
        return cls.from_dict(doc, source=source)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, source: str = "<tokens>") -> Tokens:
        extra = sorted(k for k in doc if k != "token")
        if extra:
            raise ConfigError(
                f"{source}: unknown key {extra[0]!r}; the file holds only [[token]] tables"
            )
        raw = doc.get("token")
        if raw is None or (isinstance(raw, list) and not raw):
            raise ConfigError(f"{source}: no [[token]] entries; the admin API would admit no one")
        if not isinstance(raw, list) or not all(isinstance(t, Mapping) for t in raw):
            raise ConfigError(f"{source}: token must be an array of tables ([[token]])")
        return cls((_entry(t, i, source) for i, t in enumerate(raw, 1)), source=source)

    # --- checking ------------------------------------------------------------------------------

    def check(self, authorization: str | None) -> tuple[str, Role] | None:
        """``(name, role)`` of the token in an ``Authorization: Bearer TOKEN`` value, or None.

        Every configured digest is compared, in constant time, whatever matched before.
        """
        token = _bearer(authorization)
        # A missing or malformed header is hashed too (as ""), to keep the work the same.
        presented = _digest(token if token is not None else "")
        found: TokenEntry | None = None
        for entry in self._entries:
            if hmac.compare_digest(presented, entry.digest) and found is None:
                found = entry
        if token is None or found is None:
            return None
        return found.name, found.role


def _bearer(authorization: str | None) -> str | None:
    if not authorization or len(authorization) > _MAX_TOKEN + 16:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != _SCHEME or not token or len(token) > _MAX_TOKEN:
        return None
    return token


def _entry(t: Mapping[str, Any], i: int, source: str) -> TokenEntry:
    where = f"{source}: token #{i}"
    extra = sorted(k for k in t if k not in {"name", "role", "sha256"})
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r} (keys: name, role, sha256)")
    for key in ("name", "role", "sha256"):
        if key not in t:
            raise ConfigError(f"{where}: {key} is missing")
        if not isinstance(t[key], str):
            raise ConfigError(f"{where}: {key} must be a string")
    name, role, digest = t["name"], t["role"], t["sha256"]
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: name {name!r:.80} must be 1-64 letters, digits or ._@- "
            "(it becomes the audit actor admin:NAME)"
        )
    where = f"{source}: token {name!r}"
    try:
        parsed_role = Role(role)
    except ValueError:
        raise ConfigError(
            f"{where}: role {role!r:.40} is not one of {', '.join(r.value for r in Role)}"
        ) from None
    if not _HEX64.fullmatch(digest):
        raise ConfigError(
            f"{where}: sha256 must be the 64 hex digits of the token's SHA-256 "
            "(never the token itself)"
        )
    return TokenEntry(name, parsed_role, bytes.fromhex(digest))


def new_token(name: str = "ops", role: str | Role = Role.OPERATOR) -> tuple[str, str]:
    """A fresh random token and the ``[[token]]`` entry (TOML text) that admits it.

    Show the token once to whoever will use it; only the entry goes into the tokens file.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"token name {name!r:.80} must be 1-64 letters, digits or ._@-")
    parsed = Role(role)
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    entry = f'[[token]]\nname = "{name}"\nrole = "{parsed.value}"\nsha256 = "{digest}"\n'
    return token, entry
