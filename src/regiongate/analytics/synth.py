r"""Synthetic API access logs with their ground truth, for demos, tests and benchmarks.

:func:`synthesize` writes a seeded, realistic access log of an API used by many organisations
and, beside it, ``<out>.truth.json``: what a correct replay (``regiongate impact``) must find.
Same seed, parameters and snapshot: the same bytes.

**Organisations** (``org-<kind>-<n>``, 1 to 5 API keys ``kid_`` + 32 hex each, volumes
Zipf-like across organisations):

- ``ordinary``: in a supported country (US, IN, DE, GB, JP, ...), now and then from a second
  supported country.
- ``unsupported``: at home in an unsupported territory (CN, RU, HK, IR, BY, VE, KP, CU, SY,
  UA-43 Crimea, UA-40 Sevastopol, UA-14 Donetsk, UA-09 Luhansk).
- ``vpn``: at home in an unsupported territory, most requests through addresses the snapshot
  flags ``vpn``, ``hosting`` or ``tor`` (preferably located in supported countries), the rest
  leaking from home.
- ``reseller``: a proxy fanning many end users, most of them in unsupported territories, out
  of one hosting range of one cloud region; very high volume. The log shows only the cloud
  address: the truth keeps where the end users are.
- ``traveller``: an ordinary organisation with a small share of requests from one
  unsupported territory.
- ``saas``: an honest service in a supported country whose backend runs in one hosting range
  of a cloud region in a supported country (its own country's 70% of the time when the
  snapshot has hosting ranges there) and serves many end users in supported countries, most
  at home: traffic shaped like a reseller's, the hard negative for reseller detection. Busy:
  at least 2-50% of the busiest organisation's volume (a reseller has 40-120%). Its default
  share is 0 (``mix`` names it), so the default output is what it was before it existed.

Every client address is drawn from the snapshot: per organisation a few *sites* (a block of
up to 4096 addresses inside one snapshot range of the right territory or flag), then
uniformly inside a site. Home pools hold only ranges that are not disputed (except the
occupied Ukrainian subdivisions, which always are), not private, not unknown and carry no
anonymizer flag. When the snapshot has no range for a wanted territory another one of the
same kind is used and the organisation's ``fallback`` says so. About 4% of an organisation's
home traffic is IPv6 where the snapshot has IPv6 ranges for the territory.

**Proxies.** About 30% of the lines come through a trusted reverse proxy: ``remote_addr`` is
one of ``proxies`` and ``x_forwarded_for`` is ``[forged, ]client[, hop...]`` (the hops are
proxies too): the client is the right-most entry that is not a trusted proxy. A forged
left-most entry (about 3% of proxied lines) never changes who the client is. About 0.5% of
the direct lines carry an ``X-Forwarded-For`` the client wrote itself; the peer is not a
trusted proxy, so it is ignored and ``remote_addr`` is the client.

**Line formats** (fields ``time``, ``remote_addr``, ``x_forwarded_for``, ``org``, ``key_id``,
``method``, ``path``, ``status``, ``bytes``, ``user_agent``):

- ``jsonl``: one JSON object per line with exactly these keys in this order; ``time`` is
  ISO 8601 UTC with milliseconds (``2026-07-01T00:00:00.123Z``), ``status`` and ``bytes``
  are numbers, ``x_forwarded_for`` is ``null`` when the request had none.
- ``csv``: a header row with these names, then one row per line (RFC 4180 quoting; an empty
  ``x_forwarded_for`` when the request had none).
- ``nginx``::

      log_format regiongate '$remote_addr - - [$time_local] "$request" $status '
                            '$body_bytes_sent "$http_referer" "$http_user_agent" '
                            '"$http_x_forwarded_for" $org $key_id';

  e.g. ``203.0.113.9 - - [01/Jul/2026:00:00:00 +0000] "POST /v1/chat/completions HTTP/1.1"
  200 1834 "-" "OpenAI/Python 1.54.3" "-" org-vpn-3 kid_0123...``; ``$time_local`` in UTC
  with second resolution, ``"-"`` for an absent header.

Times increase (exponential gaps: a Poisson stream) from ``start`` over ``days``.

**Request hints** (``hints=True``, CLI ``--hints``; jsonl and csv only — the nginx format
has nowhere to put them, so nginx with hints is refused) add three fields after the others
(jsonl: trailing keys; csv: trailing columns, empty for none):

- ``user``: the end-user id the API customer passes in the request body (``u_<hex>_<n>``),
  or null. Organisations of their own (ordinary, traveller, unsupported, vpn): half pass
  none, the others 1 to 40 users. Resellers fan out 200 to 5000 end users (a quarter pass
  none), saas 100 to 3000 (30% none), split over the end users' territories.
- ``accept_language``: an ``Accept-Language`` value, or null (10-70% of an organisation's
  lines carry one; 30-90% of a reseller's or saas's). The language of the people behind the
  line: an organisation's own people speak their home's languages wherever their address is
  (a vpn's exits, a traveller's trip), a reseller's or saas's end users their own
  territory's (``zh-CN``, ``ru-RU``, ``fa-IR``, ``ru-UA`` for the occupied regions, ...),
  with some English UIs and region-less tags (``es-419``, ``ar``) everywhere.
- ``timezone``: an IANA zone name of the same people (15-50% of lines; a few ``UTC``), or
  null. 15% of resellers rebuild every request and send neither header.

A user keeps one language and zone. Malformed lines carry no hints (they are the same lines
as without hints). Hints come from a generator of their own, seeded from ``seed``: the
lines of a log with hints are the lines without hints plus the hint fields (saas aside,
which changes the organisations). With hints the truth gives each organisation a
``payment_country`` (its card and billing country: its home; a vpn organisation's half the
time, else a supported country's; a reseller company's mostly a supported country — its
cloud region's or another — and 15% of the time HK, CN or RU), ``end_users`` (the distinct
ids it passes) and ``hint_lines`` (valid lines with each hint).

**Malformed lines** (``malformed_share``, default 0.1%) replace ordinary lines:

- ``truncated``: cut short with no peer address left to read (jsonl: anywhere before the
  closing brace, so not JSON; csv: right after the time, so no ``remote_addr``; nginx: before
  the referer, so the line does not match the format);
- ``garbage``: not a log line at all (no time, no peer);
- ``bad_address``: a well-formed line of a real organisation and key, without
  ``X-Forwarded-For``, whose ``remote_addr`` is not an address (``999.12.7.1``, ``unknown``,
  ``10.0.0``, ...): a reader sees a request whose client is invalid.

They are counted in the truth and left out of every per-organisation count except
``malformed`` and ``bad_address``. A reader that calls a line malformed when it has no
readable time or peer (``regiongate impact``) finds ``truncated + garbage`` of them, and
``lines + bad_address`` requests per organisation.

**Compression**: ``gzip`` (stdlib, level 3 unless ``compress_level``; the gzip header has no
name and time, so the bytes are reproducible) or ``zstd`` (the ``zstandard`` package,
level 3). Compression runs on a writer thread, overlapping with generation.

**Truth** (``<out>.truth.json``, ``"format": "regiongate-synth-truth/1"``)::

    {
      "format": "regiongate-synth-truth/1", "generator": "regiongate 0.x",
      "seed": 7,
      "params": {"lines", "orgs", "seed", "start", "days", "format", "compress", "mix",
                 "proxies", "proxy_share", "malformed_share", "ipv6_share", "snapshot":
                 {"path", "created", "body_sha256"}, "hints": true},  # hints: when on
                 # mix: the default kinds' shares, and saas's when the mix names it
      "unsupported": ["CN", "HK", ...],       # what "unsupported" means in the shares below
      "lines": 1000000,                       # log lines, malformed included, header not
      "header_lines": 0,                      # 1 for csv
      "valid_lines": 999000,
      "malformed": {"total": 1000, "truncated": 400, "garbage": 300, "bad_address": 300},
      "proxied_lines": 300000, "forged_xff_lines": 9000, "spoofed_direct_lines": 3500,
      "first_time": "...Z", "last_time": "...Z",
      "fallbacks": ["org-unsupported-3: no ranges for KP in the snapshot: used CN", ...],
      "orgs": [
        {"org": "org-vpn-3", "kind": "vpn",
         "home": "RU", "home_requested": "RU", "fallback": null,
         "keys": ["kid_..."], "key_lines": {"kid_...": 812},
         "lines": 1234,                       # valid lines of this org
         "malformed": 2,                      # lines of this org made malformed, all kinds
         "bad_address": 1,                    # of which well-formed with a bad remote_addr
         "territories": {"NL": 1000, "RU": 234},   # where the client address locates
         "user_territories": {"RU": 1234},         # where the people really are
         "anonymizer_lines": 1000,            # client address flagged tor/vpn/hosting/proxy/relay
         "flags": {"vpn": 800, "hosting": 200},     # lines per anonymizer flag
         "proxied_lines": 370, "ipv6_lines": 12,
         "expected_unsupported_share": 0.19,  # territories share in "unsupported"
         "true_unsupported_share": 1.0,       # user_territories share in "unsupported"
         "travel": null,                      # a traveller's unsupported territory
         "payment_country": "RU",             # with hints only: these three
         "end_users": 12,
         "hint_lines": {"user": 1100, "accept_language": 600, "timezone": 350}}
      ]
    }

``home`` is where the organisation is: a reseller's is its cloud range's territory, a
saas's the company's country (its cloud range shows in ``territories``).

A territory *label* is the address's consensus subdivision when it is one of UA-43, UA-40,
UA-14 or UA-09, else its consensus country, else ``"unknown"``: every address of a line
counted under a label looks up (``Snapshot.lookup``) to an ``Origin`` with that label among
its ``territories`` (``"unknown"``: no country at all).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import importlib
import io
import json
import math
import os
import queue
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt

from regiongate import __version__
from regiongate.errors import RegiongateError
from regiongate.intel.addresses import V4_MAX
from regiongate.intel.model import FLAG_BITS, Flag
from regiongate.intel.snapshot import Snapshot

__all__ = [
    "DEFAULT_MIX",
    "DEFAULT_START",
    "FIELDS",
    "HINT_FIELDS",
    "KINDS",
    "NGINX_LOG_FORMAT",
    "TRACKED_SUBDIVISIONS",
    "TRUTH_FORMAT",
    "UNKNOWN_LABEL",
    "UNSUPPORTED",
    "Compression",
    "LogFormat",
    "OrgTruth",
    "Truth",
    "iter_lines",
    "synthesize",
    "territory_label",
    "truth_path",
]


class LogFormat(StrEnum):
    """The line formats :func:`synthesize` writes."""

    JSONL = "jsonl"
    CSV = "csv"
    NGINX = "nginx"


class Compression(StrEnum):
    """How the log file is compressed."""

    GZIP = "gzip"
    ZSTD = "zstd"


TRUTH_FORMAT: Final = "regiongate-synth-truth/1"
FIELDS: Final = (
    "time",
    "remote_addr",
    "x_forwarded_for",
    "org",
    "key_id",
    "method",
    "path",
    "status",
    "bytes",
    "user_agent",
)
NGINX_LOG_FORMAT: Final = (
    'log_format regiongate \'$remote_addr - - [$time_local] "$request" $status '
    '$body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for" '
    "$org $key_id';"
)
KINDS: Final = ("ordinary", "unsupported", "vpn", "reseller", "traveller", "saas")
# saas has no share by default: the default output stays what it was before saas existed.
DEFAULT_MIX: Final[Mapping[str, float]] = {
    "ordinary": 0.70,
    "unsupported": 0.10,
    "vpn": 0.08,
    "reseller": 0.02,
    "traveller": 0.10,
}
# The request hints ``hints=True`` adds to every line, after FIELDS.
HINT_FIELDS: Final = ("user", "accept_language", "timezone")
DEFAULT_START: Final = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
TRACKED_SUBDIVISIONS: Final = ("UA-43", "UA-40", "UA-14", "UA-09")
UNSUPPORTED: Final = ("CN", "HK", "RU", "IR", "BY", "VE", "KP", "CU", "SY", *TRACKED_SUBDIVISIONS)
UNKNOWN_LABEL: Final = "unknown"

# Where organisations are, by kind: relative weights.
_SUPPORTED_HOMES: Final = {
    "US": 30, "IN": 8, "DE": 7, "GB": 7, "JP": 6, "FR": 5, "BR": 5, "CA": 5, "KR": 4,
    "AU": 3, "NL": 3, "ES": 3, "IT": 3, "SG": 3, "MX": 2, "PL": 2, "SE": 2, "CH": 2,
    "ID": 2, "TR": 2, "IL": 1, "AE": 1, "ZA": 1, "NG": 1, "AR": 1, "VN": 1, "PH": 1,
    "IE": 1, "KE": 1, "EG": 1,
}  # fmt: skip
_UNSUPPORTED_HOMES: Final = {
    "CN": 24, "RU": 22, "HK": 10, "IR": 10, "VE": 6, "BY": 5, "CU": 3, "SY": 3, "KP": 1,
    "UA-43": 6, "UA-14": 6, "UA-40": 2, "UA-09": 2,
}  # fmt: skip
# Cloud regions a reseller runs in.
_CLOUD_HOMES: Final = {"US": 10, "DE": 4, "NL": 4, "SG": 4, "JP": 3, "GB": 3, "IE": 2, "FR": 2}
# The anonymizer flags a vpn organisation's exits carry, with weights.
_EXIT_FLAGS: Final = ((Flag.VPN, 0.55), (Flag.HOSTING, 0.30), (Flag.TOR, 0.15))
# A tracked subdivision's home pool: ranges some source places in that subdivision and whose
# consensus country is one of these (others are data noise).
_SUBDIVISION_COUNTRIES: Final = ("UA", "RU")

_ANON_FLAGS: Final = (Flag.TOR, Flag.VPN, Flag.HOSTING, Flag.PROXY, Flag.RELAY)
_ANON_BITS: Final = sum(FLAG_BITS[f] for f in _ANON_FLAGS)
_BAD_BITS: Final = FLAG_BITS[Flag.PRIVATE] | FLAG_BITS[Flag.INVALID] | FLAG_BITS[Flag.UNKNOWN]
_HARD_BAD_BITS: Final = FLAG_BITS[Flag.PRIVATE] | FLAG_BITS[Flag.INVALID]
_DISPUTED_BIT: Final = FLAG_BITS[Flag.DISPUTED]

# (method, path, weight, log-mean and log-sigma of the response size)
_ENDPOINTS: Final = (
    ("POST", "/v1/chat/completions", 0.52, 7.4, 0.9),
    ("POST", "/v1/embeddings", 0.18, 9.6, 1.2),
    ("POST", "/v1/responses", 0.10, 7.6, 0.9),
    ("GET", "/v1/models", 0.07, 8.5, 0.1),
    ("POST", "/v1/completions", 0.04, 6.9, 0.8),
    ("POST", "/v1/moderations", 0.03, 6.2, 0.3),
    ("GET", "/v1/files", 0.02, 6.8, 0.7),
    ("POST", "/v1/audio/transcriptions", 0.02, 6.5, 0.9),
    ("POST", "/v1/images/generations", 0.02, 6.0, 0.4),
)
_STATUSES: Final = (
    (200, 0.928),
    (400, 0.012),
    (401, 0.004),
    (403, 0.002),
    (404, 0.003),
    (429, 0.035),
    (500, 0.006),
    (502, 0.004),
    (503, 0.006),
)
_USER_AGENTS: Final = (
    "OpenAI/Python 1.54.3",
    "OpenAI/Python 1.40.6",
    "AsyncOpenAI/Python 1.54.3",
    "OpenAI/NodeJS/4.67.1",
    "langchain-openai/0.2.9 OpenAI/Python 1.54.3",
    "python-requests/2.32.3",
    "python-httpx/0.27.2",
    "curl/8.5.0",
    "Go-http-client/2.0",
    "axios/1.7.7",
    "okhttp/4.12.0",
    "Java-http-client/21.0.2",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
_BAD_ADDRESSES: Final = (
    "999.12.7.1",
    "unknown",
    "10.0.0",
    "1.2.3.4.5",
    "::zz",
    "localhost",
    "203.0.113.300",
)
_GARBAGE: Final = (
    "\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xfc\\x03\\x03",
    "GET /robots.txt HTTP/1.0",
    "<html><head><title>502 Bad Gateway</title></head>",
    "SSH-2.0-Go",
    "\\x00\\x00\\x00\\x00 log rotated",
    "PRI * HTTP/2.0",
)
_MALFORMED_KINDS: Final = ("truncated", "garbage", "bad_address")


def _cdf(weights: Sequence[float]) -> npt.NDArray[np.float64]:
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    cdf /= cdf[-1]
    return cdf


_MALFORMED_CDF: Final = _cdf((0.4, 0.3, 0.3))
_ENDPOINT_CDF: Final = _cdf([e[2] for e in _ENDPOINTS])
_SIZE_MU: Final = np.array([e[3] for e in _ENDPOINTS])
_SIZE_SIGMA: Final = np.array([e[4] for e in _ENDPOINTS])
_STATUS_CDF: Final = _cdf([p for _, p in _STATUSES])
_HOP_CDF: Final = np.array([0.8, 0.97])  # extra trusted hops after the client: 0, 1 or 2
_CHUNK: Final = 100_000
# gzip -3 compresses synthetic logs about 9:1 at twice the speed of the usual -6 (11:1).
_DEFAULT_LEVEL: Final = 3
_SITE_BITS: Final = (2, 12)  # a site spans 2**k addresses, k drawn in this range
_V6_SITE: Final = 1 << 16
_DAY_MS: Final = 86_400_000
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                  "Dec")  # fmt: skip

_I64 = npt.NDArray[np.int64]
_F64 = npt.NDArray[np.float64]
_Bool = npt.NDArray[np.bool_]


def truth_path(out: Path) -> Path:
    """Where :func:`synthesize` writes the truth of ``out``: ``<out>.truth.json``."""
    return out.with_name(out.name + ".truth.json")


def territory_label(country: str | None, subdivision: str | None) -> str:
    """The truth's territory label of an address (see the module docstring)."""
    if subdivision in TRACKED_SUBDIVISIONS:
        return str(subdivision)
    return country or UNKNOWN_LABEL


