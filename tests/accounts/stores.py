"""Store fixtures for the behaviour suite: SQLite in a temp dir, the machine's real
PostgreSQL (database ``test``) and Redis. A backend whose server does not answer is skipped
with the reason, except in CI (``CI=true``), where it fails: CI starts both servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from regiongate.accounts.store import Store, StoreUnavailable, store_from_url

PG_URL = os.environ.get("REGIONGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REGIONGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
BACKENDS = ("sqlite", "postgresql", "redis")


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not answering ({exc}); start it as the machine notes say"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def open_store(backend: str, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of ``backend``; cleaned up afterwards."""
    if backend == "sqlite":
        store = store_from_url(f"sqlite:///{tmp_path / 'accounts.db'}")
        yield store
        store.close()
        return
    if backend == "postgresql":
        try:
            store = store_from_url(PG_URL)
        except StoreUnavailable as exc:
            _unavailable("PostgreSQL", exc)
        store.truncate_for_tests()  # type: ignore[attr-defined]
        yield store
        store.truncate_for_tests()  # type: ignore[attr-defined]
        store.close()
        return
    if backend == "redis":
        from regiongate.accounts.store.redis import RedisStore

        prefix = f"rgtest:{uuid.uuid4().hex[:12]}:"
        try:
            store = RedisStore(REDIS_URL, prefix=prefix)
            store.migrate()
        except StoreUnavailable as exc:
            _unavailable("Redis", exc)
        yield store
        store.truncate_for_tests()
        store.close()
        return
    raise AssertionError(backend)
