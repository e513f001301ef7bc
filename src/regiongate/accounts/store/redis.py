"""The Redis store: everything in one Redis database, under one key prefix.

Every mutation is one Lua script, so it is atomic: the checks, the change, the audit entry
(its ``seq`` allocated by ``INCR`` inside the same script) and the ``PUBLISH`` of that seq on
``<prefix>changes`` happen together or not at all. Scripts validate before they write, since
Redis does not roll a script back when it fails halfway. Reads that need several commands
run in a ``MULTI``/``EXEC`` pipeline (one consistent snapshot) or rely on the log being
append-only.

Key layout (``P`` is the prefix; names that end in an id are the id verbatim)::

    P schema                    string  schema version ("1")
    P org:<org>                 hash    name, email (absent: None), state, since, version
    P orgs                      zset    every org id, score 0 (lexical order = ORDER BY id)
    P state:<state>             zset    org ids in that state, score 0 (refused_orgs, filters)
    P key:<key_id>              hash    org, label, created, revoked ("0"/"1")
    P keys                      zset    "<org>\\0<key_id>", score 0 (ORDER BY org, key_id)
    P keyorgs                   hash    key_id -> org, keys not revoked only
    P events                    set     every event id (dedupe; SCARD counts them)
    P evcount                   hash    org -> number of events
    P strikes:<org>             zset    strike event ids scored by ``at``
    P payment:<payment id>      string  JSON of Payment.to_dict() (SET NX dedupes)
    P payments:<org>            zset    payment ids scored by ``at``
    P seq                       string  last audit seq (INCR)
    P audit                     hash    seq -> JSON audit entry (without seq)
    P audit:all                 zset    every seq, score seq
    P audit:org:<org>           zset    the org's seqs, score seq
    P changes                   zset    seqs of state / key.add / key.revoke, score seq
    P changes (channel)         pub/sub each change-feed seq as it is appended
    P review:<review id>        hash    org, opened_at, score, explanation (JSON), status,
                                        updated, note; closed_at, closed_by once closed
    P reviews                   zset    every review id scored by opened_at
    P reviews:status:<status>   zset    the review ids in that status, scored by opened_at
    P reviews:org:<org>         zset    the org's review ids scored by opened_at
    P openreviews               hash    org -> its open review id (at most one per org)

Namespaces end in ":" and the fixed names never start with one of them, so no id can make
two keys collide.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Final
from urllib.parse import urlsplit

import redis
from redis import exceptions as rx
from redis.backoff import ExponentialBackoff
from redis.client import PubSub
from redis.retry import Retry

from regiongate.accounts.model import (
    ALLOWED,
    AuditEntry,
    Event,
    Key,
    Org,
    Payment,
    Review,
    State,
    TransitionError,
    new_id,
)
from regiongate.accounts.store.base import (
    StoreUnavailable,
    check_close,
    check_id,
    check_review_status,
    explanation_json,
    finite,
)

__all__ = ["RedisStore"]

SCHEMA_VERSION: Final = 1

# What "cannot be reached" looks like (BusyLoadingError and AuthenticationError are
# ConnectionErrors; a read-only replica after a failover cannot take writes either).
_UNAVAILABLE: Final = (rx.ConnectionError, rx.TimeoutError, rx.ReadOnlyError)

_REFUSED: Final = tuple(str(s) for s in State if s.refused)
_EVENT_SLICE: Final = 5000  # events per add_events script call

# --- Lua ----------------------------------------------------------------------------------------
# ARGV[1] is always the key prefix. Audit entries arrive as complete JSON built by Python
# (json.dumps, so floats keep full precision); the scripts only file them under a new seq.

_LUA_COMMON = """
local P = ARGV[1]

local function audit(org, entry, change)
  local seq = redis.call('INCR', P .. 'seq')
  redis.call('HSET', P .. 'audit', seq, entry)
  redis.call('ZADD', P .. 'audit:all', seq, seq)
  redis.call('ZADD', P .. 'audit:org:' .. org, seq, seq)
  if change then
    redis.call('ZADD', P .. 'changes', seq, seq)
    redis.call('PUBLISH', P .. 'changes', seq)
  end
  return seq
end

