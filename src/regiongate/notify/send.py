"""Send planned notices by e-mail (SMTP, aiosmtplib) and signed webhooks (aiohttp).

One sender works through the deliveries one at a time, at most ``rate`` per second (a token
bucket), in this order: deliveries a dead sender left in ``sending``, pending ones, then
failed ones whose retry time has come.

Delivery guarantee — what it is, and what it is not
---------------------------------------------------
**In the store, exactly once per (campaign, organisation, channel).** The delivery row is
unique on that triple; a sender claims it with a conditional UPDATE (only one of two racing
senders changes the row), and records the outcome only while it still holds the claim. A
notice that reached ``delivered`` or ``bounced`` is never sent again.

**On the wire, at least once — and more than once only for the one message in flight at a
crash.** Sending and recording cannot be one atomic step: if the sender dies after the SMTP
server (or webhook receiver) accepted a message but before ``delivered`` was committed, that
delivery stays in ``sending``. Only one delivery is ever in flight, so a crash leaves at most
one such row. The next ``notices send`` claims it again (its claimer is a process of this host
that no longer exists, or its lease of ``lease`` seconds ran out) and sends it again with the
**same** ``Message-ID`` header, or for a webhook the same ``Idempotency-Key`` header (and the
same body), both derived from (campaign, organisation) when the notice was planned. A receiver
that drops what it has already seen therefore sees each notice once; one that does not may
show that single message twice. Nothing else is ever sent twice.

Outcomes: SMTP 250 → ``delivered``; a 5xx refusal of the recipient or of the message →
``bounced`` with the server's reply (never retried); 4xx, timeouts and dropped connections →
``failed`` with a retry time (exponential backoff from ``backoff`` seconds, up to
``max_attempts`` attempts). A 5xx to MAIL FROM, a failed login or a refused STARTTLS is the
sender's configuration, not the recipient's: the e-mail channel stops for this run and the
delivery is left ``failed`` for a later one (as when the server cannot be reached at all).
Something the server cannot do for this message (an address that needs SMTPUTF8) → ``failed``
for good. Webhooks: 2xx → ``delivered``; 5xx, 408, 425, 429,
timeouts and connection errors → ``failed`` and retried; any other status (4xx, 3xx: redirects
are not followed) → ``failed`` for good.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import aiosmtplib

from regiongate import __version__
from regiongate.notify.model import Campaign, Channel, Delivery, Status
from regiongate.notify.render import Rendered, render
from regiongate.notify.store import DEFAULT_LEASE, NoticeStore, new_claimer
from regiongate.notify.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, signature_header

__all__ = [
    "Outcome",
    "SendReport",
    "Sender",
    "SmtpConfig",
    "TokenBucket",
    "build_email",
    "parse_rate",
    "webhook_body",
]

_RETRY_HTTP: Final = frozenset({408, 425, 429})
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*")
_PER: Final = {None: 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0,
               "minute": 60.0, "h": 3600.0, "hour": 3600.0}  # fmt: skip


def parse_rate(text: str) -> float:
    """``10/s``, ``10``, ``600/m``, ``0.5/s``, ``100/h`` → messages per second."""
    found = _RATE.fullmatch(text.lower())
    if found is None:
        raise ValueError(f"rate {text!r} is not N/s, N/m or N/h")
    rate = float(found.group(1)) / _PER[found.group(2)]
    if not 0 < rate <= 10_000:
        raise ValueError(f"rate {text!r} must be more than 0 and at most 10000/s")
    return rate


class TokenBucket:
    """At most ``rate`` takes per second on average, ``burst`` at once."""

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def take(self) -> None:
        self._refill()
        while self._tokens < 1 - 1e-9:  # (rounding must not make it wait for nothing)
            await self._sleep((1 - self._tokens) / self.rate)
            self._refill()
        self._tokens = max(0.0, self._tokens - 1)

    def refund(self) -> None:
        """Give back a token that was not used (nothing was sent with it)."""
        self._tokens = min(self.burst, self._tokens + 1)


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    hostname: str
    port: int
    use_tls: bool = False  # implicit TLS (smtps://)
    start_tls: bool | None = None  # None: upgrade when the server offers it
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 30.0) -> SmtpConfig:
        """``smtp://[USER:PASS@]HOST[:PORT]`` (STARTTLS when offered; ``?starttls=require``
        or ``?starttls=off``), ``smtps://HOST[:465]`` (implicit TLS)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"SMTP URL {url!r}: {exc}") from None
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError(f"SMTP URL {url!r} must be smtp://HOST[:PORT] or smtps://HOST[:PORT]")
        query = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
        start_tls: bool | None = None
        mode = query.get("starttls")
        if mode in {"require", "required", "yes", "true", "1"}:
            start_tls = True
        elif mode in {"off", "no", "false", "0"}:
            start_tls = False
        elif mode is not None:
            raise ValueError(f"SMTP URL {url!r}: starttls must be require or off")
        use_tls = parts.scheme == "smtps"
        return cls(
            hostname=parts.hostname,
            port=port or (465 if use_tls else 25),
            use_tls=use_tls,
            start_tls=False if use_tls else start_tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout=timeout,
        )

    def describe(self) -> str:
        return f"{'smtps' if self.use_tls else 'smtp'}://{self.hostname}:{self.port}"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status  # DELIVERED, FAILED or BOUNCED
    detail: str = ""  # the server's reply (or what went wrong)
    retry: bool = False  # FAILED: whether a later attempt may succeed


