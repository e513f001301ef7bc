"""``notices send`` against a real SMTP server (aiosmtpd) and a real webhook receiver."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from regiongate.cli.notices import notices_app
from regiongate.notify.model import Status
from regiongate.notify.send import TokenBucket, parse_rate
from regiongate.notify.store import NoticeStore
from regiongate.notify.webhook import signature_header, verify_signature

from .conftest import (
    POLICY,
    POLICY_REF,
    SECRET,
    MailRecorder,
    WebhookReceiver,
    free_port,
    org_entry,
    write_contacts,
    write_impact,
)

runner = CliRunner()
SENDER = "notices@provider.test"


def cli(db_url: str, *args: object) -> Result:
    return runner.invoke(notices_app, [*map(str, args), "--store", db_url])


def plan(db_url: str, home: Path, contacts: list[dict[str, str]]) -> None:
    impact = write_impact(
        home / "impact.json",
        [org_entry(c["org"], requests=1000 + i, affected=100 + i) for i, c in enumerate(contacts)],
    )
    book = write_contacts(home / "contacts.csv", contacts)
    result = cli(db_url, "plan", "--policy", POLICY, "--impact", impact, "--contacts", book)
    assert result.exit_code == 0, result.output


def emails(n: int, domain: str = "example.test") -> list[dict[str, str]]:
    return [{"org": f"org-{i:02d}", "email": f"ops@org-{i:02d}.{domain}"} for i in range(n)]


def send(db_url: str, smtp: MailRecorder | None, *args: object) -> Result:
    where = ("--smtp", f"smtp://127.0.0.1:{smtp.port}") if smtp is not None else ()
    return cli(db_url, "send", *where, "--sender", SENDER, "--rate", "1000/s", *args)


def rows(db_url: str) -> dict[tuple[str, str], Any]:
    store = NoticeStore(db_url)
    try:
        return {(d.org, str(d.channel)): d for d in store.list_deliveries()}
    finally:
        store.close()


def secret_file(home: Path, secret: bytes = SECRET) -> Path:
    path = home / "webhook-secret"
    path.write_bytes(secret + b"\n")
    return path


# --- e-mail --------------------------------------------------------------------------------------


def test_one_message_per_org_with_its_own_message_id(
    db_url: str, home: Path, smtp: MailRecorder
) -> None:
    contacts = emails(5)
    contacts[0]["language"] = "zh-Hans"
    contacts[1]["name"] = "<i>Initech</i> & Co"
    plan(db_url, home, contacts)
    result = send(db_url, smtp)
    assert result.exit_code == 0, result.output
    assert "5 delivered, 0 bounced, 0 failed" in result.stdout

    stored = rows(db_url)
    assert len(smtp.messages) == 5
    by_rcpt = {m.rcpt_tos[0]: m for m in smtp.messages}
    for c in contacts:
        d = stored[c["org"], "email"]
        assert d.status is Status.DELIVERED and d.attempts == 1 and d.last_error is None
        got = by_rcpt[c["email"]]
        assert got.mail_from == SENDER
        assert got.message_id == d.message_id
        assert got.message["X-Regiongate-Org"] == c["org"]
        assert got.message.get_content_type() == "multipart/alternative"
        parts = [p.get_content_type() for p in got.message.iter_parts()]
        assert parts == ["text/plain", "text/html"]
    zh = by_rcpt[contacts[0]["email"]].message
    assert str(zh["Subject"]).startswith("重要通知：自2024年7月9日起")
    assert zh["Content-Language"] == "zh-Hans"
    html = by_rcpt[contacts[1]["email"]].message.get_body(("html",))
    assert html is not None
    assert "&lt;i&gt;Initech&lt;/i&gt; &amp; Co" in html.get_content()
    text = by_rcpt[contacts[1]["email"]].message.get_body(("plain",))
    assert text is not None and "Hello <i>Initech</i> & Co," in text.get_content()

    again = send(db_url, smtp)  # nothing left to do: nothing is sent twice
    assert again.exit_code == 0 and "0 delivered" in again.stdout
    assert len(smtp.messages) == 5


def test_a_550_is_recorded_as_bounced(db_url: str, home: Path, smtp: MailRecorder) -> None:
    contacts = emails(3)
    reply = "550 5.1.1 <ops@org-01.example.test>: Recipient address rejected: User unknown"
    smtp.refuse["ops@org-01.example.test"] = reply
    plan(db_url, home, contacts)
    result = send(db_url, smtp)
    assert result.exit_code == 1, result.output
    assert "2 delivered, 1 bounced" in result.stdout
    bounced = rows(db_url)["org-01", "email"]
    assert bounced.status is Status.BOUNCED and bounced.attempts == 1
    assert bounced.last_error == reply
    assert len(smtp.messages) == 2

    status = json.loads(cli(db_url, "status", "--json").stdout)["campaigns"][0]
    assert status["totals"]["bounced"] == 1 and status["totals"]["delivered"] == 2
    assert [(p["org"], p["status"], p["error"]) for p in status["problems"]] == [
        ("org-01", "bounced", reply)
    ]
    text = cli(db_url, "status")
    assert "failed and bounced" in text.stdout and "org-01" in text.stdout

    assert send(db_url, smtp).exit_code == 0  # a bounce is final: not tried again
    assert len(smtp.messages) == 2 and rows(db_url)["org-01", "email"].attempts == 1


def test_a_temporary_failure_is_retried(db_url: str, home: Path, smtp: MailRecorder) -> None:
    smtp.temporary["ops@org-00.example.test"] = 2
    plan(db_url, home, emails(2))
    result = send(db_url, smtp, "--backoff", "0.05")
    assert result.exit_code == 0, result.output
    assert "2 failed attempts retried" in result.stdout
    d = rows(db_url)["org-00", "email"]
    assert d.status is Status.DELIVERED and d.attempts == 3
    assert len(smtp.messages) == 2


def test_temporary_failures_stop_after_max_attempts(
    db_url: str, home: Path, smtp: MailRecorder
) -> None:
    smtp.temporary["ops@org-00.example.test"] = 3
    plan(db_url, home, emails(1))
    result = send(db_url, smtp, "--backoff", "0.01", "--max-attempts", "2")
    assert result.exit_code == 1
    d = rows(db_url)["org-00", "email"]
    assert d.status is Status.FAILED and d.attempts == 2
    assert d.last_error is not None and d.last_error.startswith("451 4.3.0")
    assert d.next_attempt is not None  # retryable by a later run with more attempts
    result = send(db_url, smtp, "--backoff", "0.01", "--max-attempts", "20")
    assert result.exit_code == 0 and rows(db_url)["org-00", "email"].status is Status.DELIVERED


def test_an_unreachable_smtp_server_stops_the_email_channel(db_url: str, home: Path) -> None:
    plan(db_url, home, emails(3))
    port = free_port()  # nothing listens there
    result = cli(db_url, "send", "--smtp", f"smtp://127.0.0.1:{port}", "--sender", SENDER)
    assert result.exit_code == 1
    assert "email stopped: cannot connect to SMTP smtp://127.0.0.1" in result.stderr
    states = collections.Counter((d.status, d.attempts) for d in rows(db_url).values())
    assert states == {(Status.PENDING, 0): 2, (Status.FAILED, 1): 1}  # one tried, two left


# --- rate limit ----------------------------------------------------------------------------------


def test_token_bucket_counts() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async def count(rate: float, burst: float, horizon: float) -> int:
        bucket = TokenBucket(rate, burst, clock=lambda: now[0], sleep=sleep)
        taken = 0
        while True:
            await bucket.take()
            if now[0] > horizon:
                return taken
            taken += 1

    now[0] = 0.0
    assert asyncio.run(count(5, 1, 2.0)) == 11  # one at once, then 5 a second for 2 s
    now[0] = 0.0
    assert asyncio.run(count(5, 3, 2.0)) == 13
    assert parse_rate("10/s") == 10 and parse_rate("120/m") == 2 and parse_rate("7") == 7
    with pytest.raises(ValueError):
        parse_rate("0/s")


def test_send_honours_the_rate(db_url: str, home: Path, smtp: MailRecorder) -> None:
    plan(db_url, home, emails(6))
    started = time.monotonic()
    result = cli(
        db_url, "send", "--smtp", f"smtp://127.0.0.1:{smtp.port}", "--sender", SENDER,
        "--rate", "20/s",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert len(smtp.messages) == 6
    assert elapsed >= 5 / 20 * 0.9  # 6 messages at 20/s, burst 1: at least 5 intervals


# --- webhooks ------------------------------------------------------------------------------------


def hook_contacts(receiver: WebhookReceiver, *paths: str) -> list[dict[str, str]]:
    return [{"org": f"org-{p.strip('/')}", "webhook_url": receiver.url(p)} for p in paths]


def test_webhooks_are_signed_and_carry_an_idempotency_key(
    db_url: str, home: Path, hooks: WebhookReceiver
) -> None:
    plan(db_url, home, hook_contacts(hooks, "/a", "/b"))
    result = cli(db_url, "send", "--webhook-secret-file", secret_file(home))
    assert result.exit_code == 0, result.output
    assert [h.verified for h in hooks.hooks] == [True, True]
    stored = rows(db_url)
    for hook in hooks.hooks:
        org = "org-" + hook.path.strip("/")
        d = stored[org, "webhook"]
        assert d.status is Status.DELIVERED
        assert hook.headers["Idempotency-Key"] == d.message_id.strip("<>")
        body = json.loads(hook.body)
        assert body["type"] == "regiongate.notice" and body["org"] == org
        assert body["id"] == hook.headers["Idempotency-Key"]
        assert body["policy"] == POLICY_REF
        assert body["enforce_from"] == "2024-07-09T00:00:00+00:00"
        assert body["evidence"]["affected_requests"] == d.evidence["affected_requests"]
        assert "9 July 2024" in body["text"]


def test_a_wrong_signature_is_rejected_and_fails(
    db_url: str, home: Path, hooks: WebhookReceiver
) -> None:
    plan(db_url, home, hook_contacts(hooks, "/a"))
    result = cli(db_url, "send", "--webhook-secret-file", secret_file(home, b"not-the-secret"))
    assert result.exit_code == 1
    assert [h.verified for h in hooks.hooks] == [False]
    d = rows(db_url)["org-a", "webhook"]
    assert d.status is Status.FAILED and d.attempts == 1 and d.next_attempt is None
    assert d.last_error == "HTTP 401: bad signature"


def test_5xx_is_retried_until_success(db_url: str, home: Path, hooks: WebhookReceiver) -> None:
    hooks.script["/flaky"] = [503, 502]
    plan(db_url, home, hook_contacts(hooks, "/flaky"))
    result = cli(db_url, "send", "--webhook-secret-file", secret_file(home), "--backoff", "0.05")
    assert result.exit_code == 0, result.output
    assert [h.status for h in hooks.hooks] == [503, 502, 200]
    assert len({h.headers["Idempotency-Key"] for h in hooks.hooks}) == 1
    assert len({h.body for h in hooks.hooks}) == 1  # the same body every time
    d = rows(db_url)["org-flaky", "webhook"]
    assert d.status is Status.DELIVERED and d.attempts == 3


def test_a_timeout_is_retried(db_url: str, home: Path, hooks: WebhookReceiver) -> None:
    hooks.delays["/slow"] = [1.0]
    plan(db_url, home, hook_contacts(hooks, "/slow"))
    result = cli(
        db_url, "send", "--webhook-secret-file", secret_file(home), "--backoff", "0.05",
        "--timeout", "0.3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    d = rows(db_url)["org-slow", "webhook"]
    assert d.status is Status.DELIVERED and d.attempts == 2


def test_4xx_fails_for_good(db_url: str, home: Path, hooks: WebhookReceiver) -> None:
    hooks.script["/gone"] = [410]
    plan(db_url, home, hook_contacts(hooks, "/gone", "/ok"))
    result = cli(db_url, "send", "--webhook-secret-file", secret_file(home), "--backoff", "0.05")
    assert result.exit_code == 1
    d = rows(db_url)["org-gone", "webhook"]
    assert d.status is Status.FAILED and d.attempts == 1 and d.next_attempt is None
    assert d.last_error == "HTTP 410: scripted"
    assert rows(db_url)["org-ok", "webhook"].status is Status.DELIVERED
    assert cli(db_url, "send", "--webhook-secret-file", secret_file(home)).exit_code == 0
    assert len(hooks.hooks) == 2  # not tried again


def test_signature_verification() -> None:
    body = b'{"a":1}'
    now = 1_720_000_000
    header = signature_header(SECRET, body, timestamp=now)
    assert verify_signature(SECRET, header, body, now=now + 10)
    assert not verify_signature(SECRET, header, body + b" ", now=now)
    assert not verify_signature(b"other", header, body, now=now)
    assert not verify_signature(SECRET, header, body, now=now + 3600)  # replayed later
    assert not verify_signature(SECRET, "v1=abc", body, now=now)
    assert not verify_signature(SECRET, None, body, now=now)


# --- a crash in the middle -----------------------------------------------------------------------

SEND = "from regiongate.cli.notices import main; main()"


def test_a_crash_mid_send_resends_only_the_in_flight_message(
    db_url: str, home: Path, smtp: MailRecorder
) -> None:
    orgs = 8
    plan(db_url, home, emails(orgs))
    args = [
        sys.executable, "-c", SEND, "send", "--store", db_url,
        "--smtp", f"smtp://127.0.0.1:{smtp.port}", "--sender", SENDER, "--rate", "1000/s",
    ]  # fmt: skip
    smtp.kill_on = 4
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    smtp.kill_pid = first.pid
    out, err = first.communicate(timeout=120)
    assert first.returncode == -9, (out, err)
    smtp.kill_pid = None

    # The dead sender left exactly one delivery in flight: the message the server holds.
    after_crash = rows(db_url)
    sending = [d for d in after_crash.values() if d.status is Status.SENDING]
    assert len(sending) == 1
    assert sending[0].message_id == smtp.messages[-1].message_id
    assert sum(d.status is Status.DELIVERED for d in after_crash.values()) == 3

    second = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 resent after an interrupted run (same Message-ID)" in second.stdout

    final = rows(db_url)
    assert all(d.status is Status.DELIVERED for d in final.values())
    received = collections.Counter(smtp.message_ids())
    assert len(received) == orgs  # every organisation's Message-ID arrived
    assert set(received) == {d.message_id for d in final.values()}
    duplicates = {mid: n for mid, n in received.items() if n > 1}
    assert duplicates == {sending[0].message_id: 2}  # only the in-flight one, same Message-ID
    resent = final[sending[0].org, "email"]
    assert resent.attempts == 2
