"""Running the gateway with uvicorn.

Why uvicorn: the gateway needs in-process lifespan hooks, a SIGHUP handler on its own event
loop, and programmatic start-up in tests; uvicorn with uvloop and httptools gives all three,
and its protocol is where the decision endpoint is answered and plain proxied requests are
relayed (``inline.py``, ``relay.py``), which makes it the faster server for the gateway too.
granian serves a plain ASGI app faster (docs/gateway.md has the same-run comparisons), and
remains an option for deployments that do not need SIGHUP reloads.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import uvicorn

from regiongate.accounts.service import Accounts
from regiongate.config import Settings
from regiongate.enforce.app import GatewayApp
from regiongate.enforce.asgi import ASGIApp
from regiongate.enforce.gate import Gate
from regiongate.errors import ConfigError

__all__ = ["build", "create_app", "run", "split_listen", "uvicorn_config"]


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def build(settings: Settings) -> GatewayApp:
    """Load the gate (snapshot, policy), open the account store, and build the app.

    Raises ``RegiongateError`` (``StoreUnavailable`` when the store does not answer at start:
    a gateway that cannot reach its configured store says so instead of serving without it).
    """
    gate = Gate.from_settings(settings)
    accounts = None
    if settings.accounts.enabled:
        from regiongate.accounts.store import store_from_url

        try:
            store = store_from_url(settings.store_url())
        except ValueError as exc:
            raise ConfigError(f"store.url: {exc}") from None
        accounts = Accounts(store, settings.accounts, lambda: gate.state.policy, clock=gate.clock)
    admin = None
    if settings.admin.enabled and accounts is not None:
        admin = _admin(settings, accounts)
    return GatewayApp(settings, gate, accounts=accounts, admin=admin)


def _admin(settings: Settings, accounts: Accounts) -> ASGIApp | None:
    """The admin API, if it has tokens: a configured tokens file must load; without one, the
    default ``$REGIONGATE_HOME/admin-tokens.toml`` is used when it exists (else the API is
    off, and the log says how to create a token)."""
    from regiongate.accounts.admin import admin_app, tokens_from_settings
    from regiongate.paths import data_home

    if settings.admin.tokens_file is None and not (data_home() / "admin-tokens.toml").exists():
        logging.getLogger("regiongate.gateway").warning(
            "admin API off: no tokens (create one with `regiongate admin token --name NAME "
            "--role operator`)"
        )
        return None
    tokens = tokens_from_settings(settings.admin)
    return admin_app(accounts.store, accounts.rules, accounts.hasher, tokens)


def create_app() -> GatewayApp:
    """The gateway on its configuration (``$REGIONGATE_CONFIG``, ``REGIONGATE_*``), for ASGI
    servers that build the application in their workers, such as granian::

        granian --interface asgi --factory regiongate.enforce.server:create_app

    ``regiongate serve`` runs uvicorn itself; under another server, policy and snapshot changes
    are picked up by the file watch (SIGHUP is the server's own: granian respawns its workers).
    """
    from regiongate.config import load_settings

    return build(load_settings())


def uvicorn_config(
    app: GatewayApp, settings: Settings, *, log_level: str = "info"
) -> uvicorn.Config:
    host, port = split_listen(settings.server.listen)
    http: Any
    if not importlib.util.find_spec("httptools"):
        http = "h11"
    elif settings.server.inline:
        from regiongate.enforce.inline import inline_protocol

        http = inline_protocol(app)
    else:  # (server.inline = false: every request an ASGI request)
        http = "httptools"
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        # The decision endpoint's requests are answered in uvicorn's httptools protocol, before
        # they become ASGI requests (enforce/inline.py); under h11 they are ASGI requests.
        http=http,
        lifespan="on",
        # regiongate resolves the client itself, with its own trust rules: uvicorn must not
        # rewrite the peer address from forwarding headers first.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=10,
        ws_max_size=16 * 1024 * 1024,
    )


def run(settings: Settings, *, log_level: str = "info") -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    app = build(settings)
    uvicorn.Server(uvicorn_config(app, settings, log_level=log_level)).run()