local function ensure_org(org, create_entry)
  local k = P .. 'org:' .. org
  if redis.call('EXISTS', k) == 0 then
    redis.call('HSET', k, 'name', '', 'state', 'active', 'since', '0', 'version', '0')
    redis.call('ZADD', P .. 'orgs', 0, org)
    redis.call('ZADD', P .. 'state:active', 0, org)
    audit(org, create_entry, false)
  end
  return k
end
"""

# ARGV: P, org, org.create entry, org.update entry, field, value, ...
_LUA_UPSERT_ORG = (
    _LUA_COMMON
    + """
local k = ensure_org(ARGV[2], ARGV[3])
if #ARGV > 4 then
  redis.call('HSET', k, unpack(ARGV, 5))
  audit(ARGV[2], ARGV[4], false)
end
return redis.call('HGETALL', k)
"""
)

# ARGV: P, key_id, org, label, created, key.add entry
_LUA_ADD_KEY = (
    _LUA_COMMON
    + """
local kid, org = ARGV[2], ARGV[3]
if redis.call('EXISTS', P .. 'org:' .. org) == 0 then return {'noorg'} end
local kk = P .. 'key:' .. kid
local cur = redis.call('HMGET', kk, 'org', 'created')
local created = ARGV[5]
if cur[1] then
  if cur[1] ~= org then return {'other'} end
  redis.call('HSET', kk, 'label', ARGV[4], 'revoked', '0')
  created = cur[2]
else
  redis.call('HSET', kk, 'org', org, 'label', ARGV[4], 'created', created, 'revoked', '0')
  redis.call('ZADD', P .. 'keys', 0, org .. '\\0' .. kid)
end
redis.call('HSET', P .. 'keyorgs', kid, org)
audit(org, ARGV[6], true)
return {'ok', created}
"""
)

# ARGV: P, key_id, org (as read before; a key's org never changes), key.revoke entry
_LUA_REVOKE_KEY = (
    _LUA_COMMON
    + """
local kk = P .. 'key:' .. ARGV[2]
local cur = redis.call('HMGET', kk, 'org', 'revoked')
if not cur[1] or cur[2] == '1' then return 0 end
if cur[1] ~= ARGV[3] then return -1 end
redis.call('HSET', kk, 'revoked', '1')
redis.call('HDEL', P .. 'keyorgs', ARGV[2])
audit(ARGV[3], ARGV[4], true)
return 1
"""
)

# ARGV: P, org, payment id, payment JSON, at, org.create entry, payment entry
_LUA_ADD_PAYMENT = (
    _LUA_COMMON
    + """
ensure_org(ARGV[2], ARGV[6])
if not redis.call('SET', P .. 'payment:' .. ARGV[3], ARGV[4], 'NX') then return 0 end
redis.call('ZADD', P .. 'payments:' .. ARGV[2], ARGV[5], ARGV[3])
audit(ARGV[2], ARGV[7], false)
return 1
"""
)

# ARGV: P, org, to, when, states `to` may be reached from (",a,b,"), expected states
# (",a,b," or "*" for any), force ("1"/"0"), org.create entry, the state entry's JSON
# without its opening brace (the script puts "from_state" in front).
_LUA_TRANSITION = (
    _LUA_COMMON
    + """
local org, to = ARGV[2], ARGV[3]
local k = P .. 'org:' .. org
local cur = redis.call('HGET', k, 'state') or 'active'
if ARGV[6] ~= '*' and not string.find(ARGV[6], ',' .. cur .. ',', 1, true) then
  ensure_org(org, ARGV[8])
  return {'none'}
end
if cur == to then
  ensure_org(org, ARGV[8])
  return {'none'}
end
if ARGV[7] ~= '1' and not string.find(ARGV[5], ',' .. cur .. ',', 1, true) then
  return {'denied', cur}
end
ensure_org(org, ARGV[8])
local version = tonumber(redis.call('HGET', k, 'version')) + 1
redis.call('HSET', k, 'state', to, 'since', ARGV[4], 'version', version)
redis.call('ZREM', P .. 'state:' .. cur, org)
redis.call('ZADD', P .. 'state:' .. to, 0, org)
audit(org, '{"from_state":"' .. cur .. '",' .. ARGV[9], true)
local out = redis.call('HGETALL', k)
table.insert(out, 1, 'ok')
return out
"""
)

# ARGV: P, org, new review id, score, explanation JSON, when, org.create entry, review.open
# entry. Returns {1 if opened else 0, review id, the review's hash fields and values...}.
_LUA_OPEN_REVIEW = (
    _LUA_COMMON
    + """
