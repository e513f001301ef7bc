"""The files ``notices plan`` reads: the impact report and the contacts list.

Both are validated completely before anything is planned, and a problem is reported as one
line naming the file, the place and the value (``contacts.csv:4: email 'ops@' is not an
e-mail address``).

The impact report is what ``regiongate impact ... --json FILE`` writes::

    {"policy": "api-2024@2024-07-09", "policy_name": "api-2024",
     "notice_from": "...", "enforce_from": "...", "generated_at": "...",
     "orgs": [{"org": "org-1", "requests": 1200, "affected_requests": 300,
               "affected_share": 0.25, "first_seen": "...", "last_seen": "...",
               "territories": {"US": 900, "CN": 300}, "unsupported_territories": {"CN": 300},
               "anonymizer_share": 0.1, "actions": {"allow": 900, "flag": 0, "block": 300}}]}

Contacts are CSV (header row) or JSON (an array of objects, or JSON lines) with the fields
``org`` (required), ``email``, ``webhook_url``, ``language`` (``en``, ``zh-Hans``) and
``name`` (how the notice addresses the organisation).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from regiongate.accounts.model import valid_id
from regiongate.errors import RegiongateError
from regiongate.notify.model import normalise_language

__all__ = [
    "CONTACT_FIELDS",
    "Contact",
    "ImpactReport",
    "InputError",
    "OrgImpact",
    "load_contacts",
    "load_impact",
    "parse_time",
]

CONTACT_FIELDS: Final = ("org", "email", "webhook_url", "language", "name")
_EMAIL: Final = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\".]+")


class InputError(RegiongateError):
    """An input file that cannot be used; the message names the file and the place."""


def parse_time(value: str) -> dt.datetime:
    """An ISO 8601 date or datetime (``Z`` allowed); naive ones are UTC."""
    when = dt.datetime.fromisoformat(value.strip())
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class OrgImpact:
    """One organisation's traffic in the impact report."""

    org: str
    requests: int
    affected_requests: int
    affected_share: float
    first_seen: str | None
    last_seen: str | None
    territories: dict[str, int] = field(default_factory=dict)
    unsupported_territories: dict[str, int] = field(default_factory=dict)
    anonymizer_share: float | None = None
    actions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "requests": self.requests,
            "affected_requests": self.affected_requests,
            "affected_share": self.affected_share,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "territories": dict(self.territories),
            "unsupported_territories": dict(self.unsupported_territories),
            "anonymizer_share": self.anonymizer_share,
            "actions": dict(self.actions),
        }


@dataclass(frozen=True, slots=True)
class ImpactReport:
    source: str  # the file it was read from
    policy: str  # name@version
    policy_name: str | None
    notice_from: str | None
    enforce_from: str | None
    generated_at: str | None
    orgs: list[OrgImpact]
    # Entries that name no organisation a notice could go to: "(none)" (lines without an
    # org or key) and ids read from logs that are not organisation ids (too long, control
    # characters). Skipped, and listed by `notices plan`.
    not_organisations: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Contact:
    org: str
    email: str | None = None
    webhook_url: str | None = None
    language: str | None = None
    name: str | None = None
    where: str = ""  # FILE:LINE, for messages


# --- reading -------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{name}:{line}: not UTF-8 text") from None


def _load_json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
        ) from None


# --- the impact report ---------------------------------------------------------------------------


class _Bad(Exception):
    pass


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{key}: must be a whole number, not {json.dumps(value)[:40]}")
    if isinstance(value, float) and not value.is_integer():
        raise _Bad(f"{key}: must be a whole number, not {value}")
    if value < 0:
        raise _Bad(f"{key}: must not be negative ({value})")
    return int(value)


