"""API key → key id: keyed, stable, never the raw key; header parsing; the secret file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from regiongate.accounts.identity import KeyHasher, KeyReader, load_secret
from regiongate.errors import ConfigError


def test_key_id_is_keyed_and_stable() -> None:
    a, b = KeyHasher(b"a" * 32), KeyHasher(b"b" * 32)
    kid = a.key_id("sk-live-123")
    assert kid == a.key_id(b"sk-live-123") and kid.startswith("kid_") and len(kid) == 36
    assert "sk-live-123" not in kid
    assert a.key_id("sk-live-124") != kid
    assert b.key_id("sk-live-123") != kid  # another secret, another id
    with pytest.raises(ValueError):
        KeyHasher(b"short")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"authorization", b"Bearer sk-1")], b"sk-1"),
        ([(b"authorization", b"bearer   sk-1  ")], b"sk-1"),
        ([(b"authorization", b"Basic dXNlcjpwYXNz")], None),
        ([(b"authorization", b"Bearer ")], None),
        ([(b"authorization", b"Bearer " + b"x" * 600)], None),
        ([(b"x-api-key", b"sk-1")], None),
        ([], None),
    ],
)
def test_bearer_reader(headers: list[tuple[bytes, bytes]], expected: bytes | None) -> None:
    assert KeyReader().read(headers) == expected


def test_bare_header_reader() -> None:
    reader = KeyReader("X-Api-Key", None)
    assert reader.read([(b"x-api-key", b" sk-2 ")]) == b"sk-2"
    assert reader.read([(b"authorization", b"Bearer sk-1")]) is None


def test_secret_created_once_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "key-secret"
    first = load_secret(path)
    assert len(first) == 32 and load_secret(path) == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("content", [b"not hex\n", b"abcd\n", b"\xff\xfe"])
def test_bad_secret_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key-secret"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="key secret"):
        load_secret(path)
