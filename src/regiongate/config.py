"""Configuration: one TOML file, every key overridable by ``REGIONGATE_<SECTION>_<KEY>``.

Precedence, lowest first: built-in defaults, the file (``--config`` or
``$REGIONGATE_CONFIG``), environment variables, command-line flags. A bad value fails at load
time with the key named (``server.listen: ...``), before anything starts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from regiongate.errors import ConfigError
from regiongate.paths import data_home

__all__ = [
    "AccountsSettings",
    "AdminSettings",
    "DataSettings",
    "NotifySettings",
    "PolicySettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "load_settings",
]

_ENV_PREFIX: Final = "REGIONGATE_"


class ServerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1:8080"
    upstream: str | None = None
    # Networks whose forwarding headers are believed (CIDRs). Loopback by default, so that a
    # local reverse proxy works out of the box and nothing else is trusted.
    trusted_proxies: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    forwarded_header: str = "x-forwarded-for"
    hop_limit: int = 16
    cdn_header: str | None = None
    cdn_networks: list[str] = msgspec.field(default_factory=list)
    upstream_connect_timeout: float = 5.0
    upstream_read_timeout: float = 300.0
    upstream_max_connections: int = 512
    decision_path: str = "/_regiongate/decide"
    workers: int = 1
    # Decision requests answered, and plain proxied requests relayed, inside uvicorn's HTTP
    # protocol (enforce/inline.py, enforce/relay.py); false: every request through ASGI.
    inline: bool = True


class PolicySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    source: str = "api-2024"
    watch: bool = True


class DataSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    snapshot: str | None = None
    cache_size: int = 65536


class StoreSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: str | None = None


class AccountsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Off: no key is read, no event recorded, no account state enforced.
    enabled: bool = True
    key_header: str = "authorization"
    key_scheme: str | None = "bearer"  # none: the header holds the bare key (x-api-key)
    key_secret_file: str | None = None  # default $REGIONGATE_HOME/key-secret
    unknown_keys: str = "allow"  # allow (the upstream authenticates) | block
    queue_size: int = 100_000  # events waiting for the writer; beyond it they spool to disk
    batch_size: int = 5_000
    flush_interval: float = 0.05  # seconds the writer waits to fill a batch
    spool_dir: str | None = None  # default $REGIONGATE_HOME/spool
    refresh_interval: float = 0.25  # how often the account cache asks the store for changes
    # Circumvention hints recorded with each event (docs/detection.md): Accept-Language always;
    # an end-user id from this header, or from the "user" field of JSON request bodies when
    # end_user_body is on; an IANA time-zone name from timezone_header.
    hints: bool = True
    end_user_header: str | None = None
    end_user_body: bool = False
    timezone_header: str | None = None


class NotifySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    smtp_url: str | None = None
    sender: str | None = None


class AdminSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    tokens_file: str | None = None


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    policy: PolicySettings = msgspec.field(default_factory=PolicySettings)
    data: DataSettings = msgspec.field(default_factory=DataSettings)
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    accounts: AccountsSettings = msgspec.field(default_factory=AccountsSettings)
    notify: NotifySettings = msgspec.field(default_factory=NotifySettings)
    admin: AdminSettings = msgspec.field(default_factory=AdminSettings)

    def store_url(self) -> str:
        """The store URL; embedded SQLite under ``$REGIONGATE_HOME`` by default."""
        return self.store.url or f"sqlite:///{data_home() / 'regiongate.db'}"


_SECTIONS: Final[dict[str, type[msgspec.Struct]]] = {
    "server": ServerSettings,
    "policy": PolicySettings,
    "data": DataSettings,
    "store": StoreSettings,
    "accounts": AccountsSettings,
    "notify": NotifySettings,
    "admin": AdminSettings,
}


def _env_value(raw: str, field_type: Any) -> Any:
    """Environment values are text; lists are JSON arrays or comma-separated."""
    text = raw.strip()
    if "list" in str(field_type):
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"not a JSON array ({exc})") from exc
        return [part.strip() for part in text.split(",") if part.strip()]
    if text.lower() in {"", "none", "null"} and "None" in str(field_type):
        return None
    return text


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Defaults ← file ← environment ← ``overrides`` (command-line flags)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "defaults"
    if path is None and env.get("REGIONGATE_CONFIG"):
        path = env["REGIONGATE_CONFIG"]
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such configuration file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    for name, value in env.items():
        if not name.startswith(_ENV_PREFIX) or name == "REGIONGATE_CONFIG":
            continue
        if name == "REGIONGATE_HOME":
            continue
        rest = name[len(_ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in _SECTIONS or not key:
            continue
        fields = {f.name: f.type for f in msgspec.structs.fields(_SECTIONS[section])}
        if key not in fields:
            raise ConfigError(
                f"{name}: {section} has no key {key!r} (keys: {', '.join(sorted(fields))})"
            )
        try:
            data.setdefault(section, {})[key] = _env_value(value, fields[key])
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    if overrides:
        _merge(
            data,
            {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in overrides.items()},
        )
    try:
        settings = msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        where = str(exc).rsplit(" - at `$.", 1)
        if len(where) == 2:
            raise ConfigError(f"{source}: {where[1].rstrip('`')}: {where[0]}") from None
        raise ConfigError(f"{source}: {exc}") from None
    _check(settings, source)
    return settings


def _check(s: Settings, source: str) -> None:
    def bad(key: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {message}")

    host, sep, port = s.server.listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise bad("server.listen", f"{s.server.listen!r} is not HOST:PORT")
    if s.server.upstream is not None and not s.server.upstream.startswith(("http://", "https://")):
        raise bad("server.upstream", f"{s.server.upstream!r} must be an http:// or https:// URL")
    for i, cidr in enumerate([*s.server.trusted_proxies, *s.server.cdn_networks]):
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            key = (
                "server.trusted_proxies"
                if i < len(s.server.trusted_proxies)
                else "server.cdn_networks"
            )
            raise bad(key, f"{cidr!r} is not a network (CIDR)") from None
    a = s.accounts
    if a.unknown_keys not in {"allow", "block"}:
        raise bad("accounts.unknown_keys", "must be 'allow' or 'block'")
    if not a.key_header.strip() or any(c in a.key_header for c in " :\r\n"):
        raise bad("accounts.key_header", f"{a.key_header!r} is not a header name")
    for key, value, low in (
        ("queue_size", a.queue_size, 1),
        ("batch_size", a.batch_size, 1),
    ):
        if value < low:
            raise bad(f"accounts.{key}", f"must be at least {low}")
    for key, seconds in (
        ("flush_interval", a.flush_interval),
        ("refresh_interval", a.refresh_interval),
    ):
        if not 0 < seconds <= 60:
            raise bad(f"accounts.{key}", "must be between 0 and 60 seconds")
    if s.server.forwarded_header not in {"x-forwarded-for", "forwarded"}:
        raise bad("server.forwarded_header", "must be 'x-forwarded-for' or 'forwarded'")
    if not 1 <= s.server.hop_limit <= 64:
        raise bad("server.hop_limit", f"{s.server.hop_limit} is outside 1-64")
    if s.server.upstream_connect_timeout <= 0 or s.server.upstream_read_timeout <= 0:
        raise bad("server.upstream_*_timeout", "timeouts must be positive")
    if not s.server.decision_path.startswith("/"):
        raise bad("server.decision_path", "must start with /")
    if s.server.workers < 1:
        raise bad("server.workers", "must be at least 1")
    if s.data.cache_size < 0:
        raise bad("data.cache_size", "must not be negative")