# --- truth ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OrgTruth:
    """What the log holds for one organisation (see the module docstring)."""

    org: str
    kind: str
    home: str
    home_requested: str
    fallback: str | None
    keys: tuple[str, ...]
    key_lines: dict[str, int]
    lines: int
    malformed: int
    bad_address: int
    territories: dict[str, int]
    user_territories: dict[str, int]
    anonymizer_lines: int
    flags: dict[str, int]
    proxied_lines: int
    ipv6_lines: int
    expected_unsupported_share: float
    true_unsupported_share: float
    travel: str | None = None
    # With hints only (None without):
    payment_country: str | None = None
    end_users: int | None = None
    hint_lines: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, keys in the documented order (the hint keys with hints only)."""
        data: dict[str, Any] = {
            "org": self.org,
            "kind": self.kind,
            "home": self.home,
            "home_requested": self.home_requested,
            "fallback": self.fallback,
            "keys": list(self.keys),
            "key_lines": dict(self.key_lines),
            "lines": self.lines,
            "malformed": self.malformed,
            "bad_address": self.bad_address,
            "territories": dict(self.territories),
            "user_territories": dict(self.user_territories),
            "anonymizer_lines": self.anonymizer_lines,
            "flags": dict(self.flags),
            "proxied_lines": self.proxied_lines,
            "ipv6_lines": self.ipv6_lines,
            "expected_unsupported_share": self.expected_unsupported_share,
            "true_unsupported_share": self.true_unsupported_share,
            "travel": self.travel,
        }
        if self.payment_country is not None:
            data["payment_country"] = self.payment_country
            data["end_users"] = self.end_users
            data["hint_lines"] = dict(self.hint_lines or {})
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OrgTruth:
        """The inverse of :meth:`to_dict`."""
        values = dict(data)
        values["keys"] = tuple(values["keys"])
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class Truth:
    """The ground truth of a synthetic log, as written to ``<out>.truth.json``."""

    seed: int
    params: dict[str, Any]
    lines: int
    header_lines: int
    valid_lines: int
    malformed: dict[str, int]
    proxied_lines: int
    forged_xff_lines: int
    spoofed_direct_lines: int
    first_time: str | None
    last_time: str | None
    fallbacks: list[str]
    orgs: list[OrgTruth]
    unsupported: tuple[str, ...] = UNSUPPORTED
    generator: str = f"regiongate {__version__}"

    @property
    def malformed_lines(self) -> int:
        """How many lines are malformed, of every kind."""
        return self.malformed["total"]

    def org(self, name: str) -> OrgTruth:
        """One organisation's truth by id; ``KeyError`` when there is none."""
        for o in self.orgs:
            if o.org == name:
                return o
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, keys in the documented order."""
        return {
            "format": TRUTH_FORMAT,
            "generator": self.generator,
            "seed": self.seed,
            "params": self.params,
            "unsupported": list(self.unsupported),
            "lines": self.lines,
            "header_lines": self.header_lines,
            "valid_lines": self.valid_lines,
            "malformed": dict(self.malformed),
            "proxied_lines": self.proxied_lines,
            "forged_xff_lines": self.forged_xff_lines,
            "spoofed_direct_lines": self.spoofed_direct_lines,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "fallbacks": list(self.fallbacks),
            "orgs": [o.to_dict() for o in self.orgs],
        }

    def write(self, path: Path) -> None:
        """Write the truth as indented JSON."""
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Truth:
        """Read a truth file written by :meth:`write`."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegiongateError(f"{path}: cannot read the truth ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != TRUTH_FORMAT:
            raise RegiongateError(f"{path}: not a {TRUTH_FORMAT} file")
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
            raise RegiongateError(f"{path}: a damaged {TRUTH_FORMAT} file ({what})") from None

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> Truth:
        return cls(
            seed=data["seed"],
            params=data["params"],
            lines=data["lines"],
            header_lines=data["header_lines"],
            valid_lines=data["valid_lines"],
            malformed=data["malformed"],
            proxied_lines=data["proxied_lines"],
            forged_xff_lines=data["forged_xff_lines"],
            spoofed_direct_lines=data["spoofed_direct_lines"],
            first_time=data["first_time"],
            last_time=data["last_time"],
            fallbacks=data["fallbacks"],
            orgs=[OrgTruth.from_dict(o) for o in data["orgs"]],
            unsupported=tuple(data["unsupported"]),
            generator=data["generator"],
        )


# --- address pools -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pool:
    """Candidate ranges of one family: indices into the family's range arrays."""

    version: int
    index: _I64
    cdf: _F64  # cumulative choice weights (IPv4: sqrt of the size), last = 1