local org, when = ARGV[2], ARGV[6]
local open = P .. 'openreviews'
local id = redis.call('HGET', open, org)
local fresh = 0
if id then
  redis.call('HSET', P .. 'review:' .. id, 'score', ARGV[4], 'explanation', ARGV[5],
    'updated', when)
else
  id, fresh = ARGV[3], 1
  ensure_org(org, ARGV[7])
  redis.call('HSET', P .. 'review:' .. id, 'org', org, 'opened_at', when, 'score', ARGV[4],
    'explanation', ARGV[5], 'status', 'open', 'updated', when, 'note', '')
  redis.call('ZADD', P .. 'reviews', when, id)
  redis.call('ZADD', P .. 'reviews:status:open', when, id)
  redis.call('ZADD', P .. 'reviews:org:' .. org, when, id)
  redis.call('HSET', open, org, id)
  audit(org, ARGV[8], false)
end
local out = redis.call('HGETALL', P .. 'review:' .. id)
table.insert(out, 1, id)
table.insert(out, 1, fresh)
return out
"""
)

# ARGV: P, review id, its org and score as read before (the entry carries the score: a
# refresh since then makes the caller read and try again), decision, when, actor, note,
# review.close entry.
_LUA_CLOSE_REVIEW = (
    _LUA_COMMON
    + """
local id, org = ARGV[2], ARGV[3]
local k = P .. 'review:' .. id
local cur = redis.call('HMGET', k, 'org', 'status', 'score', 'opened_at')
if not cur[1] or cur[2] ~= 'open' then return {'none'} end
if cur[1] ~= org or cur[3] ~= ARGV[4] then return {'stale'} end
redis.call('HSET', k, 'status', ARGV[5], 'updated', ARGV[6], 'closed_at', ARGV[6],
  'closed_by', ARGV[7], 'note', ARGV[8])
redis.call('ZREM', P .. 'reviews:status:open', id)
redis.call('ZADD', P .. 'reviews:status:' .. ARGV[5], cur[4], id)
if redis.call('HGET', P .. 'openreviews', org) == id then
  redis.call('HDEL', P .. 'openreviews', org)
end
audit(org, ARGV[9], false)
local out = redis.call('HGETALL', k)
table.insert(out, 1, 'ok')
return out
"""
)

# ARGV: P, the batch's ids joined by NUL, their orgs joined by NUL, one "1"/"0" per event
# (strike), the strike events' times joined by NUL. Four big strings instead of arguments
# per event (packing arguments is what costs most on the client), and dedupe by SMISMEMBER
# and SADD per thousand ids instead of a command per event (SMISMEMBER needs Redis 6.2).
_LUA_ADD_EVENTS = """
local P = ARGV[1]
local function split(s)
  local out, n, pos = {}, 0, 1
  while true do
    local e = string.find(s, '\\0', pos, true)
    n = n + 1
    if not e then
      out[n] = string.sub(s, pos)
      return out, n
    end
    out[n] = string.sub(s, pos, e - 1)
    pos = e + 1
  end
