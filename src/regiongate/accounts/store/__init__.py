"""Account stores behind one constructor: ``store_from_url``.

- ``sqlite:///PATH`` — the embedded default (``$REGIONGATE_HOME/regiongate.db``), WAL mode.
- ``postgresql://USER@HOST:PORT/DB`` — SQLAlchemy 2 Core on psycopg 3, Alembic migrations.
- ``redis://HOST:PORT/DB`` — everything in Redis: counters, the state cache, and pub/sub so
  that every gateway learns of a state change at once.
"""

from __future__ import annotations

from regiongate.accounts.store.base import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable", "store_from_url"]


def store_from_url(url: str, *, migrate: bool = True) -> Store:
    """Open the store at ``url`` (and create or upgrade its schema unless ``migrate=False``).

    Raises ``ValueError`` for a URL no backend takes and ``StoreUnavailable`` when the store
    does not answer.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    store: Store
    if scheme in {"sqlite", "postgresql", "postgres", "postgresql+psycopg"}:
        from regiongate.accounts.store.sql import SQLStore

        store = SQLStore(url)
    elif scheme in {"redis", "rediss", "unix"}:
        from regiongate.accounts.store.redis import RedisStore

        store = RedisStore(url)
    else:
        raise ValueError(f"store URL {url!r}: use sqlite:///PATH, postgresql://... or redis://...")
    if migrate:
        store.migrate()
    return store