class _Family:
    """One address family's ranges with the answer columns of their rows."""

    def __init__(
        self,
        version: int,
        firsts: Callable[[_I64], list[int]],
        lasts: Callable[[_I64], list[int]],
        sizes: _F64,
        rows: _I64,
        snapshot: Snapshot,
    ) -> None:
        self.version = version
        self.firsts = firsts
        self.lasts = lasts
        self.sizes = sizes
        cols = snapshot.columns(np.arange(snapshot.rows, dtype=np.int64))
        country = cols.country_idx.astype(np.int32)[rows]
        subdivision = cols.subdivision_idx.astype(np.int32)[rows]
        self.flags = cols.flags.astype(np.int32)[rows]
        ncountries = len(snapshot.countries)
        self.codes = list(snapshot.countries.tolist())
        self.codes[0] = UNKNOWN_LABEL
        self.codes.extend(TRACKED_SUBDIVISIONS)
        # A label per range: a tracked subdivision, else the country (index 0: unknown).
        label = country.copy()
        subs = list(snapshot.subdivisions.tolist())
        for j, sub in enumerate(TRACKED_SUBDIVISIONS):
            if sub in subs:
                label[subdivision == subs.index(sub)] = ncountries + j
        self.label = label
        countries = list(snapshot.countries.tolist())
        home_country = np.zeros(len(rows), dtype=np.bool_)
        for c in _SUBDIVISION_COUNTRIES:
            if c in countries:
                home_country |= country == countries.index(c)
        tracked = label >= ncountries
        clean = (self.flags & (_BAD_BITS | _ANON_BITS)) == 0
        undisputed = (self.flags & _DISPUTED_BIT) == 0
        self.home_ok = clean & np.where(tracked, home_country, undisputed)
        self.anon_ok = ((self.flags & _HARD_BAD_BITS) == 0) & undisputed
        self.unsupported_label = np.isin(
            label, [i for i, code in enumerate(self.codes) if code in UNSUPPORTED]
        )
        self._cache: dict[Any, _Pool | None] = {}

    def code(self, label: str) -> int | None:
        try:
            return self.codes.index(label)
        except ValueError:
            return None

    def _pool(self, mask: _Bool) -> _Pool | None:
        index = np.flatnonzero(mask).astype(np.int64)
        if not len(index):
            return None
        weights = np.sqrt(self.sizes[index]) if self.version == 4 else np.ones(len(index))
        cdf = np.cumsum(weights)
        cdf /= cdf[-1]
        return _Pool(self.version, index, cdf)

    def home(self, label: str) -> _Pool | None:
        """Ranges to find people in ``label`` at."""
        key = ("home", label)
        if key not in self._cache:
            code = self.code(label)
            self._cache[key] = (
                None
                if code is None or code == 0
                else self._pool(self.home_ok & (self.label == code))
            )
        return self._cache[key]

    def anonymizer(self, flag: Flag, located: str) -> _Pool | None:
        """Ranges flagged ``flag``; ``located`` = supported, unsupported, any (known country
        first), or a label."""
        key = ("anon", flag, located)
        if key not in self._cache:
            mask = self.anon_ok & ((self.flags & FLAG_BITS[flag]) != 0)
            if located == "supported":
                mask &= ~self.unsupported_label & (self.label != 0)
            elif located == "unsupported":
                mask &= self.unsupported_label
            elif located != "any":
                code = self.code(located)
                mask &= self.label == (code if code is not None else -1)
            self._cache[key] = self._pool(mask)
        return self._cache[key]

    def has_home(self, label: str) -> bool:
        return self.home(label) is not None


def _v4_family(snapshot: Snapshot) -> _Family:
    starts_raw: npt.NDArray[Any] | None = getattr(snapshot, "_v4_start", None)
    rows_raw: npt.NDArray[Any] | None = getattr(snapshot, "_v4_row", None)
    if starts_raw is None or rows_raw is None:  # pragma: no cover - another Snapshot build
        ranges = list(snapshot.iter_ranges(4))
        starts_raw = np.array([r[0] for r in ranges], dtype=np.int64)
        rows_raw = np.array([r[2] for r in ranges], dtype=np.int64)
    starts = np.asarray(starts_raw, dtype=np.int64)
    rows = np.asarray(rows_raw, dtype=np.int64)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    if len(ends):
        ends[-1] = V4_MAX
    sizes = (ends - starts + 1).astype(np.float64)

    def firsts(index: _I64) -> list[int]:
        return [int(v) for v in starts[index].tolist()]

    def lasts(index: _I64) -> list[int]:
        return [int(v) for v in ends[index].tolist()]

    return _Family(4, firsts, lasts, sizes, rows, snapshot)


def _v6_family(snapshot: Snapshot) -> _Family | None:
    hi: npt.NDArray[Any] | None = getattr(snapshot, "_v6_hi", None)
    lo: npt.NDArray[Any] | None = getattr(snapshot, "_v6_lo", None)
    rows_raw: npt.NDArray[Any] | None = getattr(snapshot, "_v6_row", None)
    if hi is None or lo is None or rows_raw is None or not len(hi):  # pragma: no cover
        return None
    rows = np.asarray(rows_raw, dtype=np.int64)
    n = len(rows)

    def first(i: int) -> int:
        return (int(hi[i]) << 64) | int(lo[i])

    def firsts(index: _I64) -> list[int]:
        return [first(i) for i in index.tolist()]

    def lasts(index: _I64) -> list[int]:
        return [first(i + 1) - 1 if i + 1 < n else (1 << 128) - 1 for i in index.tolist()]

    return _Family(6, firsts, lasts, np.ones(n), rows, snapshot)


# --- organisations and their sites ---------------------------------------------------------------


@dataclass(slots=True)
class _Site:
    """A block of addresses one organisation's requests come from, and who is behind it."""

    version: int
    base: int
    span: int
    weight: float
    label: int  # index into the label table
    user: int  # where the people are: index into the label table
    flags: int  # anonymizer flag bits of the range


@dataclass(slots=True)
class _Org:
    name: str
    kind: str
    home: str
    home_requested: str
    fallback: str | None = None
    travel: str | None = None
    keys: list[str] = field(default_factory=list)
    key_weights: list[float] = field(default_factory=list)
    sites: list[_Site] = field(default_factory=list)
    ua: tuple[int, int] = (0, 0)
    weight: float = 1.0


class _Planner:
    """Chooses every organisation's home, sites, keys and habits (all from one RNG)."""

    def __init__(self, snapshot: Snapshot, rng: np.random.Generator, ipv6_share: float) -> None:
        self.rng = rng
        self.v4 = _v4_family(snapshot)
        self.v6 = _v6_family(snapshot) if ipv6_share > 0 else None
        self.ipv6_share = ipv6_share
        self.labels: list[str] = []
        self._label_index: dict[str, int] = {}

    def label(self, name: str) -> int:
        if name not in self._label_index:
            self._label_index[name] = len(self.labels)
            self.labels.append(name)
        return self._label_index[name]

    def draw(self, weights: Mapping[str, float], ok: Callable[[str], bool]) -> str | None:
        names = [n for n in weights if ok(n)]
        if not names:
            return None
        p = np.array([weights[n] for n in names], dtype=np.float64)
        return names[int(self.rng.choice(len(names), p=p / p.sum()))]

    def territory(
        self, weights: Mapping[str, float], what: str
    ) -> tuple[str, str, str | None] | None:
        """(requested, used, fallback note) for a home drawn from ``weights``."""
        names = list(weights)
        p = np.array([weights[n] for n in names], dtype=np.float64)
        requested = names[int(self.rng.choice(len(names), p=p / p.sum()))]
        if self.v4.has_home(requested):
            return requested, requested, None
        used = self.draw(weights, self.v4.has_home)
        if used is None:
            return None
        return requested, used, f"no {what} ranges for {requested} in the snapshot: used {used}"

    def any_home(self, exclude: Sequence[str]) -> str | None:
        """The territory with the most home ranges outside ``exclude`` (a last resort)."""
        best: tuple[int, str] | None = None
        for code in self.v4.codes[1:]:
            if code in exclude:
                continue
            pool = self.v4.home(code)
            if pool is not None and (best is None or len(pool.index) > best[0]):
                best = (len(pool.index), code)
        return best[1] if best else None

    def sites(
        self,
        family: _Family,
        pool: _Pool,
        k: int,
        weight: float,
        user: str | None = None,
        span_bits: tuple[int, int] = _SITE_BITS,
    ) -> list[_Site]:
        """``k`` sites in ``pool`` sharing ``weight``; ``user`` defaults to the located label."""
        idx = np.searchsorted(pool.cdf, self.rng.random(k), side="right")
        chosen = pool.index[np.minimum(idx, len(pool.index) - 1)]
        firsts = family.firsts(chosen)
        lasts = family.lasts(chosen)
        shares = self.rng.dirichlet(np.full(k, 1.5)) if k > 1 else np.ones(1)
        out: list[_Site] = []
        for j, i in enumerate(chosen.tolist()):
            size = lasts[j] - firsts[j] + 1
            if family.version == 4:
                bits = int(self.rng.integers(span_bits[0], span_bits[1] + 1))
                span = min(size, 1 << bits)
            else:
                span = min(size, _V6_SITE)
            base = firsts[j] + self.below(size - span + 1)
            located = family.codes[int(family.label[i])]
            out.append(
                _Site(
                    version=family.version,
                    base=base,
                    span=span,
                    weight=weight * float(shares[j]),
                    label=self.label(located),
                    user=self.label(user if user is not None else located),
                    flags=int(family.flags[i]) & _ANON_BITS,
                )
            )
        return out

    def below(self, n: int) -> int:
        """A random integer in [0, n), for n up to 2**128."""
        if n <= 1 << 62:
            return int(self.rng.integers(0, n))
        return int.from_bytes(self.rng.bytes(24), "big") % n

    def home_sites(self, label: str, weight: float, user: str | None = None) -> list[_Site]:
        """1 to 5 IPv4 sites in ``label`` (and an IPv6 one when there are ranges)."""
        pool = self.v4.home(label)
        if pool is None:
            return []
        v6_pool = self.v6.home(label) if self.v6 is not None else None
        v6_weight = weight * self.ipv6_share if v6_pool is not None else 0.0
        k = int(self.rng.integers(1, 6))
        out = self.sites(self.v4, pool, k, weight - v6_weight, user)
        if v6_pool is not None and self.v6 is not None:
            out += self.sites(self.v6, v6_pool, 1, v6_weight, user)
        return out

    def exit_pool(self, flag: Flag) -> tuple[_Family, _Pool] | None:
        for located in ("supported", "any"):
            pool = self.v4.anonymizer(flag, located)
            if pool is not None:
                return self.v4, pool
        return None


def _allocate(orgs: int, mix: Mapping[str, float]) -> dict[str, int]:
    """Organisations per kind: largest remainders, every kind with a share gets one if it can."""
    total = sum(mix.values())
    raw = {k: orgs * mix[k] / total for k in KINDS}
    counts = {k: math.floor(v) for k, v in raw.items()}
    left = orgs - sum(counts.values())
    wanted = [k for k in KINDS if mix[k] > 0]
    # Only kinds with a share get a leftover: a zero share stays zero (saas by default).
    for k in sorted(wanted, key=lambda k: (-(raw[k] - counts[k]), KINDS.index(k)))[:left]:
        counts[k] += 1
    if orgs >= len(wanted):
        for k in wanted:
            if counts[k] == 0:
                donor = max(KINDS, key=lambda d: counts[d])
                counts[donor] -= 1
                counts[k] += 1
    return counts


def _note(org: _Org, fallbacks: list[str], message: str) -> None:
    org.fallback = message if org.fallback is None else f"{org.fallback}; {message}"
    fallbacks.append(f"{org.name}: {message}")


