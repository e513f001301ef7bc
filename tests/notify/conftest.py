"""Fixtures for the notice tests: an impact report writer, a real SMTP server (aiosmtpd) and a
real webhook receiver (aiohttp), each on a free port of the loopback interface."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from regiongate.notify.webhook import verify_signature

POLICY = "api-2024"
POLICY_REF = "api-2024@2024-07-09"
SECRET = b"whsec-test-0123456789abcdef"


def org_entry(
    org: str,
    *,
    requests: int = 1000,
    affected: int = 250,
    territories: dict[str, int] | None = None,
) -> dict[str, Any]:
    unsupported = territories or {"CN": affected}
    return {
        "org": org,
        "requests": requests,
        "affected_requests": affected,
        "affected_share": affected / requests if requests else 0.0,
        "first_seen": "2024-05-01T00:00:03+00:00",
        "last_seen": "2024-06-01T12:00:00+00:00",
        "territories": {"US": requests - affected, **unsupported},
        "unsupported_territories": unsupported,
        "anonymizer_share": 0.1,
        "actions": {"allow": requests - affected, "flag": 0, "block": affected},
    }


def impact_doc(orgs: list[dict[str, Any]], policy: str = POLICY_REF) -> dict[str, Any]:
    return {
        "policy": policy,
        "against": None,
        "policy_name": policy.split("@")[0],
        "notice_from": "2024-06-25T00:00:00+00:00",
        "enforce_from": "2024-07-09T00:00:00+00:00",
        "generated_at": "2024-06-20T08:00:00+00:00",
        "lines": {"total": 0, "parsed": 0, "malformed": 0},
        "totals": {},
        "orgs": orgs,
    }


def write_impact(path: Path, orgs: list[dict[str, Any]], policy: str = POLICY_REF) -> Path:
    path.write_text(json.dumps(impact_doc(orgs, policy)), encoding="utf-8")
    return path


def write_contacts(path: Path, rows: list[dict[str, str]]) -> Path:
    fields = ("org", "email", "webhook_url", "language", "name")
    lines = [",".join(fields)]
    lines += [",".join(r.get(f, "") for f in fields) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("REGIONGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REGIONGATE_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture
def db_url(home: Path) -> str:
    return f"sqlite:///{home / 'db' / 'regiongate.db'}"


# --- SMTP ----------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass
class MailRecorder:
    """An aiosmtpd handler that keeps every message, refuses some recipients, answers some
    DATA with a temporary failure, and can SIGKILL a sender process on its Nth message."""

    messages: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # recipient → reply
    temporary: dict[str, int] = field(default_factory=dict)  # recipient → 451s to give first
    kill_pid: int | None = None
    kill_on: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        with self.lock:
            if self.temporary.get(address, 0) > 0:
                self.temporary[address] -= 1
                return "451 4.3.0 Mailbox temporarily unavailable, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        with self.lock:
            self.messages.append(
                Received(str(envelope.mail_from), list(envelope.rcpt_tos), message)
            )
            count = len(self.messages)
        if self.kill_pid is not None and count == self.kill_on:
            # The sender dies with the message in the server's hands and no reply sent: the
            # worst moment for it, as it cannot have recorded anything.
            os.kill(self.kill_pid, signal.SIGKILL)
        return "250 2.0.0 Message accepted for delivery"

    def message_ids(self) -> list[str]:
        with self.lock:
            return [m.message_id for m in self.messages]


@pytest.fixture
def smtp() -> Iterator[MailRecorder]:
    recorder = MailRecorder()
    recorder.port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=recorder.port)
    controller.start()
    try:
        yield recorder
    finally:
        controller.stop()


# --- webhooks ------------------------------------------------------------------------------------


@dataclass
class Hook:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int


class WebhookReceiver:
    """An aiohttp server in its own thread. It verifies every signature (401 when wrong) and
    answers each path with the statuses scripted for it, in order, then 200."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.script: dict[str, list[int]] = {}
        self.delays: dict[str, list[float]] = {}
        self.hooks: list[Hook] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verified = verify_signature(
            self.secret, request.headers.get("X-Regiongate-Signature"), body
        )
        delays = self.delays.get(request.path)
        if delays:
            await asyncio.sleep(delays.pop(0))
        status = 401
        if verified:
            scripted = self.script.get(request.path)
            status = scripted.pop(0) if scripted else 200
        self.hooks.append(Hook(request.path, dict(request.headers), body, verified, status))
        text = "bad signature" if not verified else ("ok" if status < 300 else "scripted")
        return web.Response(status=status, text=text)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def hooks() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as receiver:
        yield receiver