def _share(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{key}: must be a number between 0 and 1, not {json.dumps(value)[:40]}")
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise _Bad(f"{key}: must be between 0 and 1 ({value})")
    return float(value)


def _time(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Bad(f"{key}: must be an ISO 8601 time, not {json.dumps(value)[:40]}")
    try:
        return parse_time(value).isoformat()
    except ValueError:
        raise _Bad(f"{key}: {value!r:.60} is not an ISO 8601 time") from None


def _counts(value: Any, key: str, *, territories: bool) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(f"{key}: must be an object of counts, not {type(value).__name__}")
    counts: dict[str, int] = {}
    for k, v in value.items():
        # Territory codes (CN, UA-43), or "unknown" where a request could not be located.
        if territories and not (0 < len(k) <= 20 and k.isprintable()):
            raise _Bad(f"{key}: {k!r:.30} is not a territory code (CN, UA-43, unknown)")
        counts[str(k)] = _int(v, f"{key}.{k}")
    return counts


# regiongate impact's entries that are no organisation (analytics.impact: _NO_ORG, KEY_PREFIX;
# not imported, to keep numpy out of this module): lines without an org, and key ids no known
# organisation owns.
NO_ORG = "(none)"
KEY_PREFIX = "key:"


def _org_impact(entry: Any, key: str) -> OrgImpact:
    if not isinstance(entry, dict):
        raise _Bad(f"{key}: must be an object, not {type(entry).__name__}")
    org = entry.get("org")
    if not isinstance(org, str) or not valid_id(org):
        raise _Bad(f"{key}.org: must be an organisation id (1-200 printable characters)")
    requests = _int(entry.get("requests"), f"{key}.requests")
    affected = _int(entry.get("affected_requests"), f"{key}.affected_requests")
    if affected > requests:
        raise _Bad(f"{key}.affected_requests: {affected} is more than requests ({requests})")
    share = _share(entry.get("affected_share"), f"{key}.affected_share")
    anonymizer = entry.get("anonymizer_share")
    return OrgImpact(
        org=org,
        requests=requests,
        affected_requests=affected,
        affected_share=share,
        first_seen=_time(entry.get("first_seen"), f"{key}.first_seen"),
        last_seen=_time(entry.get("last_seen"), f"{key}.last_seen"),
        territories=_counts(entry.get("territories"), f"{key}.territories", territories=True),
        unsupported_territories=_counts(
            entry.get("unsupported_territories"),
            f"{key}.unsupported_territories",
            territories=True,
        ),
        anonymizer_share=(
            None if anonymizer is None else _share(anonymizer, f"{key}.anonymizer_share")
        ),
        actions=_counts(entry.get("actions"), f"{key}.actions", territories=False),
    )


def load_impact(path: Path) -> ImpactReport:
    """Read and validate an impact report (``InputError`` naming the file and key)."""
    name = str(path)
    doc = _load_json(name, _read_text(path))
    try:
        if not isinstance(doc, dict):
            raise _Bad("expected a JSON object (the output of `regiongate impact --json`)")
        policy = doc.get("policy")
        if not isinstance(policy, str) or "@" not in policy:
            raise _Bad("policy: must be the policy's name@version")
        orgs_doc = doc.get("orgs")
        if not isinstance(orgs_doc, list):
            raise _Bad("orgs: must be an array")
        orgs: list[OrgImpact] = []
        seen: set[str] = set()
        skipped: list[str] = []
        for i, entry in enumerate(orgs_doc):
            label = entry.get("org") if isinstance(entry, dict) else None
            if isinstance(label, str) and (
                label == NO_ORG or label.startswith(KEY_PREFIX) or not valid_id(label)
            ):
                skipped.append(label)
                continue
            org = _org_impact(entry, f"orgs[{i}]")
            if org.org in seen:
                raise _Bad(f"orgs[{i}].org: {org.org!r} appears twice")
            seen.add(org.org)
            orgs.append(org)
        policy_name = doc.get("policy_name")
        return ImpactReport(
            source=name,
            policy=policy,
            policy_name=policy_name if isinstance(policy_name, str) else None,
            notice_from=_time(doc.get("notice_from"), "notice_from"),
            enforce_from=_time(doc.get("enforce_from"), "enforce_from"),
            generated_at=_time(doc.get("generated_at"), "generated_at"),
            orgs=orgs,
            not_organisations=skipped,
        )
    except _Bad as exc:
        raise InputError(f"{name}: {exc}") from None


# --- contacts ------------------------------------------------------------------------------------


def _contact_rows(name: str, text: str) -> list[tuple[int, dict[str, Any]]]:
    """(line, row) of a CSV, JSON array or JSON lines file."""
    suffix = Path(name).suffix.lower()
    first = text.lstrip()[:1]
    if suffix in {".json", ".jsonl", ".ndjson"} or first in {"[", "{"}:
        if first == "[":
            doc = _load_json(name, text)
            if not all(isinstance(item, dict) for item in doc):
                raise InputError(f"{name}: expected an array of objects")
            # Line numbers of array elements are not kept by json; name the element instead.
            return [(i + 1, item) for i, item in enumerate(doc)]
        rows: list[tuple[int, dict[str, Any]]] = []
        for number, text_line in enumerate(text.split("\n"), 1):
            if not text_line.strip():
                continue
            try:
                item = json.loads(text_line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{name}:{number}: not valid JSON ({exc.msg}, column {exc.colno})"
                ) from None
            if not isinstance(item, dict):
                raise InputError(f"{name}:{number}: expected an object")
            rows.append((number, item))
        return rows
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows = []
    start = 1
    try:
        for values in reader:
            line, start = start, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            if header is None:
                header = [v.strip().lower() for v in values]
                for h in header:
                    if h not in CONTACT_FIELDS:
                        raise InputError(
                            f"{name}:{line}: header: unknown column {h!r} "
                            f"(columns: {', '.join(CONTACT_FIELDS)})"
                        )
                if "org" not in header:
                    raise InputError(f"{name}:{line}: header: no 'org' column")
                continue
            if len(values) > len(header):
                raise InputError(
                    f"{name}:{line}: {len(values)} values, but the header has {len(header)} columns"
                )
            rows.append((line, dict(zip(header, values, strict=False))))
    except csv.Error as exc:
        raise InputError(f"{name}:{reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise InputError(f"{name}: empty: a CSV file needs a header row")
    return rows


def _cell(row: dict[str, Any], key: str, where: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: {key} must be a string, not {type(value).__name__}")
    value = value.strip()
    if not value:
        return None
    if len(value) > 2000 or not value.isprintable():
        raise InputError(f"{where}: {key} {value!r:.60} is too long or has control characters")
    return value


def load_contacts(path: Path) -> dict[str, Contact]:
    """org → contact, from a CSV or JSON file; every row checked (``InputError``)."""
    name = str(path)
    text = _read_text(path)
    is_array = text.lstrip()[:1] == "["
    contacts: dict[str, Contact] = {}
    for line, row in _contact_rows(name, text):
        where = f"{name}:{'element ' if is_array else ''}{line}"
        unknown = [k for k in row if str(k).strip().lower() not in CONTACT_FIELDS]
        if unknown:
            raise InputError(
                f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(CONTACT_FIELDS)})"
            )
        row = {str(k).strip().lower(): v for k, v in row.items()}
        org = _cell(row, "org", where)
        if org is None or len(org) > 200:
            raise InputError(f"{where}: org is required (1-200 characters)")
        if org in contacts:
            raise InputError(f"{where}: org {org!r} is listed twice (also {contacts[org].where})")
        email = _cell(row, "email", where)
        if email is not None and not _EMAIL.fullmatch(email):
            raise InputError(f"{where}: email {email!r:.80} is not an e-mail address")
        url = _cell(row, "webhook_url", where)
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise InputError(f"{where}: webhook_url {url!r:.80} is not an http(s) URL")
        language = _cell(row, "language", where)
        if language is not None:
            try:
                language = normalise_language(language)
            except ValueError as exc:
                raise InputError(f"{where}: {exc}") from None
        contacts[org] = Contact(
            org=org,
            email=email,
            webhook_url=url,
            language=language,
            name=_cell(row, "name", where),
            where=where,
        )
    return contacts


def valid_email(value: str) -> bool:
    return _EMAIL.fullmatch(value) is not None
