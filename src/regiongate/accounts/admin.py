"""The admin API: organisations, keys, payments, state changes and the audit log over HTTP.

``admin_app(store, rules, hasher, tokens)`` is a Starlette application meant to be mounted at
``/admin/api`` (its routes are relative). JSON in and out; errors are
``{"error": {"message", "type", "param", "code"}}`` with a 4xx status for anything a client
sent, 503 (``store_unavailable``) when the store does not answer.

Every request needs ``Authorization: Bearer TOKEN`` (see :mod:`regiongate.accounts.tokens`);
roles are viewer (reads) < operator (changes) < admin (forced state changes). Each change is
made by a store method that writes its audit entry in the same transaction, with the actor
``admin:<token name>``. An API key sent to register it is reduced to its key id at once; it is
never stored, logged or returned.

``GET /openapi.json`` describes every route (OpenAPI 3.1, bodies as JSON Schema from msgspec);
the route table below is what both the router and that document are built from.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

import msgspec
import pycountry
from msgspec import Meta
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from regiongate import __version__
from regiongate.accounts.identity import KeyHasher
from regiongate.accounts.model import (
    REVIEW_DECISIONS,
    AuditEntry,
    Key,
    Org,
    Payment,
    Review,
    State,
    TransitionError,
    valid_id,
)
from regiongate.accounts.service import ReviewClosed, RulesEngine, decide_review
from regiongate.accounts.store.base import Store, StoreUnavailable
from regiongate.accounts.tokens import Role, Tokens, new_token
from regiongate.config import AdminSettings
from regiongate.paths import data_home

__all__ = ["MOUNT", "Role", "Tokens", "admin_app", "new_token", "tokens_from_settings"]

log = logging.getLogger("regiongate.admin")

MOUNT: Final = "/admin/api"
MAX_BODY: Final = 64 * 1024
MAX_LIMIT: Final = 1000
MAX_OFFSET: Final = 1_000_000_000
MAX_SEQ: Final = 2**62
RECENT_AUDIT: Final = 50
_LATEST: Final = 4_102_444_800.0  # 2100-01-01: later times are mistakes (milliseconds?)

T = TypeVar("T")

# --- request bodies ------------------------------------------------------------------------------

_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
Id = Annotated[
    str,
    Meta(min_length=1, max_length=200, pattern=_ID_PATTERN, description="1-200 printable chars"),
]
Text200 = Annotated[str, Meta(max_length=200, pattern=_NO_CONTROL)]


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class OrgUpdate(_Body):
    """Create the organisation if it does not exist; set what is given."""

    name: Text200 | None = None
    email: (
        Annotated[
            str,
            Meta(max_length=254, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$"),
        ]
        | None
    ) = None


class KeyCreate(_Body):
    """Exactly one of ``key`` (the API key; only its key id is kept) or ``key_id``."""

    key: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=512,
                description="the raw API key: hashed to its key id at once, never stored",
            ),
        ]
        | None
    ) = None
    key_id: (
        Annotated[
            str,
            Meta(pattern=r"^kid_[0-9a-f]{32}$", description="a key id computed elsewhere"),
        ]
        | None
    ) = None
    label: Text200 | None = None


class PaymentCreate(_Body):
    """A payment; its card or billing country may change the organisation's state."""

    id: Id
    org: Id
    at: (
        Annotated[float, Meta(ge=0, le=_LATEST, description="POSIX seconds")]
        | Annotated[str, Meta(min_length=1, max_length=64, description="ISO 8601")]
        | None
    ) = None
    card_country: (
        Annotated[str, Meta(pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2")] | None
    ) = None
    billing_country: (
        Annotated[
            str,
            Meta(
                pattern=r"^[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?$",
                description="ISO 3166-1 alpha-2 or ISO 3166-2",
            ),
        ]
        | None
    ) = None
    method: Annotated[str, Meta(min_length=1, max_length=32, pattern=_ID_PATTERN)] = "card"
    currency: Annotated[str, Meta(pattern=r"^[A-Za-z]{3}$")] | None = None
    amount: Annotated[float, Meta(ge=0, le=1e15)] | None = None


class ReviewDecision(_Body):
    """Close a review: ``dismissed`` (nothing to do), ``warned`` or ``suspended`` (the
    organisation's state changes accordingly, where its current state allows)."""

    decision: Annotated[str, Meta(pattern="^(dismissed|warned|suspended)$")]
    note: Annotated[str, Meta(max_length=2000, pattern=_NO_CONTROL)] = ""


class StateChange(_Body):
    """Move the organisation to ``state``; ``force`` (admin only) skips the transition rules."""

    state: State
    reason: Annotated[str, Meta(min_length=1, max_length=2000, pattern=_NO_CONTROL)]
    evidence: Annotated[list[Id], Meta(max_length=100)] = []
    force: bool = False


# --- responses -----------------------------------------------------------------------------------


class OrgRecord(msgspec.Struct, kw_only=True):
    id: str
    name: str
    email: str | None
    state: State
    state_since: float
    version: int


class KeyRecord(msgspec.Struct, kw_only=True):
    key_id: str
    org: str
    label: str
    created: float
    revoked: bool


class AuditRecord(msgspec.Struct, kw_only=True):
    seq: int
    at: float
    org: str | None
    actor: str
    action: str
    reason: str
    from_state: str | None
    to_state: str | None
    evidence: list[str]
    detail: dict[str, Any]


class OrgList(msgspec.Struct, kw_only=True):
    orgs: list[OrgRecord]
    limit: int
    offset: int


class OrgDetail(msgspec.Struct, kw_only=True):
    org: OrgRecord
    keys: list[KeyRecord]
    audit: list[AuditRecord]  # the newest entries, oldest first


class AuditList(msgspec.Struct, kw_only=True):
    entries: list[AuditRecord]
    next: int  # pass as ``since`` for the following page


class EventCount(msgspec.Struct, kw_only=True):
    org: str | None
    count: int


class PaymentResult(msgspec.Struct, kw_only=True):
    new: bool
    state_changed: OrgRecord | None


class ReviewRecord(msgspec.Struct, kw_only=True):
    id: str
    org: str
    opened_at: float
    score: float
    explanation: dict[str, Any]
    status: str
    updated: float
    closed_at: float | None
    closed_by: str | None
    note: str


class ReviewList(msgspec.Struct, kw_only=True):
    reviews: list[ReviewRecord]


class ReviewOutcome(msgspec.Struct, kw_only=True):
    review: ReviewRecord
    state_changed: OrgRecord | None


class SignalRecord(msgspec.Struct, kw_only=True):
    signal: str
    value: float
    weight: float
    points: float
    detail: str


class ScoreRecord(msgspec.Struct, kw_only=True):
    """An organisation's circumvention score over this gateway's window, explained."""

    org: str
    score: float
    requests: int
    window: float
    signals: list[SignalRecord]
    explanation: str
    evidence: list[str]
    thresholds: dict[str, float]


class ErrorDetail(msgspec.Struct, kw_only=True):
    message: str
    type: str
    param: str | None
    code: str


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail


def _org(o: Org) -> OrgRecord:
    return OrgRecord(
        id=o.id,
        name=o.name,
        email=o.email,
        state=o.state,
        state_since=o.state_since,
        version=o.version,
    )


def _key(k: Key) -> KeyRecord:
    return KeyRecord(
        key_id=k.key_id, org=k.org, label=k.label, created=k.created, revoked=k.revoked
    )


def _review(r: Review) -> ReviewRecord:
    return ReviewRecord(
        id=r.id,
        org=r.org,
        opened_at=r.opened_at,
        score=r.score,
        explanation=r.explanation,
        status=r.status,
        updated=r.updated,
        closed_at=r.closed_at,
        closed_by=r.closed_by,
        note=r.note,
    )


def _entry(a: AuditEntry) -> AuditRecord:
    return AuditRecord(
        seq=a.seq,
        at=a.at,
        org=a.org,
        actor=a.actor,
        action=a.action,
        reason=a.reason,
        from_state=a.from_state,
        to_state=a.to_state,
        evidence=list(a.evidence),
        detail=a.detail,
    )


# --- errors --------------------------------------------------------------------------------------

_TYPES: Final[dict[int, str]] = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """A response that says what went wrong; raised by handlers, sent by the endpoint."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body = ErrorBody(
            error=ErrorDetail(
                message=self.message,
                type=_TYPES.get(self.status, "invalid_request_error"),
                param=self.param,
                code=self.code,
            )
        )
        return _json(body, self.status, headers=self.headers)


def _json(body: Any, status: int = 200, *, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        msgspec.json.encode(body), status, headers=headers, media_type="application/json"
    )


def _unavailable() -> ApiError:
    return ApiError(
        503,
        "the account store is unavailable; try again shortly",
        "store_unavailable",
        headers={"Retry-After": "5"},
    )


# --- authentication ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"admin:{self.name}"


_CHALLENGE: Final = 'Bearer realm="regiongate-admin"'


def _authenticate(request: Request, tokens: Tokens, needed: Role) -> Caller:
    header = request.headers.get("authorization")
    who = tokens.check(header)
    if who is None:
        if header:
            raise ApiError(
                401,
                "the admin token is not valid",
                "invalid_token",
                headers={"WWW-Authenticate": _CHALLENGE + ', error="invalid_token"'},
            )
        raise ApiError(
            401,
            "an admin token is required: Authorization: Bearer TOKEN",
            "missing_token",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    name, role = who
    if not role.allows(needed):
        raise ApiError(
            403, f"token {name!r} has the role {role}; this needs {needed}", "insufficient_role"
        )
    return Caller(name, role)


# --- request parsing -----------------------------------------------------------------------------

_BAD_CHARS: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_DIGITS: Final = re.compile(r"[0-9]{1,19}")
B = TypeVar("B", bound=msgspec.Struct)


async def _body(request: Request, kind: type[B]) -> B:
    ctype = request.headers.get("content-type")
    if ctype is not None:
        media = ctype.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise ApiError(415, "send the body as application/json", "unsupported_media_type")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, f"the body is larger than {MAX_BODY} bytes", "body_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"the body is larger than {MAX_BODY} bytes", "body_too_large")
        chunks.append(chunk)
    data = b"".join(chunks)
    try:
        value = msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        # msgspec names the path and the expectation, never the offending value.
        text = str(exc)
        param = text.rsplit(" - at `$.", 1)[1].rstrip("`") if " - at `$." in text else None
        if param is not None and param.split(".", 1)[0].split("[", 1)[0] == "key":
            text = "key must be a string of 1-512 characters"  # never echo any part of a key
        raise ApiError(422, text, "invalid_body", param=param) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON (UTF-8)", "invalid_json") from None
    for name in kind.__struct_fields__:
        _check_text(getattr(value, name), name)
    return value


def _check_text(value: object, param: str) -> None:
    """No control characters or lone surrogates in any text (a database would choke)."""
    if isinstance(value, str):
        if _BAD_CHARS.search(value):
            raise ApiError(422, f"{param} contains control characters", "invalid_body", param=param)
    elif isinstance(value, list):
        for item in value:
            _check_text(item, param)


def _check_id(value: str, param: str, status: int = 400) -> str:
    if not valid_id(value):
        raise ApiError(
            status,
            f"{param} must be 1-200 printable characters",
            "invalid_parameter" if status == 400 else "invalid_body",
            param=param,
        )
    return value


def _path(request: Request, name: str) -> str:
    return _check_id(str(request.path_params[name]), name)


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise ApiError(
            400, f"{name} must be an integer from {low} to {high}", "invalid_parameter", param=name
        )
    return int(raw)


def _org_query(request: Request) -> str | None:
    raw = request.query_params.get("org")
    return None if raw is None else _check_id(raw, "org")


@lru_cache(maxsize=1)
def _territories() -> tuple[frozenset[str], frozenset[str]]:
    countries = {c.alpha_2 for c in pycountry.countries} | {"XK"}
    subdivisions = {s.code for s in pycountry.subdivisions}
    return frozenset(countries), frozenset(subdivisions)


def _territory(value: str | None, param: str, *, subdivisions: bool) -> str | None:
    if value is None:
        return None
    code = value.strip().upper()
    countries, subs = _territories()
    if code in countries or (subdivisions and code in subs):
        return code
    raise ApiError(
        422, f"{param} {code!r} is not an ISO 3166 territory code", "invalid_body", param=param
    )


def _timestamp(value: float | str | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, str):
        text = value.strip()
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ApiError(
                422, "at must be ISO 8601 or POSIX seconds", "invalid_body", param="at"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        try:
            seconds = when.timestamp()
        except (OverflowError, ValueError):
            seconds = math.inf
    else:
        seconds = float(value)
    if not 0 <= seconds <= _LATEST:
        raise ApiError(422, "at must be between 1970 and 2100", "invalid_body", param="at")
    return seconds


# --- handlers ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    store: Store
    rules: RulesEngine
    hasher: KeyHasher
    tokens: Tokens
    openapi: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[_Context, Request, Caller], Awaitable[Response]]


async def _call(fn: Callable[[], T]) -> T:
    return await run_in_threadpool(fn)


async def get_openapi(ctx: _Context, request: Request, caller: Caller) -> Response:
    doc = ctx.openapi
    root = request.scope.get("root_path") or ""
    if root:
        doc = {**doc, "servers": [{"url": root}]}
    return _json(doc)


async def list_orgs(ctx: _Context, request: Request, caller: Caller) -> Response:
    raw_state = request.query_params.get("state")
    state: State | None = None
    if raw_state is not None:
        try:
            state = State(raw_state)
        except ValueError:
            raise ApiError(
                400,
                f"state must be one of {', '.join(s.value for s in State)}",
                "invalid_parameter",
                param="state",
            ) from None
    limit = _int_query(request, "limit", 100, 1, MAX_LIMIT)
    offset = _int_query(request, "offset", 0, 0, MAX_OFFSET)
    orgs = await _call(lambda: ctx.store.list_orgs(state=state, limit=limit, offset=offset))
    return _json(OrgList(orgs=[_org(o) for o in orgs], limit=limit, offset=offset))


def _recent_audit(store: Store, org: str, n: int) -> list[AuditEntry]:
    """The newest ``n`` audit entries of ``org``, oldest first (the store reads forward only:
    look back over a window of sequence numbers that grows until it holds enough)."""
    last = store.last_seq()
    window = 1024
    while True:
        since = max(0, last - window)
        found: list[AuditEntry] = []
        cursor = since
        while True:
            page = store.audit(org=org, since_seq=cursor, limit=1000)
            found = (found + page)[-n:]
            if len(page) < 1000:
                break
            cursor = page[-1].seq
        if len(found) >= n or since == 0:
            return found
        window *= 16


async def get_org(ctx: _Context, request: Request, caller: Caller) -> Response:
    org_id = _path(request, "org_id")

    def read() -> OrgDetail | None:
        org = ctx.store.get_org(org_id)
        if org is None:
            return None
        keys = ctx.store.list_keys(org_id)
        recent = _recent_audit(ctx.store, org_id, RECENT_AUDIT)
        return OrgDetail(
            org=_org(org), keys=[_key(k) for k in keys], audit=[_entry(a) for a in recent]
        )

    detail = await _call(read)
    if detail is None:
        raise _no_org(org_id)
    return _json(detail)


def _no_org(org_id: str) -> ApiError:
    return ApiError(404, f"no organisation {org_id!r}", "org_not_found", param="org_id")


async def put_org(ctx: _Context, request: Request, caller: Caller) -> Response:
    org_id = _path(request, "org_id")
    body = await _body(request, OrgUpdate)

    def write() -> tuple[bool, Org]:
        existed = ctx.store.get_org(org_id) is not None
        org = ctx.store.upsert_org(org_id, name=body.name, email=body.email, actor=caller.actor)
        return existed, org

    existed, org = await _call(write)
    log.info("%s: org %s %s", caller.actor, org_id, "updated" if existed else "created")
    return _json(_org(org), 200 if existed else 201)


async def add_key(ctx: _Context, request: Request, caller: Caller) -> Response:
    org_id = _path(request, "org_id")
    body = await _body(request, KeyCreate)
    if (body.key is None) == (body.key_id is None):
        raise ApiError(422, "send exactly one of key and key_id", "invalid_body", param="key")
    key_id = body.key_id if body.key_id is not None else ctx.hasher.key_id(body.key or "")

    def write() -> tuple[str, Key | None]:
        if ctx.store.get_org(org_id) is None:
            return "no_org", None
        existing = ctx.store.get_key(key_id)
        if existing is not None and existing.org != org_id:
            return "conflict", None
        label = body.label if body.label is not None else (existing.label if existing else "")
        key = ctx.store.add_key(Key(key_id, org_id, label), actor=caller.actor)
        return ("new" if existing is None else "again"), key

    try:
        outcome, key = await _call(write)
    except ValueError:  # the org vanished or the key moved between the checks and the write
        raise ApiError(409, "the key or organisation changed; retry", "key_conflict") from None
    if outcome == "no_org":
        raise _no_org(org_id)
    if outcome == "conflict" or key is None:
        raise ApiError(
            409, "this key is registered to another organisation", "key_conflict", param="key"
        )
    log.info("%s: key %s added to %s", caller.actor, key_id, org_id)
    return _json(_key(key), 201 if outcome == "new" else 200)


async def revoke_key(ctx: _Context, request: Request, caller: Caller) -> Response:
    key_id = _path(request, "key_id")

    def write() -> tuple[Key | None, bool]:
        key = ctx.store.get_key(key_id)
        if key is None or key.revoked:
            return key, False
        changed = ctx.store.revoke_key(key_id, actor=caller.actor)
        return ctx.store.get_key(key_id), changed

    key, changed = await _call(write)
    if key is None:
        raise ApiError(404, "no such key", "key_not_found", param="key_id")
    if changed:
        log.info("%s: key %s revoked", caller.actor, key_id)
    return _json(_key(key))


async def add_payment(ctx: _Context, request: Request, caller: Caller) -> Response:
    body = await _body(request, PaymentCreate)
    _check_id(body.id, "id", 422)
    _check_id(body.org, "org", 422)
    payment = Payment(
        id=body.id,
        org=body.org,
        at=_timestamp(body.at, ctx.rules.clock()),
        card_country=_territory(body.card_country, "card_country", subdivisions=False),
        billing_country=_territory(body.billing_country, "billing_country", subdivisions=True),
        method=body.method,
        currency=body.currency.upper() if body.currency else None,
        amount=body.amount,
    )
    new, changed = await _call(lambda: ctx.rules.on_payment(payment, actor=caller.actor))
    if changed is not None:
        log.warning(
            "%s: payment %s moved %s to %s", caller.actor, payment.id, payment.org, changed.state
        )
    result = PaymentResult(new=new, state_changed=None if changed is None else _org(changed))
    return _json(result, 201 if new else 200)


async def change_state(ctx: _Context, request: Request, caller: Caller) -> Response:
    org_id = _path(request, "org_id")
    body = await _body(request, StateChange)
    if not body.reason.strip():
        raise ApiError(422, "reason must not be blank", "invalid_body", param="reason")
    if body.force and not caller.role.allows(Role.ADMIN):
        raise ApiError(
            403,
            f"force needs an admin token; {caller.name!r} is {caller.role}",
            "insufficient_role",
            param="force",
        )

    def write() -> tuple[Org | None, Org | None]:
        before = ctx.store.get_org(org_id)
        if before is None:
            return None, None
        after = ctx.store.transition(
            org_id,
            body.state,
            actor=caller.actor,
            reason=body.reason.strip(),
            evidence=body.evidence,
            force=body.force,
        )
        return before, after

    try:
        before, after = await _call(write)
    except TransitionError as exc:
        raise ApiError(409, str(exc), "transition_not_allowed", param="state") from None
    if before is None:
        raise _no_org(org_id)
    if after is None:
        raise ApiError(
            409, f"{org_id} is already {body.state}; nothing changed", "no_change", param="state"
        )
    forced = " (forced)" if body.force else ""
    log.warning(
        "%s: %s %s → %s%s: %s", caller.actor, org_id, before.state, after.state, forced, body.reason
    )
    return _json(_org(after))


async def get_audit(ctx: _Context, request: Request, caller: Caller) -> Response:
    org = _org_query(request)
    since = _int_query(request, "since", 0, 0, MAX_SEQ)
    limit = _int_query(request, "limit", 100, 1, MAX_LIMIT)
    entries = await _call(lambda: ctx.store.audit(org=org, since_seq=since, limit=limit))
    following = entries[-1].seq if entries else since
    return _json(AuditList(entries=[_entry(e) for e in entries], next=following))


async def count_events(ctx: _Context, request: Request, caller: Caller) -> Response:
    org = _org_query(request)
    n = await _call(lambda: ctx.store.count_events(org))
    return _json(EventCount(org=org, count=n))


_REVIEW_STATUSES: Final = ("open", *REVIEW_DECISIONS, "all")


async def list_reviews(ctx: _Context, request: Request, caller: Caller) -> Response:
    status = request.query_params.get("status", "open")
    if status not in _REVIEW_STATUSES:
        raise ApiError(
            400, f"status must be one of {', '.join(_REVIEW_STATUSES)}", "bad_param", param="status"
        )
    org = _org_query(request)
    limit = _int_query(request, "limit", 100, 1, MAX_LIMIT)
    found = await _call(
        lambda: ctx.store.list_reviews(
            status=None if status == "all" else status, org=org, limit=limit
        )
    )
    return _json(ReviewList(reviews=[_review(r) for r in found]))


def _no_review(review_id: str) -> ApiError:
    return ApiError(404, f"no review {review_id!r}", "not_found", param="review_id")


async def get_review(ctx: _Context, request: Request, caller: Caller) -> Response:
    review_id = _path(request, "review_id")
    found = await _call(lambda: ctx.store.get_review(review_id))
    if found is None:
        raise _no_review(review_id)
    return _json(_review(found))


async def close_review(ctx: _Context, request: Request, caller: Caller) -> Response:
    review_id = _path(request, "review_id")
    body = await _body(request, ReviewDecision)
    note = body.note.strip()
    try:
        outcome = await _call(
            lambda: decide_review(
                ctx.store, review_id, body.decision, actor=caller.actor, note=note
            )
        )
    except ReviewClosed as exc:
        raise ApiError(409, str(exc), "review_closed", param="review_id") from None
    if outcome is None:
        raise _no_review(review_id)
    review, changed = outcome
    log.warning("%s: review %s of %s: %s", caller.actor, review_id, review.org, body.decision)
    result = ReviewOutcome(
        review=_review(review), state_changed=None if changed is None else _org(changed)
    )
    return _json(result)


async def get_signals(ctx: _Context, request: Request, caller: Caller) -> Response:
    org_id = _path(request, "org_id")
    policy = ctx.rules.policy()
    result = await _call(lambda: ctx.rules.circumvention.score(org_id, policy))
    if result is None:
        raise ApiError(
            404,
            f"{org_id} has no traffic in the window this gateway has seen",
            "no_signals",
            param="org_id",
        )
    rules = policy.accounts.circumvention
    data = result.to_dict()
    return _json(
        ScoreRecord(
            org=result.org,
            score=data["score"],
            requests=result.requests,
            window=result.window,
            signals=[SignalRecord(**c) for c in data["signals"]],
            explanation=data["explanation"],
            evidence=data["evidence"],
            thresholds={
                "review": rules.review,
                "suspend": rules.suspend,
                "min_requests": float(rules.min_requests),
            },
        )
    )


# --- the route table (the router and the OpenAPI document are both built from it) ----------------


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # path | query
    schema: dict[str, Any]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    role: Role
    handler: Handler
    summary: str
    ok: int
    response: type[msgspec.Struct] | None  # None: any JSON object (the OpenAPI document)
    body: type[msgspec.Struct] | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    also: tuple[int, ...] = ()  # other success statuses (same response body)


_ID_SCHEMA: Final[dict[str, Any]] = {"type": "string", "minLength": 1, "maxLength": 200}
ORG_ID = Param("org_id", "path", _ID_SCHEMA, "organisation id")
KEY_ID = Param("key_id", "path", _ID_SCHEMA, "key id (kid_...)")
ORG_Q = Param("org", "query", _ID_SCHEMA, "only this organisation")
REVIEW_ID = Param("review_id", "path", _ID_SCHEMA, "review id (rv_...)")


def _limit(default: int) -> Param:
    return Param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": default},
    )


_BODY_ERRORS: Final = (400, 413, 415, 422)

OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation("GET", "/openapi.json", Role.VIEWER, get_openapi, "This document", 200, None),
    Operation(
        "GET", "/orgs", Role.VIEWER, list_orgs, "List organisations", 200, OrgList,
        params=(
            Param("state", "query", {"type": "string", "enum": [s.value for s in State]},
                  "only organisations in this state"),
            _limit(100),
            Param("offset", "query",
                  {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}),
        ),
        errors=(400,),
    ),
    Operation(
        "GET", "/orgs/{org_id}", Role.VIEWER, get_org,
        f"An organisation, its keys and its last {RECENT_AUDIT} audit entries", 200, OrgDetail,
        params=(ORG_ID,), errors=(400, 404),
    ),
    Operation(
        "PUT", "/orgs/{org_id}", Role.OPERATOR, put_org,
        "Create or update an organisation (201 when created)", 200, OrgRecord,
        body=OrgUpdate, params=(ORG_ID,), errors=_BODY_ERRORS, also=(201,),
    ),
    Operation(
        "POST", "/orgs/{org_id}/keys", Role.OPERATOR, add_key,
        "Register an API key (by the key or its key id); 200 when it was registered already",
        201, KeyRecord, body=KeyCreate, params=(ORG_ID,), errors=(*_BODY_ERRORS, 404, 409),
        also=(200,),
    ),
    Operation(
        "DELETE", "/keys/{key_id}", Role.OPERATOR, revoke_key, "Revoke an API key", 200,
        KeyRecord, params=(KEY_ID,), errors=(400, 404),
    ),
    Operation(
        "POST", "/payments", Role.OPERATOR, add_payment,
        "Record a payment and apply the payments rule (201 when new, 200 when a replay)",
        201, PaymentResult, body=PaymentCreate, errors=_BODY_ERRORS, also=(200,),
    ),
    Operation(
        "POST", "/orgs/{org_id}/state", Role.OPERATOR, change_state,
        "Change an organisation's state (force: admin only)", 200, OrgRecord,
        body=StateChange, params=(ORG_ID,), errors=(*_BODY_ERRORS, 404, 409),
    ),
    Operation(
        "GET", "/audit", Role.VIEWER, get_audit, "The audit log, oldest first", 200, AuditList,
        params=(
            ORG_Q,
            Param("since", "query",
                  {"type": "integer", "minimum": 0, "maximum": MAX_SEQ, "default": 0},
                  "entries after this sequence number (the previous page's next)"),
            _limit(100),
        ),
        errors=(400,),
    ),
    Operation(
        "GET", "/events/count", Role.VIEWER, count_events, "How many events were recorded",
        200, EventCount, params=(ORG_Q,), errors=(400,),
    ),
    Operation(
        "GET", "/reviews", Role.VIEWER, list_reviews,
        "The review queue: organisations the circumvention score flagged, newest first",
        200, ReviewList,
        params=(
            Param("status", "query", {"type": "string", "enum": list(_REVIEW_STATUSES),
                                      "default": "open"}, "open (default), a decision, or all"),
            ORG_Q,
            _limit(100),
        ),
        errors=(400,),
    ),
    Operation(
        "GET", "/reviews/{review_id}", Role.VIEWER, get_review,
        "A review, with the explained score that opened it", 200, ReviewRecord,
        params=(REVIEW_ID,), errors=(400, 404),
    ),
    Operation(
        "POST", "/reviews/{review_id}", Role.OPERATOR, close_review,
        "Decide a review: dismissed, warned or suspended (the state changes accordingly)",
        200, ReviewOutcome, body=ReviewDecision, params=(REVIEW_ID,),
        errors=(*_BODY_ERRORS, 404, 409),
    ),
    Operation(
        "GET", "/orgs/{org_id}/signals", Role.VIEWER, get_signals,
        "An organisation's circumvention score now, over this gateway's window, explained",
        200, ScoreRecord, params=(ORG_ID,), errors=(400, 404),
    ),
)  # fmt: skip

_DESCRIPTIONS: Final[dict[int, str]] = {
    200: "OK",
    201: "Created",
    400: "Bad request (malformed JSON or a bad parameter)",
    401: "Missing or invalid token",
    403: "The token's role does not allow this",
    404: "Not found",
    409: "Conflict",
    413: "Body too large",
    415: "Body is not JSON",
    422: "Body does not match the schema",
    503: "The account store is unavailable",
}


def openapi_document(operations: tuple[Operation, ...] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``."""
    structs: list[type[msgspec.Struct]] = [ErrorBody]
    for op in operations:
        structs += [t for t in (op.body, op.response) if t is not None and t not in structs]
    _, components = msgspec.json.schema_components(
        structs, ref_template="#/components/schemas/{name}"
    )

    def ref(t: type[msgspec.Struct]) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{t.__name__}"}

    def content(schema: dict[str, Any]) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        body_schema = ref(op.response) if op.response is not None else {"type": "object"}
        responses: dict[str, Any] = {
            str(s): {"description": _DESCRIPTIONS[s], "content": content(body_schema)}
            for s in (op.ok, *op.also)
        }
        for status in sorted({*op.errors, 401, 403, 503}):
            responses[str(status)] = {
                "description": _DESCRIPTIONS[status],
                "content": content(ref(ErrorBody)),
            }
        spec: dict[str, Any] = {
            "operationId": op.handler.__name__,
            "summary": op.summary,
            "description": f"Needs a {op.role} token.",
            "x-required-role": str(op.role),
            "responses": responses,
        }
        if op.params:
            spec["parameters"] = [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.where == "path",
                    "description": p.description,
                    "schema": p.schema,
                }
                for p in op.params
            ]
        if op.body is not None:
            spec["requestBody"] = {"required": True, "content": content(ref(op.body))}
        paths.setdefault(op.path, {})[op.method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "regiongate admin API",
            "version": __version__,
            "description": (
                "Organisations, API keys, payments, account state and the audit log. "
                "Every change is audited with the actor admin:<token name>."
            ),
        },
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


# --- the application -----------------------------------------------------------------------------


def _endpoint(ctx: _Context, op: Operation) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            caller = _authenticate(request, ctx.tokens, op.role)
            return await op.handler(ctx, request, caller)
        except ApiError as exc:
            return exc.response()
        except StoreUnavailable as exc:
            log.warning("admin API %s %s: %s", op.method, op.path, exc)
            return _unavailable().response()

    endpoint.__name__ = op.handler.__name__
    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        return await _server_error(request, exc)
    codes = {404: "not_found", 405: "method_not_allowed"}
    error = ApiError(
        exc.status_code,
        str(exc.detail),
        codes.get(exc.status_code, "http_error"),
        headers=exc.headers,
    )
    return error.response()


async def _server_error(request: Request, exc: Exception) -> Response:
    return ApiError(500, "internal error; see the gateway log", "internal_error").response()


def admin_app(store: Store, rules: RulesEngine, hasher: KeyHasher, tokens: Tokens) -> Starlette:
    """The admin API (mount it at :data:`MOUNT`, ``/admin/api``)."""
    ctx = _Context(store, rules, hasher, tokens, openapi_document())
    routes = [
        Route(op.path, _endpoint(ctx, op), methods=[op.method], name=op.handler.__name__)
        for op in OPERATIONS
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )


def tokens_from_settings(settings: AdminSettings) -> Tokens:
    """The tokens file of ``[admin] tokens_file`` (default ``$REGIONGATE_HOME/admin-tokens.toml``).

    Raises ``ConfigError`` naming the file when it is missing or malformed.
    """
    path = Path(settings.tokens_file) if settings.tokens_file else data_home() / "admin-tokens.toml"
    return Tokens.load(path.expanduser())