def _home(
    planner: _Planner, org: _Org, weights: Mapping[str, float], what: str, fallbacks: list[str]
) -> str:
    """Draw the org's home from ``weights``; another territory when the snapshot has none."""
    drawn = planner.territory(weights, what)
    if drawn is None:
        exclude = UNSUPPORTED if what == "supported" else ()
        used = planner.any_home(exclude) or planner.any_home(())
        if used is None:
            raise RegiongateError("the snapshot has no usable IPv4 ranges")
        drawn = (next(iter(weights)), used, f"no {what} ranges in the snapshot: used {used}")
    org.home_requested, org.home, message = drawn
    if message:
        _note(org, fallbacks, message)
    return org.home


def _plan_local(planner: _Planner, org: _Org, fallbacks: list[str]) -> None:
    """ordinary and traveller: at home in a supported country, now and then elsewhere."""
    rng = planner.rng
    home = _home(planner, org, _SUPPORTED_HOMES, "supported", fallbacks)
    travel = float(rng.uniform(0.01, 0.08)) if org.kind == "traveller" else 0.0
    roam = float(rng.uniform(0.03, 0.15)) if org.kind == "ordinary" and rng.random() < 0.15 else 0.0
    if travel:
        drawn = planner.territory(_UNSUPPORTED_HOMES, "unsupported")
        if drawn is None:
            _note(org, fallbacks, "no unsupported ranges in the snapshot: no travel")
            travel = 0.0
        else:
            org.travel = drawn[1]
            if drawn[2]:
                _note(org, fallbacks, f"travel: {drawn[2]}")
    other: str | None = None
    if roam:
        other = planner.draw(_SUPPORTED_HOMES, lambda c: c != home and planner.v4.has_home(c))
    org.sites = planner.home_sites(home, 1.0 - travel - (roam if other is not None else 0.0))
    if other is not None:
        org.sites += planner.home_sites(other, roam)
    if org.travel is not None:
        org.sites += planner.home_sites(org.travel, travel)


def _plan_unsupported(planner: _Planner, org: _Org, fallbacks: list[str]) -> None:
    """unsupported and vpn: at home in an unsupported territory, vpn mostly through exits."""
    rng = planner.rng
    home = _home(planner, org, _UNSUPPORTED_HOMES, "unsupported", fallbacks)
    leak = 1.0
    if org.kind == "vpn":
        leak = float(rng.uniform(0.05, 0.25))
        k = int(rng.integers(1, 4))
        flags = [f for f, _ in _EXIT_FLAGS]
        p = np.array([w for _, w in _EXIT_FLAGS])
        for _ in range(k):
            wanted = flags[int(rng.choice(len(flags), p=p))]
            for flag in (wanted, *flags):
                found = planner.exit_pool(flag)
                if found is not None:
                    org.sites += planner.sites(found[0], found[1], 1, (1.0 - leak) / k, user=home)
                    break
        if not org.sites:
            _note(org, fallbacks, "no anonymizer ranges in the snapshot: all traffic from home")
            leak = 1.0
    org.sites += planner.home_sites(home, leak)


def _plan_reseller(planner: _Planner, org: _Org, fallbacks: list[str]) -> None:
    """One hosting range of one cloud region, end users mostly in unsupported territories."""
    rng = planner.rng
    regions = list(_CLOUD_HOMES)
    p = np.array([_CLOUD_HOMES[r] for r in regions], dtype=np.float64)
    region = regions[int(rng.choice(len(regions), p=p / p.sum()))]
    org.home_requested = region
    cloud = _cloud_site(planner, org, region, fallbacks)
    org.home = planner.labels[cloud.label]
    # End users: mostly in unsupported territories, the rest in supported countries.
    far = [str(u) for u in rng.choice(list(_UNSUPPORTED_HOMES), size=int(rng.integers(4, 9)),
                                      replace=False)]  # fmt: skip
    near = [str(u) for u in rng.choice(list(_SUPPORTED_HOMES), size=3, replace=False)]
    far_total = float(rng.uniform(0.6, 0.9))
    for users, total in ((far, far_total), (near, 1.0 - far_total)):
        _fan_out(planner, org, cloud, users, total)


def _plan_saas(planner: _Planner, org: _Org, fallbacks: list[str]) -> None:
    """An honest service in a supported country: its backend in one hosting range of one
    cloud region in a supported country (at home 70% of the time when the snapshot has
    hosting ranges there), its end users in supported countries, most at home."""
    rng = planner.rng
    home = _home(planner, org, _SUPPORTED_HOMES, "supported", fallbacks)
    hosted = planner.v4.anonymizer(Flag.HOSTING, home) is not None
    if hosted and rng.random() < 0.7:
        region = home
    else:
        regions = list(_CLOUD_HOMES)
        p = np.array([_CLOUD_HOMES[r] for r in regions], dtype=np.float64)
        region = regions[int(rng.choice(len(regions), p=p / p.sum()))]
    cloud = _cloud_site(planner, org, region, fallbacks)
    others = [c for c in _SUPPORTED_HOMES if c != home]
    k = int(rng.integers(2, 6))
    abroad = [str(u) for u in rng.choice(others, size=k, replace=False)]
    at_home = float(rng.uniform(0.5, 0.9))
    _fan_out(planner, org, cloud, [home], at_home)
    _fan_out(planner, org, cloud, abroad, 1.0 - at_home)


def _fan_out(
    planner: _Planner, org: _Org, cloud: _Site, users: Sequence[str], total: float
) -> None:
    """Sites on ``cloud``'s addresses whose people are in ``users``, sharing ``total``."""
    shares = planner.rng.dirichlet(np.ones(len(users))) if len(users) > 1 else np.ones(1)
    for user, share in zip(users, shares.tolist(), strict=True):
        org.sites.append(
            _Site(
                version=4,
                base=cloud.base,
                span=cloud.span,
                weight=total * share,
                label=cloud.label,
                user=planner.label(user),
                flags=cloud.flags,
            )
        )


def _cloud_site(planner: _Planner, org: _Org, region: str, fallbacks: list[str]) -> _Site:
    """A block of a hosting range in ``region`` (else another hosting or anonymizer range,
    noted as a fallback)."""
    pool: _Pool | None = None
    for flag, located in (
        (Flag.HOSTING, region),
        (Flag.HOSTING, "supported"),
        (Flag.HOSTING, "any"),
        (Flag.VPN, "supported"),
        (Flag.VPN, "any"),
        (Flag.TOR, "any"),
    ):
        pool = planner.v4.anonymizer(flag, located)
        if pool is not None:
            if (flag, located) != (Flag.HOSTING, region):
                _note(
                    org,
                    fallbacks,
                    f"no hosting ranges in {region} in the snapshot: used a {flag} range",
                )
            break
    if pool is None:
        fallback = planner.any_home(UNSUPPORTED) or planner.any_home(())
        pool = planner.v4.home(fallback) if fallback is not None else None
        if pool is None:
            raise RegiongateError("the snapshot has no usable IPv4 ranges")
        _note(org, fallbacks, f"no anonymizer ranges in the snapshot: used {fallback}")
    return planner.sites(planner.v4, pool, 1, 1.0, span_bits=(8, 12))[0]


def _plan_orgs(planner: _Planner, counts: Mapping[str, int], fallbacks: list[str]) -> list[_Org]:
    rng = planner.rng
    plans = {
        "ordinary": _plan_local,
        "traveller": _plan_local,
        "unsupported": _plan_unsupported,
        "vpn": _plan_unsupported,
        "reseller": _plan_reseller,
        "saas": _plan_saas,
    }
    result: list[_Org] = []
    for kind in KINDS:
        for n in range(1, counts[kind] + 1):
            org = _Org(name=f"org-{kind}-{n}", kind=kind, home="", home_requested="")
            plans[kind](planner, org, fallbacks)
            if not org.sites:
                raise RegiongateError(f"{org.name}: no addresses to draw from in the snapshot")
            nkeys = int(rng.integers(1, 6))
            org.keys = ["kid_" + rng.bytes(16).hex() for _ in range(nkeys)]
            kw = 1.0 / np.arange(1, nkeys + 1) ** 1.3
            org.key_weights = (kw / kw.sum()).tolist()
            a, b = rng.choice(len(_USER_AGENTS), size=2, replace=False).tolist()
            org.ua = (int(a), int(b))
            result.append(org)
    # Zipf-like volumes over a random order; resellers on top.
    ranks = rng.permutation(len(result)) + 1
    weights = 1.0 / ranks.astype(np.float64) ** 1.1
    top = float(weights.max()) if len(weights) else 1.0
    for org, w in zip(result, weights.tolist(), strict=True):
        if org.kind == "reseller":
            org.weight = top * float(rng.uniform(0.4, 1.2))
        elif org.kind == "saas":  # a busy service, sometimes as busy as a reseller
            org.weight = max(w, top * float(rng.uniform(0.02, 0.5)))
        else:
            org.weight = w
    return result


# --- request hints -------------------------------------------------------------------------------

