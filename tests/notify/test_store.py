"""NoticeStore on SQLite: migrations 0001 + 0002, idempotent planning, atomic claims."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from regiongate.accounts.store.sql import SQLStore
from regiongate.notify.model import Campaign, Channel, Status, message_id_for
from regiongate.notify.store import NewDelivery, NoticeStore, claimer_gone

MIGRATIONS = Path(__file__).parents[2] / "src/regiongate/accounts/store/migrations"


def campaign(name: str = "c1", policy: str = "api-2024@2024-07-09") -> Campaign:
    return Campaign(id=name, policy=policy, created=time.time(), enforce_from=1720483200.0)


def planned(n: int, name: str = "c1") -> list[NewDelivery]:
    return [
        NewDelivery(
            org=f"org-{i}",
            channel=Channel.EMAIL,
            recipient=f"ops@org-{i}.test",
            language="en",
            message_id=message_id_for(name, f"org-{i}", "provider.test"),
            evidence={"org": f"org-{i}", "affected_requests": i},
        )
        for i in range(n)
    ]


def test_migrate_applies_every_revision(db_url: str) -> None:
    store = NoticeStore(db_url)
    try:
        store.migrate()
        store.migrate()  # idempotent
        names = sa.inspect(store.engine).get_table_names()
        assert {"rg_orgs", "rg_audit", "rg_notice_campaigns", "rg_notice_deliveries"} <= set(names)
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == (
                "0003"
            )
    finally:
        store.close()


def test_0002_upgrades_a_database_already_at_0001(home: Path) -> None:
    url = f"sqlite:///{home / 'old.db'}"
    accounts = SQLStore(url)
    with accounts.engine.begin() as conn:  # what an installation before notices has
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    accounts.upsert_org("org-1", name="Acme", email="ops@acme.test", actor="test")
    assert "rg_notice_deliveries" not in sa.inspect(accounts.engine).get_table_names()
    accounts.close()

    store = NoticeStore(url)
    try:
        store.migrate()
        assert "rg_notice_deliveries" in sa.inspect(store.engine).get_table_names()
        org = store.get_org("org-1")
        assert org is not None and org.email == "ops@acme.test"  # the accounts data is kept
        store.plan(campaign(), planned(1))
        assert [d.org for d in store.list_deliveries()] == ["org-0"]
    finally:
        store.close()


def test_plan_is_idempotent(db_url: str) -> None:
    store = NoticeStore(db_url)
    store.migrate()
    try:
        first = store.plan(campaign(), planned(3))
        assert first.campaign_created and len(first.added) == 3 and not first.existing
        again = store.plan(campaign(), planned(5))
        assert not again.campaign_created
        assert [d.org for d in again.added] == ["org-3", "org-4"]
        assert [d.org for d in again.existing] == ["org-0", "org-1", "org-2"]
        assert len(store.list_deliveries("c1")) == 5
        assert all(d.status is Status.PENDING for d in store.list_deliveries())
        # The same org on another channel is another delivery; the same channel is not.
        hook = NewDelivery("org-0", Channel.WEBHOOK, "https://hooks.test/x", "en", "<m@x>")
        assert len(store.plan(campaign(), [hook]).added) == 1
        assert len(store.list_deliveries("c1")) == 6
    finally:
        store.close()


def test_a_campaign_belongs_to_one_policy(db_url: str) -> None:
    store = NoticeStore(db_url)
    store.migrate()
    try:
        store.plan(campaign(), planned(1))
        try:
            store.plan(campaign(policy="other@1"), planned(2))
        except ValueError as exc:
            assert "is for policy api-2024@2024-07-09" in str(exc)
        else:
            raise AssertionError("a campaign changed policy")
        assert len(store.list_deliveries()) == 1  # nothing of the refused plan was written
    finally:
        store.close()


def test_two_senders_never_claim_the_same_delivery(db_url: str) -> None:
    setup = NoticeStore(db_url)
    setup.migrate()
    setup.plan(campaign(), planned(60))
    setup.close()
    claimed: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    start = threading.Barrier(len(claimed))

    def work(name: str) -> None:
        store = NoticeStore(db_url)  # its own engine, as another process would have
        try:
            start.wait()
            while (claim := store.claim(f"{name}-claimer")) is not None:
                claimed[name].append(claim.delivery.id)
                assert store.finish(claim.delivery, f"{name}-claimer", Status.DELIVERED)
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [i for ids in claimed.values() for i in ids]
    assert len(everything) == 60 and len(set(everything)) == 60
    check = NoticeStore(db_url)
    try:
        rows = check.list_deliveries()
        assert all(d.status is Status.DELIVERED and d.attempts == 1 for d in rows)
    finally:
        check.close()


def test_a_dead_senders_delivery_is_reclaimed_and_a_live_ones_is_not(db_url: str) -> None:
    store = NoticeStore(db_url)
    store.migrate()
    try:
        store.plan(campaign(), planned(2))
        held = store.claim("elsewhere:1:aa", gone=lambda _c: False)
        assert held is not None and held.previous is Status.PENDING
        # A live claimer keeps its delivery: the next sender takes the other one.
        other = store.claim("me:2:bb", gone=lambda _c: False)
        assert other is not None and other.delivery.id != held.delivery.id
        assert store.finish(other.delivery, "me:2:bb", Status.DELIVERED)
        assert store.claim("me:2:bb", gone=lambda _c: False) is None
        # Once the claimer is gone, its delivery is claimed again, Message-ID unchanged.
        again = store.claim("me:2:bb", gone=lambda c: c == "elsewhere:1:aa")
        assert again is not None and again.previous is Status.SENDING
        assert again.delivery.id == held.delivery.id
        assert again.delivery.message_id == held.delivery.message_id
        assert again.delivery.attempts == 2
        # The old claimer cannot record an outcome any more; the new one can.
        assert not store.finish(held.delivery, "elsewhere:1:aa", Status.DELIVERED)
        assert store.finish(again.delivery, "me:2:bb", Status.DELIVERED)
    finally:
        store.close()


def test_an_expired_lease_is_reclaimed(db_url: str) -> None:
    store = NoticeStore(db_url)
    store.migrate()
    try:
        store.plan(campaign(), planned(1))
        now = time.time()
        held = store.claim("far:1:aa", lease=60, now=now, gone=lambda _c: False)
        assert held is not None
        assert store.claim("me:2:bb", now=now + 30, gone=lambda _c: False) is None
        late = store.claim("me:2:bb", now=now + 61, gone=lambda _c: False)
        assert late is not None and late.delivery.id == held.delivery.id
    finally:
        store.close()


def test_failed_deliveries_wait_for_their_retry_time_and_attempts(db_url: str) -> None:
    store = NoticeStore(db_url)
    store.migrate()
    try:
        store.plan(campaign(), planned(1))
        now = time.time()
        claim = store.claim("me:1:aa", now=now)
        assert claim is not None
        assert store.finish(
            claim.delivery, "me:1:aa", Status.FAILED, error="451", next_attempt=now + 10
        )
        assert store.claim("me:1:aa", now=now + 5) is None
        assert store.next_retry_at() == now + 10
        retry = store.claim("me:1:aa", now=now + 11, max_attempts=2)
        assert retry is not None and retry.previous is Status.FAILED
        assert store.finish(
            retry.delivery, "me:1:aa", Status.FAILED, error="451", next_attempt=now + 20
        )
        assert store.claim("me:1:aa", now=now + 30, max_attempts=2) is None  # attempts used up
        assert store.next_retry_at(max_attempts=2) is None
        assert store.claim("me:1:aa", now=now + 30, max_attempts=3) is not None
    finally:
        store.close()


def test_claimer_gone_knows_only_about_this_host() -> None:
    import os
    import socket
    import subprocess
    import sys

    host = socket.gethostname()
    assert not claimer_gone(f"{host}:{os.getpid()}:x")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert claimer_gone(f"{host}:{proc.pid}:x")
    assert not claimer_gone(f"some-other-host:{proc.pid}:x")  # its lease decides
    assert claimer_gone(None)