end
local ids, n = split(ARGV[2])
local flags = ARGV[4]
local orgs, ats -- split on the first new event only: a replay never needs them
local set = P .. 'events'
local per_org, strikes = {}, {}
local new, a = 0, 0
for c = 1, n, 1000 do
  local last = math.min(c + 999, n)
  local have = redis.call('SMISMEMBER', set, unpack(ids, c, last))
  local fresh = 0
  for j = 1, #have do
    fresh = fresh + 1 - have[j]
  end
  if fresh == 0 then
    local _, k = string.gsub(string.sub(flags, c, last), '1', '1')
    a = a + k
  else
    -- SADD adds fewer than `fresh` only if an id repeats in this chunk: then the first
    -- occurrence counts (ids repeated across chunks were added by the chunk before).
    local seen
    if redis.call('SADD', set, unpack(ids, c, last)) ~= fresh then seen = {} end
    if not orgs then
      orgs, ats = split(ARGV[3]), split(ARGV[5])
    end
    for i = c, last do
      local strike = string.byte(flags, i) == 49
      if strike then a = a + 1 end
      if have[i - c + 1] == 0 then
        local id = ids[i]
        if not seen or not seen[id] then
          if seen then seen[id] = true end
          new = new + 1
          local org = orgs[i]
          per_org[org] = (per_org[org] or 0) + 1
          if strike then
            local s = strikes[org]
            if not s then
              s = {}
              strikes[org] = s
            end
            s[#s + 1] = ats[a]
            s[#s + 1] = id
          end
        end
      end
    end
  end
end
for org, k in pairs(per_org) do
  redis.call('HINCRBY', P .. 'evcount', org, k)
end
for org, s in pairs(strikes) do
  local key = P .. 'strikes:' .. org
  for j = 1, #s, 4000 do
    redis.call('ZADD', key, unpack(s, j, math.min(j + 3999, #s)))
  end
end
return new
"""


def _safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        safe = url
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[1]
            safe = safe.replace(parts.netloc, f"{parts.username or ''}:***@{host}", 1)
        if "password=" in parts.query:
            query = "&".join(
                "password=***" if q.startswith("password=") else q for q in parts.query.split("&")
            )
            safe = safe.replace("?" + parts.query, "?" + query, 1)
        return safe
    except ValueError:
        return "<unparseable URL>"


def _entry(
    org: str,
    *,
    at: float,
    actor: str,
    action: str,
    reason: str = "",
    to_state: str | None = None,
    evidence: Iterable[str] = (),
    detail: dict[str, Any] | None = None,
) -> str:
    """An audit entry's JSON (its seq is the field it is filed under)."""
    return json.dumps(
        {
            "org": org,
            "at": at,
            "actor": actor,
            "action": action,
            "reason": reason,
            "to_state": to_state,
            "evidence": list(evidence),
            "detail": detail or {},
        },
        sort_keys=True,
    )


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def _org_from(org_id: str, h: dict[str, str]) -> Org:
    return Org(
        org_id,
        h.get("name", ""),
        h.get("email"),
        State(h.get("state", "active")),
        float(h.get("since", 0.0)),
        int(h.get("version", 0)),
    )


def _key_from(key_id: str, h: dict[str, str]) -> Key:
    return Key(key_id, h["org"], h.get("label", ""), float(h["created"]), h.get("revoked") == "1")


def _payment_from(raw: str) -> Payment:
    d = json.loads(raw)
    amount = d.get("amount")
    return Payment(
        id=str(d["id"]),
        org=str(d["org"]),
        at=float(d["at"]),
        card_country=d.get("card_country"),
        billing_country=d.get("billing_country"),
        method=str(d.get("method", "card")),
        currency=d.get("currency"),
        amount=None if amount is None else float(amount),
    )


def _audit_from(seq: int, raw: str) -> AuditEntry:
    d = json.loads(raw)
    return AuditEntry(
        seq=seq,
        at=float(d["at"]),
        org=d.get("org"),
        actor=d["actor"],
        action=d["action"],
        reason=d.get("reason", ""),
        from_state=d.get("from_state"),
        to_state=d.get("to_state"),
        evidence=tuple(d.get("evidence") or ()),
        detail=d.get("detail") or {},
    )


def _review_from(review_id: str, h: dict[str, str]) -> Review:
    closed_at = h.get("closed_at")
    return Review(
        id=review_id,
        org=h["org"],
        opened_at=float(h["opened_at"]),
        score=float(h["score"]),
        explanation=json.loads(h.get("explanation") or "{}"),
        status=h.get("status", "open"),
        updated=float(h.get("updated", h["opened_at"])),
        closed_at=None if closed_at is None else float(closed_at),
        closed_by=h.get("closed_by"),
        note=h.get("note", ""),
    )


def _strs(values: Iterable[Any]) -> list[str]:
    return [str(v) for v in values]


def _hash(mapping: Mapping[Any, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in mapping.items()}


def _subscribe(client: redis.Redis, channel: str) -> PubSub:
    pubsub: PubSub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    try:
        pubsub.subscribe(channel)
    except BaseException:
        pubsub.close()
        raise
    return pubsub


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStore:
    """A store in Redis (``redis://[:password@]host:port/db``, ``rediss://``, ``unix://``)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "regiongate:",
        connect_timeout: float = 5.0,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._safe = _safe_url(url)
        try:
            self._r: redis.Redis = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=connect_timeout,
                socket_timeout=timeout,
                # Retry only when the connection failed, never after a timeout: the script
                # may have run, and running a mutation twice would audit it twice.
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2, (rx.ConnectionError,)),
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"store URL {self._safe!r}: {exc}") from None
        self._channel = prefix + "changes"
        self._sub_lock = threading.Lock()
        self._pubsub: PubSub | None = None
        self._upsert_org = self._r.register_script(_LUA_UPSERT_ORG)
        self._add_key = self._r.register_script(_LUA_ADD_KEY)
        self._revoke_key = self._r.register_script(_LUA_REVOKE_KEY)
        self._add_payment = self._r.register_script(_LUA_ADD_PAYMENT)
        self._transition = self._r.register_script(_LUA_TRANSITION)
        self._add_events = self._r.register_script(_LUA_ADD_EVENTS)
        self._open_review = self._r.register_script(_LUA_OPEN_REVIEW)
        self._close_review = self._r.register_script(_LUA_CLOSE_REVIEW)

    # --- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Connection failures and timeouts become ``StoreUnavailable``."""
        try:
            yield
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"store {self._safe}: {exc or type(exc).__name__}") from exc

    def _k(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    def migrate(self) -> None:
        """Check the server answers and record (or check) the schema version."""
        with self._guard():
            self._r.ping()
            try:
                version = str(self._r.info("server").get("redis_version", ""))
            except rx.ResponseError:  # INFO refused by an ACL: trust the server
                version = ""
            numbers = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
            if len(numbers) == 2 and numbers < (6, 2):
                raise ValueError(f"store {self._safe}: needs Redis 6.2 or newer, not {version}")
            key = self._k("schema")
            self._r.set(key, str(SCHEMA_VERSION), nx=True)
            raw = self._r.get(key)
        found = None if raw is None else str(raw)
        if found is not None and int(found) > SCHEMA_VERSION:
            raise ValueError(
                f"store {self._safe}: schema version {found} under {self.prefix!r} is newer than "
                f"this regiongate supports ({SCHEMA_VERSION}); upgrade regiongate"
            )

    def close(self) -> None:
        with self._sub_lock:
            self._drop_pubsub()
        self._r.close()

    def ping(self) -> None:
        with self._guard():
            self._r.ping()

    # --- organisations and keys ----------------------------------------------------------------

    def upsert_org(
        self, org_id: str, *, name: str | None = None, email: str | None = None, actor: str
    ) -> Org:
        check_id(org_id, "organisation id")
        now = time.time()
        changes = {k: v for k, v in (("name", name), ("email", email)) if v is not None}
        args: list[str] = [
            self.prefix,
            org_id,
            _entry(org_id, at=now, actor=actor, action="org.create"),
            _entry(org_id, at=now, actor=actor, action="org.update", detail=changes)
            if changes
            else "",
        ]
        for field, value in changes.items():
            args += (field, value)
        with self._guard():
            flat = self._upsert_org(args=args)
        return _org_from(org_id, _pairs(flat))

    def get_org(self, org_id: str) -> Org | None:
        with self._guard():
            h = _hash(self._r.hgetall(self._k("org:", org_id)))
        return _org_from(org_id, h) if h else None

    def list_orgs(
        self, *, state: State | None = None, limit: int = 1000, offset: int = 0
    ) -> list[Org]:
        if limit <= 0:
            return []
        index = self._k("orgs") if state is None else self._k("state:", str(State(state)))
        start = max(0, offset)
        with self._guard():
            ids = _strs(self._r.zrange(index, start, start + limit - 1))
            if not ids:
                return []
            pipe = self._r.pipeline(transaction=False)
            for org_id in ids:
                pipe.hgetall(self._k("org:", org_id))
            rows = pipe.execute()
        return [_org_from(i, h) for i, h in zip(ids, rows, strict=True) if h]

    def add_key(self, key: Key, *, actor: str) -> Key:
        check_id(key.key_id, "key id")
        created = key.created or time.time()
        entry = _entry(
            key.org, at=time.time(), actor=actor, action="key.add", detail={"key_id": key.key_id}
        )
        args = [self.prefix, key.key_id, key.org, key.label, repr(float(created)), entry]
        with self._guard():
            result = self._add_key(args=args)
        if result[0] == "noorg":
            raise ValueError(f"organisation {key.org!r} does not exist")
        if result[0] == "other":
            raise ValueError(f"key {key.key_id} belongs to another organisation")
        return Key(key.key_id, key.org, key.label, float(result[1]))

    def revoke_key(self, key_id: str, *, actor: str) -> bool:
        detail = {"key_id": key_id}
        with self._guard():
            for _ in range(5):
                org = self._r.hget(self._k("key:", key_id), "org")
                if org is None:
                    return False
                entry = _entry(
                    str(org), at=time.time(), actor=actor, action="key.revoke", detail=detail
                )
                done = int(self._revoke_key(args=[self.prefix, key_id, str(org), entry]))
                if done >= 0:
                    return done == 1
        raise StoreUnavailable(f"key {key_id}: it kept changing under us; try again")

    def get_key(self, key_id: str) -> Key | None:
        with self._guard():
            h = _hash(self._r.hgetall(self._k("key:", key_id)))
        return _key_from(key_id, h) if h else None

    def list_keys(self, org: str | None = None) -> list[Key]:
        index = self._k("keys")
        with self._guard():
            if org is None:
                members = _strs(self._r.zrange(index, 0, -1))
            else:
                members = _strs(self._r.zrangebylex(index, "[" + org + "\0", "(" + org + "\x01"))
            if not members:
                return []
            key_ids = [m.rsplit("\0", 1)[1] for m in members]  # key ids have no NUL
            pipe = self._r.pipeline(transaction=False)
            for key_id in key_ids:
                pipe.hgetall(self._k("key:", key_id))
            rows = pipe.execute()
        keys = [_key_from(k, h) for k, h in zip(key_ids, rows, strict=True) if h]
        return keys if org is None else [k for k in keys if k.org == org]

    # --- events and payments -------------------------------------------------------------------

    def add_events(self, events: Sequence[Event]) -> int:
        for e in events:
            if "\0" in e.id or "\0" in e.org:
                raise ValueError(f"event {e.id!r}: ids and organisations cannot contain NUL")
            if e.strike and not math.isfinite(e.at):
                raise ValueError(f"event {e.id!r}: time must be finite, not {e.at!r}")
        new = 0
        with self._guard():
            # One script call per slice: each blocks Redis for a few milliseconds only, and a
            # slice applied before a failure is harmless (replaying it inserts nothing).
            for start in range(0, len(events), _EVENT_SLICE):
                part = events[start : start + _EVENT_SLICE]
                args = [
                    self.prefix,
                    "\0".join([e.id for e in part]),
                    "\0".join([e.org for e in part]),
                    "".join(["1" if e.strike else "0" for e in part]),
                    "\0".join([repr(float(e.at)) for e in part if e.strike]),
                ]
                new += int(self._add_events(args=args))
        return new

    def count_events(self, org: str | None = None) -> int:
        with self._guard():
            if org is None:
                return int(self._r.scard(self._k("events")))
            n = self._r.hget(self._k("evcount"), org)
        return int(n) if n is not None else 0

    def strike_events(self, org: str, since: float, limit: int = 100) -> tuple[int, list[str]]:
        key = self._k("strikes:", org)
        low = repr(float(since))
        with self._guard():
            pipe = self._r.pipeline(transaction=True)
            pipe.zcount(key, low, "+inf")
            if limit > 0:
                pipe.zrevrangebyscore(key, "+inf", low, start=0, num=limit)
            result = pipe.execute()
        return int(result[0]), [str(i) for i in result[1]] if limit > 0 else []

    def add_payment(self, payment: Payment, *, actor: str) -> bool:
        check_id(payment.id, "payment id")
        check_id(payment.org, "organisation id")
        at = float(payment.at)
        if not math.isfinite(at):
            raise ValueError(f"payment {payment.id!r}: time must be finite, not {payment.at!r}")
        now = time.time()
        detail = payment.to_dict()
        args = [
            self.prefix,
            payment.org,
            payment.id,
            json.dumps(detail),
            repr(at),
            _entry(payment.org, at=now, actor=actor, action="org.create"),
            _entry(
                payment.org,
                at=now,
                actor=actor,
                action="payment",
                evidence=[payment.id],
                detail=detail,
            ),
        ]
        with self._guard():
            return int(self._add_payment(args=args)) == 1

    def list_payments(self, org: str) -> list[Payment]:
        with self._guard():
            ids = _strs(self._r.zrange(self._k("payments:", org), 0, -1))
            if not ids:
                return []
            raws = self._r.mget([self._k("payment:", i) for i in ids])
        return [_payment_from(str(raw)) for raw in raws if raw is not None]

    # --- state and audit -----------------------------------------------------------------------

    def transition(
        self,
        org_id: str,
        to: State,
        *,
        actor: str,
        reason: str,
        evidence: Iterable[str] = (),
        expect: Iterable[State] | None = None,
        force: bool = False,
        at: float | None = None,
    ) -> Org | None:
        check_id(org_id, "organisation id")
        to = State(to)
        when = time.time() if at is None else float(at)
        if not math.isfinite(when):
            raise ValueError(f"transition time must be finite, not {at!r}")
        sources = [str(s) for s in State if to in ALLOWED[s]]
        expected = "*" if expect is None else "," + ",".join(str(State(s)) for s in expect) + ","
        entry = _entry(
            org_id,
            at=when,
            actor=actor,
            action="state",
            reason=reason,
            to_state=str(to),
            evidence=list(evidence),
        )
        args = [
            self.prefix,
            org_id,
            str(to),
            repr(when),
            "," + ",".join(sources) + ",",
            expected,
            "1" if force else "0",
            _entry(org_id, at=time.time(), actor=actor, action="org.create"),
            entry[1:],
        ]
        with self._guard():
            result = self._transition(args=args)
        if result[0] == "none":
            return None
        if result[0] == "denied":
            current = State(result[1])
            raise TransitionError(
                f"{org_id}: {current} → {to} is not allowed "
                f"(from {current}: {', '.join(sorted(ALLOWED[current]))})"
            )
        return _org_from(org_id, _pairs(result[1:]))

    def _read_audit(self, index: str, after: int, limit: int) -> list[AuditEntry]:
        if limit <= 0:
            return []
        with self._guard():
            seqs = _strs(
                self._r.zrangebyscore(self._k(index), f"({int(after)}", "+inf", start=0, num=limit)
            )
            if not seqs:
                return []
            raws = self._r.hmget(self._k("audit"), seqs)
        return [
            _audit_from(int(s), str(raw))
            for s, raw in zip(seqs, raws, strict=True)
            if raw is not None
        ]

    def audit(
        self, *, org: str | None = None, since_seq: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        index = "audit:all" if org is None else "audit:org:" + org
        return self._read_audit(index, since_seq, limit)

    def changes_since(self, seq: int, limit: int = 10_000) -> list[AuditEntry]:
        return self._read_audit("changes", seq, limit)

    def refused_orgs(self) -> dict[str, State]:
        with self._guard():
            pipe = self._r.pipeline(transaction=True)
            for state in _REFUSED:
                pipe.zrange(self._k("state:", state), 0, -1)
            rows = pipe.execute()
        return {str(o): State(s) for s, ids in zip(_REFUSED, rows, strict=True) for o in ids}

    def key_orgs(self) -> dict[str, str]:
        with self._guard():
            h = _hash(self._r.hgetall(self._k("keyorgs")))
        return dict(h)

    def last_seq(self) -> int:
        with self._guard():
            n = self._r.get(self._k("seq"))
        return int(n) if n is not None else 0

    # --- the review queue (circumvention) ------------------------------------------------------

    def open_review(
        self, org: str, score: float, explanation: dict[str, Any], *, actor: str, at: float
    ) -> tuple[Review, bool]:
        check_id(org, "organisation id")
        score = finite(score, "review score")
        when = finite(at, "review time")
        review_id = new_id("rv_")
        args = [
            self.prefix,
            org,
            review_id,
            repr(score),
            explanation_json(explanation),
            repr(when),
            _entry(org, at=time.time(), actor=actor, action="org.create"),
            _entry(
                org,
                at=when,
                actor=actor,
                action="review.open",
                evidence=[review_id],
                detail={"score": score},
            ),
        ]
        with self._guard():
            out = self._open_review(args=args)
        found = str(out[1])
        return _review_from(found, _pairs(out[2:])), int(out[0]) == 1

    def get_review(self, review_id: str) -> Review | None:
        with self._guard():
            h = _hash(self._r.hgetall(self._k("review:", review_id)))
        return _review_from(review_id, h) if h else None

    def list_reviews(
        self, *, status: str | None = "open", org: str | None = None, limit: int = 100
    ) -> list[Review]:
        check_review_status(status)
        if limit <= 0:
            return []
        # An organisation has few reviews: with both filters, read all of its and filter.
        if org is not None:
            index, last = self._k("reviews:org:", org), -1 if status is not None else limit - 1
        elif status is not None:
            index, last = self._k("reviews:status:", status), limit - 1
        else:
            index, last = self._k("reviews"), limit - 1
        with self._guard():
            ids = _strs(self._r.zrevrange(index, 0, last))
            if not ids:
                return []
            pipe = self._r.pipeline(transaction=False)
            for review_id in ids:
                pipe.hgetall(self._k("review:", review_id))
            rows = pipe.execute()
        found = [_review_from(i, _hash(h)) for i, h in zip(ids, rows, strict=True) if h]
        # A review closed between the two reads is no longer in the status asked for.
        return [r for r in found if status is None or r.status == status][:limit]

    def close_review(
        self, review_id: str, decision: str, *, actor: str, note: str = "", at: float
    ) -> Review | None:
        check_id(review_id, "review id")
        check_close(decision, actor, note)
        when = finite(at, "review time")
        key = self._k("review:", review_id)
        with self._guard():
            for _ in range(20):
                org, score, status = self._r.hmget(key, ["org", "score", "status"])
                if org is None or score is None or status != "open":
                    return None
                entry = _entry(
                    str(org),
                    at=when,
                    actor=actor,
                    action="review.close",
                    evidence=[review_id],
                    detail={"decision": decision, "note": note, "score": float(str(score))},
                )
                args = [
                    self.prefix,
                    review_id,
                    str(org),
                    str(score),
                    decision,
                    repr(when),
                    actor,
                    note,
                    entry,
                ]
                out = self._close_review(args=args)
                if out[0] == "none":
                    return None
                if out[0] == "ok":
                    return _review_from(review_id, _pairs(out[1:]))
        raise StoreUnavailable(f"review {review_id}: it kept changing under us; try again")

    # --- the change feed -----------------------------------------------------------------------

    def wait_for_change(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a change-feed entry; whether one came.

        The subscription is made on the first call and kept, so a change between two calls
        is not missed; several changes that arrived meanwhile wake one call. Callers read
        what changed with ``changes_since``.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._sub_lock:
            try:
                if self._pubsub is None:
                    self._pubsub = _subscribe(self._r, self._channel)
                got = False
                while True:
                    remaining = 0.0 if got else max(0.0, deadline - time.monotonic())
                    message = self._pubsub.get_message(timeout=remaining)
                    if message is not None:
                        got = got or message.get("type") == "message"
                    elif got or remaining <= 0.0:
                        return got
            except _UNAVAILABLE as exc:
                self._drop_pubsub()
                raise StoreUnavailable(f"store {self._safe}: {exc or type(exc).__name__}") from exc

    def _drop_pubsub(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            with suppress(*_UNAVAILABLE):
                pubsub.close()

    # --- tests ---------------------------------------------------------------------------------

    def truncate_for_tests(self) -> None:
        """Delete every key under the prefix (the behaviour suite's fixture)."""
        with self._guard():
            batch: list[str] = []
            for key in self._r.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000):
                batch.append(str(key))
                if len(batch) >= 500:
                    self._r.unlink(*batch)
                    batch = []
            if batch:
                self._r.unlink(*batch)