# Accept-Language values people in a territory send, with weights. Where a language has no
# region (``es-419``, ``ar``, ``en``) the value says nothing about the territory; some people
# everywhere use an English UI.
_EN: Final = (("en-US,en;q=0.9", 0.06), ("en", 0.02))
_LANGUAGES: Final[Mapping[str, tuple[tuple[str, float], ...]]] = {
    "US": (("en-US,en;q=0.9", 0.82), ("en-US", 0.08), ("es-US,es;q=0.9,en;q=0.8", 0.07),
           ("en", 0.03)),
    "IN": (("en-IN,en;q=0.9,hi;q=0.8", 0.55), ("hi-IN,hi;q=0.9,en;q=0.8", 0.25),
           ("en-US,en;q=0.9", 0.15), ("en-GB,en;q=0.9", 0.05)),
    "DE": (("de-DE,de;q=0.9,en;q=0.8", 0.8), ("de", 0.08), *_EN),
    "GB": (("en-GB,en;q=0.9", 0.85), ("en-GB", 0.07), *_EN),
    "JP": (("ja-JP,ja;q=0.9", 0.6), ("ja", 0.3), *_EN),
    "FR": (("fr-FR,fr;q=0.9,en;q=0.8", 0.8), ("fr", 0.12), *_EN),
    "BR": (("pt-BR,pt;q=0.9,en;q=0.8", 0.9), *_EN),
    "CA": (("en-CA,en;q=0.9", 0.6), ("fr-CA,fr;q=0.9,en;q=0.8", 0.25), *_EN),
    "KR": (("ko-KR,ko;q=0.9,en;q=0.8", 0.7), ("ko", 0.2), *_EN),
    "AU": (("en-AU,en;q=0.9", 0.85), *_EN),
    "NL": (("nl-NL,nl;q=0.9,en;q=0.8", 0.75), ("en-GB,en;q=0.9", 0.1), *_EN),
    "ES": (("es-ES,es;q=0.9", 0.85), ("ca-ES,ca;q=0.9,es;q=0.8", 0.05), *_EN),
    "IT": (("it-IT,it;q=0.9,en;q=0.8", 0.85), ("it", 0.07), *_EN),
    "SG": (("en-SG,en;q=0.9", 0.5), ("zh-SG,zh;q=0.9,en;q=0.8", 0.2), ("en-GB,en;q=0.9", 0.1),
           *_EN),
    "MX": (("es-MX,es;q=0.9", 0.75), ("es-419,es;q=0.9", 0.15), *_EN),
    "PL": (("pl-PL,pl;q=0.9,en;q=0.8", 0.85), ("pl", 0.07), *_EN),
    "SE": (("sv-SE,sv;q=0.9,en;q=0.8", 0.8), ("en-GB,en;q=0.9", 0.1), *_EN),
    "CH": (("de-CH,de;q=0.9,en;q=0.8", 0.55), ("fr-CH,fr;q=0.9", 0.25), ("it-CH,it;q=0.9", 0.05),
           *_EN),
    "ID": (("id-ID,id;q=0.9,en;q=0.8", 0.8), ("id", 0.1), *_EN),
    "TR": (("tr-TR,tr;q=0.9,en;q=0.8", 0.85), ("tr", 0.07), *_EN),
    "IL": (("he-IL,he;q=0.9,en;q=0.8", 0.7), ("en-IL,en;q=0.9", 0.2), *_EN),
    "AE": (("en-AE,en;q=0.9", 0.5), ("ar-AE,ar;q=0.9,en;q=0.8", 0.4), *_EN),
    "ZA": (("en-ZA,en;q=0.9", 0.85), ("af-ZA,af;q=0.9", 0.05), *_EN),
    "NG": (("en-NG,en;q=0.9", 0.85), ("en-GB,en;q=0.9", 0.07), *_EN),
    "AR": (("es-AR,es;q=0.9", 0.75), ("es-419,es;q=0.9", 0.15), *_EN),
    "VN": (("vi-VN,vi;q=0.9,en;q=0.8", 0.8), ("vi", 0.1), *_EN),
    "PH": (("en-PH,en;q=0.9", 0.6), ("fil-PH,fil;q=0.9,en;q=0.8", 0.3), *_EN),
    "IE": (("en-IE,en;q=0.9", 0.8), ("en-GB,en;q=0.9", 0.12), *_EN),
    "KE": (("en-KE,en;q=0.9,sw;q=0.8", 0.7), ("sw-KE,sw;q=0.9,en;q=0.8", 0.2), *_EN),
    "EG": (("ar-EG,ar;q=0.9,en;q=0.8", 0.75), ("ar", 0.1), *_EN),
    "CN": (("zh-CN,zh;q=0.9", 0.72), ("zh-CN", 0.1), ("zh", 0.05),
           ("en-US,en;q=0.9,zh-CN;q=0.8", 0.1), ("en", 0.03)),
    "HK": (("zh-HK,zh;q=0.9,en;q=0.8", 0.5), ("en-HK,en;q=0.9", 0.2), ("zh-TW,zh;q=0.9", 0.1),
           ("en-US,en;q=0.9", 0.15), ("zh-CN,zh;q=0.9", 0.05)),
    "RU": (("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7", 0.8), ("ru", 0.1), *_EN),
    "IR": (("fa-IR,fa;q=0.9,en-US;q=0.8", 0.6), ("fa", 0.2), ("en-US,en;q=0.9", 0.2)),
    "BY": (("ru-BY,ru;q=0.9", 0.45), ("be-BY,be;q=0.9,ru;q=0.8", 0.15), ("ru-RU,ru;q=0.9", 0.25),
           *_EN),
    "VE": (("es-VE,es;q=0.9", 0.6), ("es-419,es;q=0.9", 0.3), *_EN),
    "CU": (("es-CU,es;q=0.9", 0.5), ("es-419,es;q=0.9", 0.3), ("es", 0.15), ("en", 0.05)),
    "SY": (("ar-SY,ar;q=0.9", 0.6), ("ar", 0.3), *_EN),
    "KP": (("ko-KP,ko;q=0.9", 0.7), ("ko", 0.3)),
    # The occupied regions: Russian and Ukrainian, with Ukraine or Russia as the region.
    "UA-43": (("ru-UA,ru;q=0.9", 0.35), ("ru-RU,ru;q=0.9", 0.4), ("uk-UA,uk;q=0.9", 0.15),
              ("ru", 0.1)),
    "UA-40": (("ru-UA,ru;q=0.9", 0.3), ("ru-RU,ru;q=0.9", 0.5), ("uk-UA,uk;q=0.9", 0.1),
              ("ru", 0.1)),
    "UA-14": (("ru-UA,ru;q=0.9", 0.45), ("ru-RU,ru;q=0.9", 0.3), ("uk-UA,uk;q=0.9", 0.2),
              ("ru", 0.05)),
    "UA-09": (("ru-UA,ru;q=0.9", 0.45), ("ru-RU,ru;q=0.9", 0.3), ("uk-UA,uk;q=0.9", 0.2),
              ("ru", 0.05)),
}  # fmt: skip
_LANGUAGE_ELSEWHERE: Final = (("en-US,en;q=0.9", 0.6), ("en", 0.4))
# IANA zones people in a territory send (a server sends UTC).
_UTC: Final = (("UTC", 0.03),)
_ZONES: Final[Mapping[str, tuple[tuple[str, float], ...]]] = {
    "US": (("America/New_York", 0.45), ("America/Chicago", 0.22), ("America/Denver", 0.06),
           ("America/Los_Angeles", 0.24), *_UTC),
    "IN": (("Asia/Kolkata", 0.97), *_UTC),
    "DE": (("Europe/Berlin", 0.97), *_UTC),
    "GB": (("Europe/London", 0.97), *_UTC),
    "JP": (("Asia/Tokyo", 0.97), *_UTC),
    "FR": (("Europe/Paris", 0.97), *_UTC),
    "BR": (("America/Sao_Paulo", 0.97), *_UTC),
    "CA": (("America/Toronto", 0.6), ("America/Vancouver", 0.37), *_UTC),
    "KR": (("Asia/Seoul", 0.97), *_UTC),
    "AU": (("Australia/Sydney", 0.6), ("Australia/Melbourne", 0.37), *_UTC),
    "NL": (("Europe/Amsterdam", 0.97), *_UTC),
    "ES": (("Europe/Madrid", 0.97), *_UTC),
    "IT": (("Europe/Rome", 0.97), *_UTC),
    "SG": (("Asia/Singapore", 0.97), *_UTC),
    "MX": (("America/Mexico_City", 0.97), *_UTC),
    "PL": (("Europe/Warsaw", 0.97), *_UTC),
    "SE": (("Europe/Stockholm", 0.97), *_UTC),
    "CH": (("Europe/Zurich", 0.97), *_UTC),
    "ID": (("Asia/Jakarta", 0.97), *_UTC),
    "TR": (("Europe/Istanbul", 0.97), *_UTC),
    "IL": (("Asia/Jerusalem", 0.97), *_UTC),
    "AE": (("Asia/Dubai", 0.97), *_UTC),
    "ZA": (("Africa/Johannesburg", 0.97), *_UTC),
    "NG": (("Africa/Lagos", 0.97), *_UTC),
    "AR": (("America/Argentina/Buenos_Aires", 0.97), *_UTC),
    "VN": (("Asia/Ho_Chi_Minh", 0.97), *_UTC),
    "PH": (("Asia/Manila", 0.97), *_UTC),
    "IE": (("Europe/Dublin", 0.97), *_UTC),
    "KE": (("Africa/Nairobi", 0.97), *_UTC),
    "EG": (("Africa/Cairo", 0.97), *_UTC),
    "CN": (("Asia/Shanghai", 0.93), ("Asia/Urumqi", 0.04), *_UTC),
    "HK": (("Asia/Hong_Kong", 0.97), *_UTC),
    "RU": (("Europe/Moscow", 0.7), ("Asia/Yekaterinburg", 0.08), ("Asia/Novosibirsk", 0.08),
           ("Europe/Samara", 0.06), ("Asia/Vladivostok", 0.05), *_UTC),
    "IR": (("Asia/Tehran", 0.97), *_UTC),
    "BY": (("Europe/Minsk", 0.97), *_UTC),
    "VE": (("America/Caracas", 0.97), *_UTC),
    "CU": (("America/Havana", 0.97), *_UTC),
    "SY": (("Asia/Damascus", 0.97), *_UTC),
    "KP": (("Asia/Pyongyang", 0.97), *_UTC),
    # Crimea's zone names Ukraine; Moscow time is what the occupied east keeps.
    "UA-43": (("Europe/Simferopol", 0.8), ("Europe/Moscow", 0.17), *_UTC),
    "UA-40": (("Europe/Simferopol", 0.8), ("Europe/Moscow", 0.17), *_UTC),
    "UA-14": (("Europe/Moscow", 0.6), ("Europe/Kyiv", 0.37), *_UTC),
    "UA-09": (("Europe/Moscow", 0.6), ("Europe/Kyiv", 0.37), *_UTC),
}  # fmt: skip
_ZONE_ELSEWHERE: Final = (("UTC", 1.0),)
# Where a reseller company says it is when it pays from an unsupported place.
_OFFSHORE_PAYMENTS: Final = {"HK": 5, "CN": 3, "RU": 2}
_GOLDEN: Final = (math.sqrt(5) - 1) / 2  # a user's fixed language and zone: frac(user × this)
_HINT_STREAM: Final = 0x68696E7473  # "hints": the hint generator's stream, beside the seed


@dataclass(slots=True)
class _Hints:
    """What ``hints=True`` adds to each line, as tables a chunk samples from with its own
    generator (the main one's stream, and so the default output, stays as it is)."""

    rng: np.random.Generator
    p_user: _F64  # per org: share of lines that pass an end user
    p_lang: _F64  # per org: share of lines with Accept-Language
    p_tz: _F64  # per org: share of lines with a time zone
    site_speaker: _I64  # per site: whose language and zone (index into speakers)
    site_user_lo: _I64  # per site: the first of its end users (global index)
    site_user_n: _I64  # per site: how many (0: none)
    user_text: _Obj  # per end user: the formatted field
    lang_cum: _F64  # per speaker s: cumulated weights in [s, s + 1)
    lang_lo: _I64
    lang_hi: _I64
    lang_text: _Obj
    tz_cum: _F64
    tz_lo: _I64
    tz_hi: _I64
    tz_text: _Obj
    no_user: str
    no_lang: str
    no_tz: str
    end: str
    payment: list[str]  # per org
    end_users: list[int]  # per org: distinct end-user ids it passes
    lines: _I64  # (orgs, 3): valid lines with each hint


