"""Who is calling: the API key in the request, reduced to a key id at once.

The key id is ``kid_`` + the first 16 bytes (hex) of HMAC-SHA256(secret, key). The raw key is
never stored, logged or kept in memory beyond the request; without the secret a key id cannot
be tested against guessed keys. The secret is 32 random bytes in
``$REGIONGATE_HOME/key-secret`` (created on first use, mode 0600) unless configured: every
gateway and the key import must share it, or their key ids will not match.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from regiongate.errors import ConfigError

__all__ = ["KeyHasher", "KeyReader", "load_secret"]

_SECRET_BYTES: Final = 32
_MAX_KEY: Final = 512


def load_secret(path: Path) -> bytes:
    """The secret in ``path``, created (atomically, 0600) when it does not exist yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = os.urandom(_SECRET_BYTES)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secret.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never overwrite a secret another process just created
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the key secret ({exc.strerror})") from None
    text = data.strip()
    try:
        secret = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(f"{path}: the key secret must be hex (64 digits)") from None
    if len(secret) < 16:
        raise ConfigError(f"{path}: the key secret is too short (at least 16 bytes)")
    return secret


class KeyHasher:
    """API key → key id, with a keyed hash."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the key secret must be at least 16 bytes")
        self._secret = secret

    def key_id(self, key: str | bytes) -> str:
        raw = key.encode() if isinstance(key, str) else key
        return "kid_" + hmac.digest(self._secret, raw, "sha256")[:16].hex()

    def derive(self, purpose: bytes) -> bytes:
        """A secret of its own for another keyed hash (end-user ids), from this one."""
        return hmac.digest(self._secret, b"regiongate-derive\0" + purpose, "sha256")


class KeyReader:
    """Finds the API key in ASGI headers: ``Authorization: Bearer KEY`` by default, or any
    header with or without a scheme (``x-api-key``)."""

    __slots__ = ("_header", "_prefix")

    def __init__(self, header: str = "authorization", scheme: str | None = "bearer") -> None:
        self._header = header.strip().lower().encode("latin-1")
        self._prefix = (scheme.strip().lower() + " ").encode("latin-1") if scheme else b""

    def read(self, headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
        """The key, or ``None`` when there is none (or it is malformed: too long, no scheme)."""
        want = self._header
        for name, value in headers:
            if name == want:
                value = value.strip()
                prefix = self._prefix
                if prefix:
                    if value[: len(prefix)].lower() != prefix:
                        return None
                    value = value[len(prefix) :].strip()
                if not value or len(value) > _MAX_KEY:
                    return None
                return value
        return None