@dataclass(slots=True)
class SendReport:
    delivered: int = 0
    bounced: int = 0
    failed: int = 0  # for good (no retry)
    retrying: int = 0  # failed attempts that will be retried (counted per attempt)
    exhausted: int = 0  # failed after the last allowed attempt
    resent: int = 0  # deliveries a dead sender left in ``sending``, sent again
    lost_claims: int = 0  # outcomes not recorded: another sender had taken over
    stopped: dict[str, str] = field(default_factory=dict)  # channel → why it stopped

    @property
    def ok(self) -> bool:
        return not (self.bounced or self.failed or self.exhausted or self.stopped)

    def to_dict(self) -> dict[str, object]:
        return {
            "delivered": self.delivered,
            "bounced": self.bounced,
            "failed": self.failed,
            "retrying": self.retrying,
            "exhausted": self.exhausted,
            "resent": self.resent,
            "lost_claims": self.lost_claims,
            "stopped": dict(self.stopped),
        }


def build_email(
    campaign: Campaign, delivery: Delivery, rendered: Rendered, sender: str
) -> EmailMessage:
    """A multipart/alternative (text, HTML) message with the delivery's own Message-ID."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = delivery.recipient
    msg["Subject"] = rendered.subject
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = delivery.message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Regiongate-Campaign"] = campaign.id
    msg["X-Regiongate-Org"] = delivery.org
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    # After the parts exist: set_content moves Content-* headers into the first part.
    msg["Content-Language"] = delivery.language
    return msg


def webhook_body(campaign: Campaign, delivery: Delivery, rendered: Rendered) -> bytes:
    """The JSON a webhook receives: the same bytes on every attempt."""
    doc = {
        "type": "regiongate.notice",
        "id": delivery.idempotency_key,
        "campaign": campaign.id,
        "policy": campaign.policy,
        "org": delivery.org,
        "language": delivery.language,
        "enforce_from": dt.datetime.fromtimestamp(campaign.enforce_from, dt.UTC).isoformat(),
        "subject": rendered.subject,
        "text": rendered.text,
        "evidence": delivery.evidence,
    }
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _reply(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"[:1000]


class _ChannelStop(Exception):
    """The channel cannot work for the rest of this run (the sender's configuration)."""


class Sender:
    """Works through a campaign's (or every campaign's) deliveries; see the module notes."""

    def __init__(
        self,
        store: NoticeStore,
        *,
        campaign: str | None = None,
        smtp: SmtpConfig | None = None,
        sender: str | None = None,
        webhook_secret: bytes | None = None,
        rate: float = 10.0,
        burst: float = 1.0,
        max_attempts: int = 5,
        backoff: float = 2.0,
        backoff_cap: float = 300.0,
        timeout: float = 30.0,
        lease: float = DEFAULT_LEASE,
        channels: Iterable[Channel] | None = None,
        claimer: str | None = None,
        on_result: Callable[[Delivery, Outcome], None] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.store = store
        self.campaign = campaign
        self.smtp = smtp
        self.sender = sender
        self.webhook_secret = webhook_secret
        self.bucket = TokenBucket(rate, burst)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.timeout = timeout
        self.lease = lease
        wanted = set(Channel if channels is None else channels)
        if smtp is None or sender is None:
            wanted.discard(Channel.EMAIL)
        if webhook_secret is None:
            wanted.discard(Channel.WEBHOOK)
        self.channels = wanted
        self.claimer = claimer or new_claimer()
        self.on_result = on_result
        self._campaigns: dict[str, Campaign] = {}
        self._smtp: aiosmtplib.SMTP | None = None
        self._stop: tuple[str, str] | None = None  # (channel, why), until recorded

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> SendReport:
        report = SendReport()
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        headers = {"User-Agent": f"regiongate/{__version__}"}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            try:
                await self._loop(session, report)
            finally:
                await self._close_smtp()
        return report

    async def _loop(self, session: aiohttp.ClientSession, report: SendReport) -> None:
        while self.channels:
            await self.bucket.take()
            claim = self.store.claim(
                self.claimer,
                campaign=self.campaign,
                channels=self.channels,
                max_attempts=self.max_attempts,
                lease=self.lease,
            )
            if claim is None:
                self.bucket.refund()
                due = self.store.next_retry_at(
                    campaign=self.campaign, channels=self.channels, max_attempts=self.max_attempts
                )
                if due is None:
                    return
                await asyncio.sleep(min(max(0.0, due - time.time()), self.backoff_cap) + 0.01)
                continue
            if claim.previous is Status.SENDING:
                report.resent += 1
            outcome = await self._attempt(session, claim.delivery)
            self._record(claim.delivery, outcome, report)

    def _campaign(self, campaign_id: str) -> Campaign:
        found = self._campaigns.get(campaign_id)
        if found is None:
            found = self.store.get_campaign(campaign_id)
            if found is None:  # pragma: no cover - deliveries reference their campaign
                raise RuntimeError(f"campaign {campaign_id!r} vanished")
            self._campaigns[campaign_id] = found
        return found

    async def _attempt(self, session: aiohttp.ClientSession, delivery: Delivery) -> Outcome:
        campaign = self._campaign(delivery.campaign)
        try:
            rendered = render(campaign, delivery)
        except Exception as exc:  # a template that cannot render this notice: not retryable
            return Outcome(Status.FAILED, f"cannot render the notice: {exc}")
        try:
            if delivery.channel is Channel.EMAIL:
                return await self._email(campaign, delivery, rendered)
            return await self._webhook(session, campaign, delivery, rendered)
        except _ChannelStop as exc:
            self.channels.discard(delivery.channel)
            self._stop = (str(delivery.channel), str(exc))
            return Outcome(Status.FAILED, str(exc), retry=True)

    def _record(self, delivery: Delivery, outcome: Outcome, report: SendReport) -> None:
        now = time.time()
        next_attempt: float | None = None
        if outcome.status is Status.FAILED and outcome.retry:
            delay = min(self.backoff_cap, self.backoff * 2 ** max(0, delivery.attempts - 1))
            next_attempt = now + delay
        recorded = self.store.finish(
            delivery,
            self.claimer,
            outcome.status,
            error=outcome.detail,
            next_attempt=next_attempt,
            now=now,
        )
        if self._stop is not None:
            report.stopped[self._stop[0]] = self._stop[1]
            self._stop = None
        if not recorded:
            report.lost_claims += 1
        elif outcome.status is Status.DELIVERED:
            report.delivered += 1
        elif outcome.status is Status.BOUNCED:
            report.bounced += 1
        elif not outcome.retry:
            report.failed += 1
        elif delivery.attempts >= self.max_attempts:
            report.exhausted += 1
        else:
            report.retrying += 1
        if self.on_result is not None:
            self.on_result(delivery, outcome)

    # --- e-mail --------------------------------------------------------------------------------

    async def _client(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        config = self.smtp
        if config is None:  # pragma: no cover - the channel is off without it
            raise _ChannelStop("no SMTP server configured")
        client = aiosmtplib.SMTP(
            hostname=config.hostname,
            port=config.port,
            use_tls=config.use_tls,
            start_tls=config.start_tls,
            username=config.username,
            password=config.password,
            timeout=config.timeout,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise _ChannelStop(
                f"SMTP {config.describe()} refused the login: {_reply(exc.code, exc.message)}"
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _ChannelStop(
                f"SMTP {config.describe()} refused us: {_reply(exc.code, exc.message)}"
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise _ChannelStop(
                f"cannot connect to SMTP {config.describe()}: {exc or type(exc).__name__}"
            ) from None
        self._smtp = client
        return client

    async def _close_smtp(self) -> None:
        client, self._smtp = self._smtp, None
        if client is None:
            return
        try:
            if client.is_connected:
                await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()

    async def _email(self, campaign: Campaign, delivery: Delivery, rendered: Rendered) -> Outcome:
        if self.sender is None:  # pragma: no cover - the channel is off without it
            raise _ChannelStop("no sender address configured")
        message = build_email(campaign, delivery, rendered, self.sender)
        client = await self._client()
        try:
            _refused, response = await client.send_message(
                message, sender=self.sender, recipients=[delivery.recipient]
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self._reset(client)
            first = exc.recipients[0] if exc.recipients else None
            code = first.code if first is not None else 550
            reply = _reply(code, first.message if first is not None else "recipient refused")
            if code >= 500:
                return Outcome(Status.BOUNCED, reply)
            return Outcome(Status.FAILED, reply, retry=True)
        except aiosmtplib.SMTPSenderRefused as exc:
            await self._reset(client)
            raise _ChannelStop(
                f"SMTP refused the sender {self.sender}: {_reply(exc.code, exc.message)}"
            ) from None
        except aiosmtplib.SMTPHeloError as exc:
            await self._close_smtp()
            raise _ChannelStop(
                f"SMTP refused our greeting: {_reply(exc.code, exc.message)}"
            ) from None
        except aiosmtplib.SMTPNotSupported as exc:  # e.g. an address that needs SMTPUTF8
            await self._reset(client)
            return Outcome(Status.FAILED, f"SMTP: {exc}"[:1000])
        except aiosmtplib.SMTPResponseException as exc:  # DATA refused, HELO, ...
            await self._reset(client)
            reply = _reply(exc.code, exc.message)
            if exc.code >= 500:
                return Outcome(Status.BOUNCED, reply)
            return Outcome(Status.FAILED, reply, retry=True)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._close_smtp()
            return Outcome(
                Status.FAILED, f"SMTP: {type(exc).__name__}: {exc}".rstrip(": "), retry=True
            )
        return Outcome(Status.DELIVERED, " ".join(str(response).split())[:1000])

    async def _reset(self, client: aiosmtplib.SMTP) -> None:
        """After a refusal, make the connection usable for the next message (or drop it)."""
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await self._close_smtp()

    # --- webhooks ------------------------------------------------------------------------------

    async def _webhook(
        self,
        session: aiohttp.ClientSession,
        campaign: Campaign,
        delivery: Delivery,
        rendered: Rendered,
    ) -> Outcome:
        if self.webhook_secret is None:  # pragma: no cover - the channel is off without it
            raise _ChannelStop("no webhook secret configured")
        body = webhook_body(campaign, delivery, rendered)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            IDEMPOTENCY_HEADER: delivery.idempotency_key,
            SIGNATURE_HEADER: signature_header(self.webhook_secret, body),
            "X-Regiongate-Event": "notice",
        }
        try:
            async with session.post(
                delivery.recipient, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                text = (await response.content.read(2000)).decode("utf-8", "replace")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            what = str(exc) or type(exc).__name__
            return Outcome(Status.FAILED, f"webhook: {what}"[:1000], retry=True)
        detail = f"HTTP {status}" + (f": {' '.join(text.split())[:300]}" if text.strip() else "")
        if 200 <= status < 300:
            return Outcome(Status.DELIVERED, detail)
        if status >= 500 or status in _RETRY_HTTP:
            return Outcome(Status.FAILED, detail, retry=True)
        return Outcome(Status.FAILED, detail)