def _plan_hints(seed: int, plan: Sequence[_Org], planner: _Planner, fmt: LogFormat) -> _Hints:
    """Every organisation's end users, languages, zones and payment country."""
    rng = np.random.default_rng([_HINT_STREAM, seed & (2**63 - 1), int(seed < 0)])
    p_user, p_lang, p_tz = [], [], []
    speakers: dict[str, int] = {}
    site_speaker: list[int] = []
    site_user_lo: list[int] = []
    site_user_n: list[int] = []
    user_names: list[str] = []
    payment: list[str] = []
    end_users: list[int] = []

    def speaker(label: str) -> int:
        return speakers.setdefault(label, len(speakers))

    def log_uniform(lo: float, hi: float) -> int:
        return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    for org in plan:
        fan_out = org.kind in ("reseller", "saas")
        strips = org.kind == "reseller" and rng.random() < 0.15  # rebuilds every request
        if org.kind == "reseller":
            users = 0 if rng.random() < 0.25 else log_uniform(200, 5000)
            p_user.append(float(rng.uniform(0.7, 1.0)))
        elif org.kind == "saas":
            users = 0 if rng.random() < 0.3 else log_uniform(100, 3000)
            p_user.append(float(rng.uniform(0.5, 1.0)))
        else:
            users = 0 if rng.random() < 0.5 else log_uniform(1, 40)
            p_user.append(float(rng.uniform(0.6, 1.0)))
        if strips:
            p_lang.append(0.0)
            p_tz.append(0.0)
        elif fan_out:
            p_lang.append(float(rng.uniform(0.3, 0.9)))
            p_tz.append(float(rng.uniform(0.15, 0.5)))
        else:
            p_lang.append(float(rng.uniform(0.1, 0.7)))
            p_tz.append(float(rng.uniform(0.15, 0.45)))
        salt = rng.bytes(3).hex()
        first = len(user_names)
        total = sum(s.weight for s in org.sites) or 1.0
        for site in org.sites:
            if fan_out:  # the people behind the proxy, each in the site's territory
                site_speaker.append(speaker(planner.labels[site.user]))
                n = max(1, round(users * site.weight / total)) if users else 0
            else:  # the organisation's own people, wherever their addresses are
                site_speaker.append(speaker(org.home))
                n = 0
            site_user_lo.append(len(user_names) if fan_out else first)
            site_user_n.append(n if fan_out else users)
            k0 = len(user_names) - first
            user_names.extend(f"u_{salt}_{k:05d}" for k in range(k0, k0 + n))
        if not fan_out:
            user_names.extend(f"u_{salt}_{k:05d}" for k in range(users))
        end_users.append(len(user_names) - first)
        payment.append(_payment_country(org, rng))

    def table(
        choices: Mapping[str, tuple[tuple[str, float], ...]],
        elsewhere: tuple[tuple[str, float], ...],
        fragment: Callable[[str], str],
    ) -> tuple[_F64, _I64, _I64, _Obj]:
        cum: list[float] = []
        lo: list[int] = []
        hi: list[int] = []
        text: list[str] = []
        for s, label in enumerate(speakers):
            values = choices.get(label, elsewhere)
            total = sum(w for _, w in values)
            lo.append(len(cum))
            running = 0.0
            for value, w in values:
                running += w / total
                cum.append(s + min(running, 1.0))
                text.append(fragment(value))
            cum[-1] = float(s + 1)
            hi.append(len(cum) - 1)
        return (
            np.array(cum, dtype=np.float64),
            np.array(lo, dtype=np.int64),
            np.array(hi, dtype=np.int64),
            _objects(text),
        )

    jsonl = fmt is LogFormat.JSONL

    def fragment(key: str) -> Callable[[str], str]:
        def text(value: str) -> str:
            return f',"{key}":{json.dumps(value)}' if jsonl else "," + _csv_field(value)

        return text

    user_frag, lang_frag, tz_frag = (fragment(key) for key in HINT_FIELDS)
    nulls = tuple(f',"{key}":null' if jsonl else "," for key in HINT_FIELDS)
    end = "}\n" if jsonl else "\n"
    lang = table(_LANGUAGES, _LANGUAGE_ELSEWHERE, lang_frag)
    tz = table(_ZONES, _ZONE_ELSEWHERE, tz_frag)
    return _Hints(
        rng=rng,
        p_user=np.array(p_user, dtype=np.float64),
        p_lang=np.array(p_lang, dtype=np.float64),
        p_tz=np.array(p_tz, dtype=np.float64),
        site_speaker=np.array(site_speaker, dtype=np.int64),
        site_user_lo=np.array(site_user_lo, dtype=np.int64),
        site_user_n=np.array(site_user_n, dtype=np.int64),
        user_text=_objects([user_frag(u) for u in user_names] or [nulls[0]]),
        lang_cum=lang[0],
        lang_lo=lang[1],
        lang_hi=lang[2],
        lang_text=lang[3],
        tz_cum=tz[0],
        tz_lo=tz[1],
        tz_hi=tz[2],
        tz_text=tz[3],
        no_user=nulls[0],
        no_lang=nulls[1],
        no_tz=nulls[2],
        end=end,
        payment=payment,
        end_users=end_users,
        lines=np.zeros((len(plan), 3), dtype=np.int64),
    )


def _payment_country(org: _Org, rng: np.random.Generator) -> str:
    """Where an organisation's payments come from (card and billing country)."""

    def draw(weights: Mapping[str, float]) -> str:
        names = list(weights)
        p = np.array([weights[n] for n in names], dtype=np.float64)
        return names[int(rng.choice(len(names), p=p / p.sum()))]

    home = org.home.split("-", 1)[0] if org.home != UNKNOWN_LABEL else "US"
    if org.kind == "vpn":  # half pay from home, the rest with a card from a supported country
        return home if rng.random() < 0.5 else draw(_SUPPORTED_HOMES)
    if org.kind == "reseller":  # the reseller company: mostly in a supported country
        roll = rng.random()
        if roll < 0.15:
            return draw(_OFFSHORE_PAYMENTS)
        if roll < 0.55 and home not in UNSUPPORTED:
            return home  # where its cloud region is
        return draw(_SUPPORTED_HOMES)
    return home


def _hint_columns(
    h: _Hints, org: _I64, site: _I64, malformed: _Bool, n: int
) -> tuple[_Obj, _Bool, _Bool, _Bool]:
    """The hint column of a chunk's lines (malformed lines: none, so that they stay what
    they are without hints) and which lines carry a user, a language and a zone."""
    u = h.rng.random((6, n))
    users = h.site_user_n[site]
    has_user = (u[0] < h.p_user[org]) & (users > 0)
    pick = np.floor(users * u[1] ** 2).astype(np.int64)  # a few busy users, a long tail
    user = h.site_user_lo[site] + np.minimum(pick, np.maximum(users - 1, 0))
    # A user keeps one language and zone; a line without a user draws its own.
    fixed = (user * _GOLDEN) % 1.0
    speaker = h.site_speaker[site]
    has_lang = (u[2] < h.p_lang[org]) & ~malformed
    has_tz = (u[4] < h.p_tz[org]) & ~malformed
    has_user &= ~malformed
    lang = _within(h.lang_cum, h.lang_lo, h.lang_hi, speaker, np.where(has_user, fixed, u[3]))
    tz = _within(h.tz_cum, h.tz_lo, h.tz_hi, speaker,
                 np.where(has_user, (user * _GOLDEN * _GOLDEN) % 1.0, u[5]))  # fmt: skip
    column = np.full(n, h.no_user, dtype=object)
    column[has_user] = h.user_text[user[has_user]]
    lang_col = np.full(n, h.no_lang, dtype=object)
    lang_col[has_lang] = h.lang_text[lang[has_lang]]
    tz_col = np.full(n, h.no_tz, dtype=object)
    tz_col[has_tz] = h.tz_text[tz[has_tz]]
    column = column + lang_col + tz_col + h.end
    column[malformed] = h.end
    return column, has_user, has_lang, has_tz


# --- line formatting -----------------------------------------------------------------------------

_Obj = npt.NDArray[np.object_]


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _objects(values: Sequence[str]) -> _Obj:
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr


class _Formatter:
    """A line as a few columns of strings, the format's constant text folded into them: a
    chunk is an (n, columns) object array joined at once, so no Python code runs per line.

    Per-chunk columns: ``sec`` (the time to the second, from a table of the chunk's distinct
    seconds), ``remote``, ``xff`` (the header with the text around it) and ``bytes``; the rest
    index tables built once: ``frac`` (milliseconds), ``okey`` (org and key), ``ep`` (method
    and path), ``status``, ``ua``. With ``hints`` a last column, ``hint``, carries the hint
    fields and the line's end (see :func:`_hint_columns`).
    """

    def __init__(self, fmt: LogFormat, orgs: Sequence[_Org], hints: bool = False) -> None:
        self.fmt = fmt
        self.hints = hints
        tail = "" if hints else ("}\n" if fmt is LogFormat.JSONL else "\n")
        keys = [(o.name, k) for o in orgs for k in o.keys]
        eps = [(m, p) for m, p, *_ in _ENDPOINTS]
        codes = [str(code) for code, _ in _STATUSES]
        millis = [f".{i:03d}" for i in range(1000)]
        self.order: tuple[str, ...]
        if fmt is LogFormat.JSONL:
            self.order = ("sec", "frac", "remote", "xff", "okey", "ep", "status", "bytes", "ua")
            self.sec_affix = ('{"time":"', "")
            self.xff_affix = ('","x_forwarded_for":"', '",')
            self.no_xff = '","x_forwarded_for":null,'
            okey = [f'"org":"{o}","key_id":"{k}",' for o, k in keys]
            ep = [f'"method":"{m}","path":"{p}","status":' for m, p in eps]
            status = [f'{c},"bytes":' for c in codes]
            frac = [f'{ms}Z","remote_addr":"' for ms in millis]
            ua = [f',"user_agent":{json.dumps(u)}{tail}' for u in _USER_AGENTS]
        elif fmt is LogFormat.CSV:
            self.order = ("sec", "frac", "remote", "xff", "okey", "ep", "status", "bytes", "ua")
            self.sec_affix = ("", "")
            self.xff_affix = (",", ",")
            self.no_xff = ",,"
            okey = [f"{o},{k}," for o, k in keys]
            ep = [f"{m},{p}," for m, p in eps]
            status = [f"{c}," for c in codes]
            frac = [f"{ms}Z," for ms in millis]
            ua = [f",{_csv_field(u)}{tail}" for u in _USER_AGENTS]
        else:
            self.order = ("remote", "sec", "ep", "status", "bytes", "ua", "xff", "okey")
            self.sec_affix = (" - - [", ' +0000] "')
            self.xff_affix = ("", '" ')
            self.no_xff = '-" '
            okey = [f"{o} {k}\n" for o, k in keys]
            ep = [f'{m} {p} HTTP/1.1" ' for m, p in eps]
            status = [f"{c} " for c in codes]
            frac = [""] * 1000
            ua = [f' "-" "{u}" "' for u in _USER_AGENTS]
        if hints:
            self.order = (*self.order, "hint")
        self.okey = _objects(okey)
        self.ep = _objects(ep)
        self.status = _objects(status)
        self.frac = _objects(frac)
        self.ua = _objects(ua)

    @property
    def header(self) -> str:
        names = (*FIELDS, *HINT_FIELDS) if self.hints else FIELDS
        return ",".join(names) + "\n" if self.fmt is LogFormat.CSV else ""

    def xff(self, chains: _Obj, multi: _Bool) -> _Obj:
        """X-Forwarded-For values as the ``xff`` column (``multi``: the value has a comma)."""
        if self.fmt is LogFormat.CSV and multi.any():
            chains = chains.copy()
            chains[multi] = '"' + chains[multi] + '"'
        before, after = self.xff_affix
        column: _Obj = before + chains + after
        return column

    def seconds(self, sec: _I64) -> _Obj:
        """The ``sec`` column of epoch seconds (non-decreasing)."""
        distinct, inverse = np.unique(sec, return_inverse=True)
        day = distinct // 86400
        first = int(day[0])
        days = _objects([self.day_prefix(d) for d in range(first, int(day[-1]) + 1)])
        before, after = self.sec_affix
        text: _Obj = before + days[day - first] + _hms_table()[distinct % 86400] + after
        return text[inverse.reshape(-1)]

    def join(self, columns: Mapping[str, _Obj | npt.NDArray[Any]], n: int) -> _Obj:
        """An (n, columns) array of the chunk's lines, each ending in a newline."""
        m = np.empty((n, len(self.order)), dtype=object)
        for j, name in enumerate(self.order):
            m[:, j] = columns[name]
        return m

    def truncate(self, line: str, rng: np.random.Generator) -> str:
        """``line`` cut short so that no reader takes it for a line (see the docstring)."""
        if self.fmt is LogFormat.JSONL:
            return line[: int(rng.integers(1, len(line) - 1))]
        if self.fmt is LogFormat.CSV:
            # Right after the time, with or without its comma: the row has no peer. (A cut in
            # a quoted field would swallow the next line; one in the address can leave a
            # shorter valid address.)
            return line[: line.index(",") + int(rng.integers(0, 2))]
        end = line.index(' "-" "')
        return line[: int(rng.integers(1, end))]

    def day_prefix(self, day: int) -> str:
        d = dt.date(1970, 1, 1) + dt.timedelta(days=day)
        if self.fmt is LogFormat.NGINX:
            return f"{d.day:02d}/{_MONTHS[d.month - 1]}/{d.year:04d}:"
        return f"{d.isoformat()}T"


_OCTETS: Final = _objects([str(i) for i in range(256)])
_HMS: list[_Obj] = []


