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


def pg_private_schema(prefix: str) -> Iterator[str]:
    """A PostgreSQL URL whose ``search_path`` is a new schema of its own (dropped afterwards),
    for tests that migrate from an old revision without touching the shared tables."""
    import sqlalchemy as sa

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        "postgresql+psycopg://" + PG_URL.split("://", 1)[1], connect_args={"connect_timeout": 3}
    )
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unavailable("PostgreSQL", Exception(str(exc).splitlines()[0]))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
