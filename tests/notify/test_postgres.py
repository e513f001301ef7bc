"""NoticeStore on the machine's real PostgreSQL, in a schema of its own (dropped afterwards):
0001 then 0002, idempotent planning, and racing claims from separate engines. Skipped when
PostgreSQL does not answer (failed in CI, which starts it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from regiongate.accounts.store.base import StoreUnavailable
from regiongate.accounts.store.sql import SQLStore
from regiongate.notify.model import Campaign, Channel, Status, message_id_for
from regiongate.notify.store import NewDelivery, NoticeStore

from ..accounts.stores import pg_private_schema

MIGRATIONS = Path(__file__).parents[2] / "src/regiongate/accounts/store/migrations"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """PostgreSQL in a schema of its own, so that migrating does not touch the shared one."""
    yield from pg_private_schema("rg_notice_test")


def planned(n: int) -> list[NewDelivery]:
    return [
        NewDelivery(
            f"org-{i}",
            Channel.EMAIL,
            f"ops@org-{i}.test",
            "en",
            message_id_for("c1", f"org-{i}", "provider.test"),
            {"org": f"org-{i}"},
        )
        for i in range(n)
    ]


CAMPAIGN = Campaign(id="c1", policy="api-2024@2024-07-09", created=0.0, enforce_from=1720483200.0)


def test_postgres_upgrade_from_0001_plan_and_racing_claims(pg_url: str) -> None:
    accounts = SQLStore(pg_url)
    with accounts.engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    accounts.upsert_org("org-1", email="ops@acme.test", actor="test")
    accounts.close()

    store = NoticeStore(pg_url)
    try:
        store.migrate()
        with store.engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        assert version == "0003"  # head: every revision applied
        org = store.get_org("org-1")
        assert org is not None and org.email == "ops@acme.test"
        assert len(store.plan(CAMPAIGN, planned(40)).added) == 40
        again = store.plan(CAMPAIGN, planned(45))
        assert len(again.added) == 5 and len(again.existing) == 40
    finally:
        store.close()

    claimed: dict[str, list[int]] = {name: [] for name in "abcd"}
    barrier = threading.Barrier(len(claimed))

    def work(name: str) -> None:
        mine = NoticeStore(pg_url)
        try:
            barrier.wait()
            while (claim := mine.claim(f"{name}:1:x", gone=lambda _c: False)) is not None:
                claimed[name].append(claim.delivery.id)
                assert mine.finish(claim.delivery, f"{name}:1:x", Status.DELIVERED)
        finally:
            mine.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in claimed]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert time.monotonic() - started < 120
    ids = [i for got in claimed.values() for i in got]
    assert len(ids) == 45 and len(set(ids)) == 45
    check = NoticeStore(pg_url)
    try:
        assert check.counts() == {("c1", "email", "delivered"): 45}
    finally:
        check.close()
    down = NoticeStore("postgresql://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(StoreUnavailable):
            down.ping()
    finally:
        down.close()