def _hms_table() -> _Obj:
    if not _HMS:
        _HMS.append(
            _objects([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400)])
        )
    return _HMS[0]


def _v4_text(addresses: _I64) -> _Obj:
    """Dotted quads, formatting each distinct /24 once."""
    if not len(addresses):
        return np.empty(0, dtype=object)
    nets, inverse = np.unique(addresses >> 8, return_inverse=True)
    prefixes = _objects([f"{n >> 16}.{(n >> 8) & 255}.{n & 255}." for n in nets.tolist()])
    text: _Obj = prefixes[inverse.reshape(-1)] + _OCTETS[addresses & 255]
    return text


def _v6_text(value: int) -> str:
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


# --- output --------------------------------------------------------------------------------------


class _Sink:
    """A compressing writer fed from a bounded queue by the generator; writes on its own thread
    so that compression (which releases the GIL) overlaps with formatting."""

    def __init__(self, fh: IO[bytes], compress: Compression | None, level: int | None) -> None:
        self._raw = fh
        self._stream: Any
        if compress is Compression.GZIP:
            self._stream = gzip.GzipFile(
                filename="", mode="wb", fileobj=fh, compresslevel=level or _DEFAULT_LEVEL, mtime=0
            )
        elif compress is Compression.ZSTD:
            zstandard = _zstandard()
            cctx = zstandard.ZstdCompressor(level=level or _DEFAULT_LEVEL)
            self._stream = cctx.stream_writer(fh, closefd=False)
        else:
            self._stream = fh
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="synth-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                return
            if self._error is not None:
                continue
            try:
                self._stream.write(data)
            except BaseException as exc:  # handed to the generator thread
                self._error = exc

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._stream is not self._raw:
            self._stream.close()
        self._raw.flush()

    def abort(self) -> None:
        """Stop the writer thread without writing what is still queued."""
        self._error = self._error or RuntimeError("aborted")
        while True:
            try:
                self._queue.put_nowait(None)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
        self._thread.join()


def _zstandard() -> Any:
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        raise RegiongateError(
            "zstd compression needs the zstandard package: pip install zstandard "
            "(or use --compress gzip)"
        ) from None


# --- the generator -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tables:
    """The plan as arrays: what a chunk samples from."""

    org_cdf: _F64
    site_cum: _F64  # org o's sites cover [o, o + 1)
    site_lo: _I64  # per org: first site
    site_hi: _I64  # per org: last site
    site_base: _I64  # IPv4 base (0 for IPv6 sites)
    site_span: _I64
    site_v6: _Bool
    site_v6_base: list[int]
    key_cum: _F64
    key_lo: _I64
    key_hi: _I64
    key_org: _I64
    ua_a: _I64
    ua_b: _I64


def _tables(orgs: Sequence[_Org]) -> _Tables:
    w = np.array([o.weight for o in orgs], dtype=np.float64)
    org_cdf = np.cumsum(w / w.sum())
    org_cdf[-1] = 1.0

    def cumulated(groups: Sequence[Sequence[float]]) -> tuple[_F64, _I64, _I64]:
        cum: list[float] = []
        lo: list[int] = []
        hi: list[int] = []
        for o, weights in enumerate(groups):
            total = float(sum(weights))
            lo.append(len(cum))
            running = 0.0
            for x in weights:
                running += x / total
                cum.append(o + min(running, 1.0))
            cum[-1] = float(o + 1)
            hi.append(len(cum) - 1)
        return (
            np.array(cum, dtype=np.float64),
            np.array(lo, dtype=np.int64),
            np.array(hi, dtype=np.int64),
        )

    site_cum, site_lo, site_hi = cumulated([[s.weight for s in o.sites] for o in orgs])
    key_cum, key_lo, key_hi = cumulated([o.key_weights for o in orgs])
    sites = [s for o in orgs for s in o.sites]
    return _Tables(
        org_cdf=org_cdf,
        site_cum=site_cum,
        site_lo=site_lo,
        site_hi=site_hi,
        site_base=np.array([s.base if s.version == 4 else 0 for s in sites], dtype=np.int64),
        site_span=np.array([s.span for s in sites], dtype=np.int64),
        site_v6=np.array([s.version == 6 for s in sites], dtype=np.bool_),
        site_v6_base=[s.base if s.version == 6 else 0 for s in sites],
        key_cum=key_cum,
        key_lo=key_lo,
        key_hi=key_hi,
        key_org=np.repeat(np.arange(len(orgs)), [len(o.keys) for o in orgs]).astype(np.int64),
        ua_a=np.array([o.ua[0] for o in orgs], dtype=np.int64),
        ua_b=np.array([o.ua[1] for o in orgs], dtype=np.int64),
    )


def _within(cum: _F64, lo: _I64, hi: _I64, org: _I64, u: _F64) -> _I64:
    """For each line, the entry of its org's block of ``cum`` that ``u`` falls in."""
    idx = np.searchsorted(cum, org + u, side="right").astype(np.int64)
    clipped: _I64 = np.clip(idx, lo[org], hi[org])
    return clipped


@dataclass(frozen=True, slots=True)
class _Shares:
    proxy: float
    forged: float
    spoofed: float
    malformed: float


@dataclass(slots=True)
class _Counts:
    site: _I64
    key: _I64
    org_malformed: _I64
    org_bad: _I64
    org_proxied: _I64
    malformed: dict[str, int]
    proxied: int = 0
    forged: int = 0
    spoofed: int = 0
    first_ms: int | None = None
    last_ms: int | None = None


def _check(
    lines: int,
    orgs: int,
    days: float,
    shares: Mapping[str, float],
    proxies: Sequence[str],
) -> None:
    if lines < 0:
        raise RegiongateError(f"lines: {lines} is negative")
    if orgs < 1:
        raise RegiongateError(f"orgs: {orgs}; at least one organisation is needed")
    if not days > 0 or not math.isfinite(days):
        raise RegiongateError(f"days: {days}; a positive number of days is needed")
    for name, share in shares.items():
        if not 0.0 <= share <= 1.0 or not math.isfinite(share):
            raise RegiongateError(f"{name}: {share}; a share between 0 and 1 is needed")
    if not proxies:
        raise RegiongateError("proxies: at least one trusted proxy address is needed")
    for p in proxies:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in p else socket.AF_INET, p)
        except (OSError, ValueError, TypeError):
            raise RegiongateError(
                f"proxies: {p!r} is not an IP address (give addresses such as 10.0.0.1)"
            ) from None


def synthesize(
    out: Path,
    *,
    snapshot: Snapshot,
    lines: int = 100_000,
    orgs: int = 200,
    seed: int = 0,
    start: dt.datetime = DEFAULT_START,
    days: float = 1.0,
    fmt: LogFormat | str = LogFormat.JSONL,
    compress: Compression | str | None = None,
    proxies: Sequence[str] | None = None,
    mix: Mapping[str, float] | None = None,
    proxy_share: float = 0.30,
    forged_share: float = 0.03,
    spoofed_share: float = 0.005,
    malformed_share: float = 0.001,
    ipv6_share: float = 0.04,
    compress_level: int | None = None,
    chunk_size: int = _CHUNK,
    progress: Callable[[int], None] | None = None,
    hints: bool = False,
) -> Truth:
    """Write ``lines`` synthetic access-log lines to ``out`` and the truth beside it.

    ``out`` is written atomically (a temporary file renamed over it), then
    ``<out>.truth.json``. ``progress`` is called with the number of lines written after each
    chunk. ``hints`` adds the request hints (jsonl and csv only; see the module docstring).
    Raises :class:`RegiongateError` for bad parameters.
    """
    try:
        log_format = LogFormat(fmt)
    except ValueError:
        raise RegiongateError(
            f"format: {fmt!r}; use one of {', '.join(f.value for f in LogFormat)}"
        ) from None
    try:
        compression = Compression(compress) if compress is not None else None
    except ValueError:
        raise RegiongateError(
            f"compress: {compress!r}; use one of {', '.join(c.value for c in Compression)}"
        ) from None
    if hints and log_format is LogFormat.NGINX:
        raise RegiongateError(
            "hints: the nginx format has no fields for request hints; "
            "use --format jsonl or csv with --hints"
        )
    given = {"proxy_share": proxy_share, "forged_share": forged_share,
             "spoofed_share": spoofed_share, "malformed_share": malformed_share,
             "ipv6_share": ipv6_share}  # fmt: skip
    for name, share in given.items():
        if not 0.0 <= share <= 1.0:
            raise RegiongateError(f"{name}: {share!r}; give a share from 0 to 1")
    proxy_list = list(proxies) if proxies is not None else ["10.0.0.1", "10.0.0.2"]
    mix_used = dict(DEFAULT_MIX if mix is None else mix)
    unknown = sorted(set(mix_used) - set(KINDS))
    if unknown or not mix_used or any(v < 0 for v in mix_used.values()):
        raise RegiongateError(f"mix: {mix_used!r}; give non-negative shares of {', '.join(KINDS)}")
    if sum(mix_used.values()) <= 0:
        raise RegiongateError("mix: every share is zero")
    # The truth lists the default kinds and any other the mix names (saas only when asked
    # for: the truth of the default output stays as it was).
    listed = [k for k in KINDS if k in DEFAULT_MIX or k in mix_used]
    mix_used = {k: float(mix_used.get(k, 0.0)) for k in KINDS}
    _check(
        lines,
        orgs,
        days,
        {
            "proxy_share": proxy_share,
            "forged_share": forged_share,
            "spoofed_share": spoofed_share,
            "malformed_share": malformed_share,
            "ipv6_share": ipv6_share,
        },
        proxy_list,
    )
    if compression is Compression.ZSTD:
        _zstandard()
    if compress_level is not None:
        top = 9 if compression is Compression.GZIP else 22
        if compression is None or not 1 <= compress_level <= top:
            raise RegiongateError(
                f"compress_level: {compress_level}; give 1 to {top} with gzip, 1 to 22 with zstd"
                if compression is not None
                else f"compress_level: {compress_level} without compression"
            )
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.UTC)
    start = start.astimezone(dt.UTC)

    rng = np.random.default_rng(seed)
    fallbacks: list[str] = []
    planner = _Planner(snapshot, rng, ipv6_share)
    plan = _plan_orgs(planner, _allocate(orgs, mix_used), fallbacks)
    tables = _tables(plan)
    formatter = _Formatter(log_format, plan, hints)
    hint_plan = _plan_hints(seed, plan, planner, log_format) if hints else None
    nsites = len(tables.site_span)
    counts = _Counts(
        site=np.zeros(nsites, dtype=np.int64),
        key=np.zeros(len(tables.key_org), dtype=np.int64),
        org_malformed=np.zeros(len(plan), dtype=np.int64),
        org_bad=np.zeros(len(plan), dtype=np.int64),
        org_proxied=np.zeros(len(plan), dtype=np.int64),
        malformed=dict.fromkeys(("total", *_MALFORMED_KINDS), 0),
    )
    start_ms = int(start.timestamp() * 1000)
    gap_ms = days * _DAY_MS / lines if lines else 0.0
    chunk_size = max(1, chunk_size)
    peers = _objects(proxy_list)
    shares = _Shares(
        proxy=proxy_share, forged=forged_share, spoofed=spoofed_share, malformed=malformed_share
    )

    out = Path(out)
    directory = out.parent if str(out.parent) else Path()
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as fh:
            sink = _Sink(fh, compression, compress_level)
            try:
                if formatter.header:
                    sink.write(formatter.header.encode())
                done = 0
                clock = 0.0
                while done < lines:
                    n = min(chunk_size, lines - done)
                    text, clock = _chunk(
                        n, clock, start_ms, gap_ms, rng, tables, formatter, counts, peers, shares,
                        hint_plan,
                    )  # fmt: skip
                    sink.write(text)
                    done += n
                    if progress is not None:
                        progress(done)
                sink.close()
            except BaseException:
                sink.abort()
                raise
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

    truth = _truth(
        seed=seed,
        params={
            "lines": lines,
            "orgs": orgs,
            "seed": seed,
            "start": start.isoformat().replace("+00:00", "Z"),
            "days": days,
            "format": log_format.value,
            "compress": compression.value if compression else None,
            "mix": {k: mix_used[k] for k in listed},
            "proxies": proxy_list,
            "proxy_share": proxy_share,
            "forged_share": forged_share,
            "spoofed_share": spoofed_share,
            "malformed_share": malformed_share,
            "ipv6_share": ipv6_share,
            "snapshot": {
                "path": str(snapshot.path),
                "created": snapshot.header.get("created"),
                "body_sha256": snapshot.header.get("body_sha256"),
                "consensus": str(snapshot.consensus),
            },
            **({"hints": True} if hints else {}),
        },
        lines=lines,
        header_lines=1 if formatter.header else 0,
        plan=plan,
        planner=planner,
        tables=tables,
        counts=counts,
        fallbacks=fallbacks,
        hints=hint_plan,
    )
    truth.write(truth_path(out))
    return truth


def _iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _chunk(
    n: int,
    clock: float,
    start_ms: int,
    gap_ms: float,
    rng: np.random.Generator,
    t: _Tables,
    f: _Formatter,
    counts: _Counts,
    proxies: _Obj,
    shares: _Shares,
    hints: _Hints | None = None,
) -> tuple[bytes, float]:
    """Generate, format and count ``n`` lines; returns their bytes and the new clock."""
    # Times: a Poisson stream, milliseconds since start.
    offsets = clock + np.cumsum(rng.exponential(gap_ms, n))
    clock = float(offsets[-1])
    when = start_ms + np.floor(offsets).astype(np.int64)
    # Who, from where, with which key.
    org = np.searchsorted(t.org_cdf, rng.random(n), side="right").astype(np.int64)
    org = np.minimum(org, len(t.org_cdf) - 1)
    site = _within(t.site_cum, t.site_lo, t.site_hi, org, rng.random(n))
    key = _within(t.key_cum, t.key_lo, t.key_hi, org, rng.random(n))
    offset = np.floor(rng.random(n) * t.site_span[site]).astype(np.int64)
    address = t.site_base[site] + offset
    # What.
    endpoint = np.searchsorted(_ENDPOINT_CDF, rng.random(n), side="right")
    endpoint = np.minimum(endpoint, len(_ENDPOINTS) - 1)
    status = np.searchsorted(_STATUS_CDF, rng.random(n), side="right")
    status = np.minimum(status, len(_STATUSES) - 1)
    size = np.exp(_SIZE_MU[endpoint] + _SIZE_SIGMA[endpoint] * rng.standard_normal(n))
    size = size.astype(np.int64)
    failed = status != 0
    size[failed] = rng.integers(60, 400, size=int(failed.sum()))
    ua_roll = rng.random(n)
    ua = np.where(ua_roll < 0.8, t.ua_a[org], t.ua_b[org])
    odd = ua_roll >= 0.97
    ua[odd] = rng.integers(0, len(_USER_AGENTS), size=int(odd.sum()))
    # How it reached us.
    proxied = rng.random(n) < shares.proxy
    hops = np.searchsorted(_HOP_CDF, rng.random(n), side="right")
    forged = proxied & (rng.random(n) < shares.forged)
    spoofed = ~proxied & (rng.random(n) < shares.spoofed)
    peer_pick = rng.integers(0, len(proxies), size=n)
    hop_pick = rng.integers(0, len(proxies), size=(2, n))
    fake = rng.integers(1 << 24, 224 << 24, size=n, dtype=np.int64)
    # Malformed lines.
    malformed = rng.random(n) < shares.malformed
    mal_kind = np.full(n, -1, dtype=np.int64)
    mal_kind[malformed] = np.searchsorted(
        _MALFORMED_CDF, rng.random(int(malformed.sum())), side="right"
    )
    bad = mal_kind == 2
    proxied &= ~bad
    forged &= ~bad
    spoofed &= ~bad

    # Text columns.
    client = _v4_text(address & V4_MAX)
    for i in np.flatnonzero(t.site_v6[site]).tolist():
        client[i] = _v6_text(t.site_v6_base[int(site[i])] + int(offset[i]))
    remote = client.copy()
    xff = np.full(n, f.no_xff, dtype=object)
    fake_text = np.full(n, "", dtype=object)
    needs_fake = forged | spoofed
    fake_text[needs_fake] = _v4_text(fake[needs_fake])
    px = np.flatnonzero(proxied)
    if len(px):
        remote[px] = proxies[peer_pick[px]]
        chain = client[px]
        fg = forged[px]
        chain[fg] = fake_text[px][fg] + ", " + chain[fg]
        for j in range(2):
            more = hops[px] > j
            chain[more] = chain[more] + ", " + proxies[hop_pick[j, px][more]]
        xff[px] = f.xff(chain, fg | (hops[px] > 0))
    sp = np.flatnonzero(spoofed)
    if len(sp):
        xff[sp] = f.xff(fake_text[sp], np.zeros(len(sp), dtype=np.bool_))
    for i in np.flatnonzero(bad).tolist():
        remote[i] = _BAD_ADDRESSES[int(rng.integers(0, len(_BAD_ADDRESSES)))]
        xff[i] = f.no_xff
    columns: dict[str, _Obj | npt.NDArray[Any]] = {
        "sec": f.seconds(when // 1000),
        "frac": f.frac[when % 1000],
        "remote": remote,
        "xff": xff,
        "okey": f.okey[key],
        "ep": f.ep[endpoint],
        "status": f.status[status],
        "bytes": size.astype(np.str_),
        "ua": f.ua[ua],
    }
    if hints is not None:  # its own generator: rng's stream is the same with or without
        columns["hint"], has_user, has_lang, has_tz = _hint_columns(hints, org, site, malformed, n)
        for j, has in enumerate((has_user, has_lang, has_tz)):
            hints.lines[:, j] += np.bincount(org[has], minlength=len(hints.lines))
    m = f.join(columns, n)
    for i in np.flatnonzero(malformed).tolist():
        line = "".join(m[i].tolist())[:-1]
        if mal_kind[i] == 0:
            line = f.truncate(line, rng)
        elif mal_kind[i] == 1:
            noise = rng.bytes(int(rng.integers(4, 24))).hex()
            line = f"{_GARBAGE[int(rng.integers(0, len(_GARBAGE)))]} {noise}"
        m[i, 0] = line + "\n"
        m[i, 1:] = ""
    text = "".join(m.ravel().tolist())

    # The truth of this chunk.
    valid = ~malformed
    counts.site += np.bincount(site[valid], minlength=len(counts.site))
    counts.key += np.bincount(key[valid], minlength=len(counts.key))
    counts.org_malformed += np.bincount(org[malformed], minlength=len(counts.org_malformed))
    counts.org_bad += np.bincount(org[bad], minlength=len(counts.org_bad))
    counts.org_proxied += np.bincount(org[valid & proxied], minlength=len(counts.org_proxied))
    for j, name in enumerate(_MALFORMED_KINDS):
        hit = int((mal_kind == j).sum())
        counts.malformed[name] += hit
        counts.malformed["total"] += hit
    counts.proxied += int((valid & proxied).sum())
    counts.forged += int((valid & forged).sum())
    counts.spoofed += int((valid & spoofed).sum())
    if counts.first_ms is None:
        counts.first_ms = int(when[0])
    counts.last_ms = int(when[-1])
    return text.encode("utf-8"), clock


def _truth(
    *,
    seed: int,
    params: dict[str, Any],
    lines: int,
    header_lines: int,
    plan: Sequence[_Org],
    planner: _Planner,
    tables: _Tables,
    counts: _Counts,
    fallbacks: list[str],
    hints: _Hints | None = None,
) -> Truth:
    labels = planner.labels
    unsupported = set(UNSUPPORTED)
    site_counts = counts.site.tolist()
    key_counts = counts.key.tolist()
    orgs: list[OrgTruth] = []
    k = 0
    s = 0
    for o, org in enumerate(plan):
        territories: dict[str, int] = {}
        users: dict[str, int] = {}
        flags: dict[str, int] = {}
        anon = v6 = 0
        for site in org.sites:
            c = site_counts[s]
            s += 1
            if not c:
                continue
            located, user = labels[site.label], labels[site.user]
            territories[located] = territories.get(located, 0) + c
            users[user] = users.get(user, 0) + c
            if site.flags:
                anon += c
                for flag in _ANON_FLAGS:
                    if site.flags & FLAG_BITS[flag]:
                        flags[str(flag)] = flags.get(str(flag), 0) + c
            if site.version == 6:
                v6 += c
        key_lines = dict(zip(org.keys, key_counts[k : k + len(org.keys)], strict=True))
        k += len(org.keys)
        total = sum(territories.values())

        def share(by: Mapping[str, int], total: int = total) -> float:
            hit = sum(c for t, c in by.items() if t in unsupported)
            return round(hit / total, 6) if total else 0.0

        orgs.append(
            OrgTruth(
                org=org.name,
                kind=org.kind,
                home=org.home,
                home_requested=org.home_requested,
                fallback=org.fallback,
                keys=tuple(org.keys),
                key_lines=key_lines,
                lines=total,
                malformed=int(counts.org_malformed[o]),
                bad_address=int(counts.org_bad[o]),
                territories=dict(sorted(territories.items(), key=lambda kv: (-kv[1], kv[0]))),
                user_territories=dict(sorted(users.items(), key=lambda kv: (-kv[1], kv[0]))),
                anonymizer_lines=anon,
                flags=dict(sorted(flags.items())),
                proxied_lines=int(counts.org_proxied[o]),
                ipv6_lines=v6,
                expected_unsupported_share=share(territories),
                true_unsupported_share=share(users),
                travel=org.travel,
                payment_country=hints.payment[o] if hints is not None else None,
                end_users=hints.end_users[o] if hints is not None else None,
                hint_lines=(
                    dict(zip(HINT_FIELDS, hints.lines[o].tolist(), strict=True))
                    if hints is not None
                    else None
                ),
            )
        )
    return Truth(
        seed=seed,
        params=params,
        lines=lines,
        header_lines=header_lines,
        valid_lines=lines - counts.malformed["total"],
        malformed=dict(counts.malformed),
        proxied_lines=counts.proxied,
        forged_xff_lines=counts.forged,
        spoofed_direct_lines=counts.spoofed,
        first_time=_iso_ms(counts.first_ms),
        last_time=_iso_ms(counts.last_ms),
        fallbacks=fallbacks,
        orgs=orgs,
    )


def iter_lines(path: Path) -> Iterator[str]:
    """The lines of a log :func:`synthesize` wrote, decompressed by the file's magic."""
    with path.open("rb") as raw:
        magic = raw.read(4)
    if magic[:2] == b"\x1f\x8b":
        with gzip.open(path, "rt", encoding="utf-8", newline="\n") as fh:
            for line in fh:
                yield line.rstrip("\n")
        return
    if magic == b"\x28\xb5\x2f\xfd":
        zstandard = _zstandard()
        with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as zr:
            text = io.TextIOWrapper(zr, encoding="utf-8", newline="\n")
            for line in text:
                yield line.rstrip("\n")
        return
    with path.open(encoding="utf-8", newline="\n") as fh:
        for line in fh:
            yield line.rstrip("\n")
