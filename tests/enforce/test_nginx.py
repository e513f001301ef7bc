"""nginx, the real peer: ``auth_request`` to the decision endpoint, and the ``geo`` export.

The nginx configurations here are the ones docs/nginx.md shows. nginx is the edge: realip
takes the client address from ``X-Forwarded-For`` sent by the test (everything is loopback),
so the test can pose as any address.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from regiongate.enforce.export import export_nginx_geo
from regiongate.intel.snapshot import Snapshot
from regiongate.policy import load_policy
from tests.conftest import realdata_snapshot
from tests.enforce.nginx_util import (
    BLOCKED_BODY,
    EchoUpstream,
    as_client,
    check_config,
    free_port,
    get,
    nginx_binary,
    run_nginx,
)
from tests.enforce.servers import serve_app, serve_gateway

ENFORCING = dt.datetime(2024, 8, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module", autouse=True)
def _need_nginx() -> None:
    nginx_binary()


# --- auth_request to the decision endpoint -------------------------------------------------------


def auth_request_config(port: int, gateway: int, upstream: int) -> str:
    """The docs/nginx.md configuration, with the test's ports."""
    return f"""
    server {{
        listen 127.0.0.1:{port};

        # nginx is the edge: the client address comes from the trusted hop in front of it
        # (here the test itself, on loopback).
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;

        location / {{
            auth_request /_rg_decide;
            auth_request_set $rg_territory $upstream_http_x_regiongate_territory;
            auth_request_set $rg_decision $upstream_http_x_regiongate_decision;
            # Replaces whatever the client sent under these names.
            proxy_set_header X-Regiongate-Territory $rg_territory;
            proxy_set_header X-Regiongate-Decision $rg_decision;
            error_page 403 = @regiongate_blocked;
            proxy_pass http://127.0.0.1:{upstream};
        }}

        location = /_rg_decide {{
            internal;
            proxy_pass http://127.0.0.1:{gateway}/_regiongate/decide;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Original-URI $request_uri;
        }}

        location @regiongate_blocked {{
            default_type application/json;
            add_header X-Regiongate-Territory $rg_territory always;
            add_header X-Regiongate-Decision $rg_decision always;
            return 403 '{BLOCKED_BODY}';
        }}
    }}
    """


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[int, EchoUpstream]]:
    app = EchoUpstream()
    with serve_app(app) as port:
        yield port, app


@pytest.fixture(scope="module")
def gateway(tiny_snapshot_path: Path) -> Iterator[int]:
    # No upstream: nginx proxies; the gateway only answers the decision endpoint.
    with serve_gateway(tiny_snapshot_path, None) as (port, _):
        yield port


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory, gateway: int, upstream: tuple[int, EchoUpstream]
) -> Iterator[int]:
    port = free_port()
    prefix = tmp_path_factory.mktemp("nginx-auth")
    with run_nginx(prefix, auth_request_config(port, gateway, upstream[0]), port):
        yield port


@pytest.mark.parametrize(
    ("client", "territory", "decision"),
    [
        ("1.0.0.1", "AU", "allow"),
        ("1.0.0.200", "AU", "flag"),  # Tor: flagged, passes
        ("3.0.0.1", "US", "allow"),
        ("3.0.0.200", "CA", "allow"),
        ("5.1.2.3", "DE", "allow"),
        ("5.5.5.5", "FR", "allow"),
        ("2001:4000:0:1::1", "JP", "allow"),
        ("2001:4000::1", "JP", "flag"),  # VPN
        ("9.0.0.1", "unknown", "allow"),  # no source locates it: actions.unknown
        ("192.168.1.1", "unknown", "allow"),  # private: actions.private
    ],
)
def test_auth_request_allowed_reach_upstream_with_headers(
    edge: int, upstream: tuple[int, EchoUpstream], client: str, territory: str, decision: str
) -> None:
    _, echo = upstream
    before = len(echo.seen)
    reply = get(edge, "/v1/models?x=1", as_client(client))
    assert reply.status == 200, reply.body
    seen = reply.json()
    assert seen["x-regiongate-territory"] == territory
    assert seen["x-regiongate-decision"] == decision
    assert seen[":path"] == "/v1/models"
    assert len(echo.seen) == before + 1


@pytest.mark.parametrize(
    ("client", "territory"),
    [
        ("4.0.0.1", "CN"),
        ("4.0.0.255", "CN"),
        ("2.0.0.0", "UA-43"),
        ("2.0.255.255", "UA-43"),
    ],
)
def test_auth_request_blocked_get_contract_403_and_never_reach_upstream(
    edge: int, upstream: tuple[int, EchoUpstream], client: str, territory: str
) -> None:
    _, echo = upstream
    before = len(echo.seen)
    reply = get(edge, "/v1/chat/completions", as_client(client))
    assert reply.status == 403
    assert reply.headers["content-type"] == "application/json"
    assert reply.body == BLOCKED_BODY.encode()
    assert reply.json() == {
        "error": {
            "message": "Country, region, or territory not supported",
            "type": "request_forbidden",
            "param": None,
            "code": "unsupported_country_region_territory",
        }
    }
    assert reply.headers["x-regiongate-territory"] == territory
    assert reply.headers["x-regiongate-decision"] == "block"
    assert len(echo.seen) == before


def test_auth_request_client_cannot_forge_regiongate_headers(
    edge: int, upstream: tuple[int, EchoUpstream]
) -> None:
    forged = {
        **as_client("3.0.0.1"),
        "X-Regiongate-Decision": "allow",
        "X-Regiongate-Territory": "XX",
    }
    seen = get(edge, "/", forged).json()
    assert seen["x-regiongate-territory"] == "US"
    assert seen["x-regiongate-decision"] == "allow"


def test_auth_request_malformed_forwarded_address(
    edge: int, gateway: int, upstream: tuple[int, EchoUpstream]
) -> None:
    # nginx's realip ignores a malformed X-Forwarded-For and keeps the peer (loopback:
    # private, allowed), so an invalid address never reaches the decision endpoint via nginx.
    seen = get(edge, "/", as_client("not-an-ip")).json()
    assert seen["x-regiongate-decision"] == "allow"
    # Asked directly (a proxy that forwards the header as is), invalid is blocked per
    # the preset's actions.invalid.
    reply = get(gateway, "/_regiongate/decide", as_client("not-an-ip"))
    assert reply.status == 403
    assert reply.json()["error"]["code"] == "unsupported_country_region_territory"
    assert reply.headers["x-regiongate-decision"] == "block"


# --- the geo export, loaded by nginx -----------------------------------------------------------


def geo_config(port: int, geo_file: Path) -> str:
    """The docs/nginx.md configuration for the exported map."""
    return f"""
    geo $remote_addr $regiongate_action {{
        include {geo_file};
    }}

    server {{
        listen 127.0.0.1:{port};
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;

        location / {{
            default_type application/json;
            if ($regiongate_action = block) {{
                return 403 '{BLOCKED_BODY}';
            }}
            add_header X-Regiongate-Action $regiongate_action always;
            return 200 '{{"action": "$regiongate_action", "client": "$remote_addr"}}';
        }}
    }}
    """


def export_geo(snapshot_path: Path, policy: str, out: Path) -> None:
    pol = load_policy(policy)
    with Snapshot(snapshot_path, consensus=pol.consensus) as snap, out.open("w") as fh:
        export_nginx_geo(snap, pol, ENFORCING, fh)


def assert_actions(port: int, expected: dict[str, str]) -> None:
    got = {}
    for ip in expected:
        reply = get(port, "/", as_client(ip))
        if reply.status == 403:
            assert reply.body == BLOCKED_BODY.encode()
            assert reply.headers["content-type"] == "application/json"
            got[ip] = "block"
        else:
            assert reply.status == 200, reply.body
            data = reply.json()
            assert data["client"] == ip
            got[ip] = data["action"]
    assert got == expected


DENY_KR = """
name = "deny-kr"
version = "1"
unsupported = ["KR", "CN"]
[exemptions]
networks = ["4.0.0.128/25"]
"""


def test_geo_export_in_nginx(tiny_snapshot_path: Path, tmp_path: Path) -> None:
    geo = tmp_path / "api-2024.geo"
    export_geo(tiny_snapshot_path, "api-2024", geo)
    port = free_port()
    with run_nginx(tmp_path / "nginx", geo_config(port, geo), port):
        assert_actions(
            port,
            {
                "1.0.0.1": "allow",
                "1.0.0.127": "allow",
                "1.0.0.128": "flag",
                "1.0.0.255": "flag",
                "1.255.255.255": "allow",
                "2.0.0.0": "block",
                "2.0.255.255": "block",
                "2.1.0.0": "allow",
                "3.0.0.1": "allow",
                "3.255.255.255": "allow",
                "4.0.0.0": "block",
                "4.0.0.255": "block",
                "4.0.1.0": "allow",
                "9.0.0.1": "allow",
                "2001:4000::1": "flag",
                "2001:4000:0:1::": "allow",
                "2001:4001::1": "allow",
                "2001:db8::1": "allow",
            },
        )


def test_geo_export_ipv6_and_exempt_networks_in_nginx(
    tiny_snapshot_path: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "deny-kr.toml"
    policy.write_text(DENY_KR)
    geo = tmp_path / "deny-kr.geo"
    export_geo(tiny_snapshot_path, str(policy), geo)
    port = free_port()
    with run_nginx(tmp_path / "nginx", geo_config(port, geo), port):
        assert_actions(
            port,
            {
                "2001:4000:ffff:ffff:ffff:ffff:ffff:ffff": "allow",
                "2001:4001::": "block",
                "2001:4001:0:ffff:ffff:ffff:ffff:ffff": "block",
                "2001:4001:1::": "allow",
                "4.0.0.0": "block",
                "4.0.0.127": "block",
                "4.0.0.128": "allow",  # exempt network
                "4.0.0.255": "allow",
                "2.0.0.1": "allow",  # a denylist without UA-43
            },
        )


@pytest.mark.realdata
def test_geo_export_of_real_data_in_nginx(tmp_path: Path) -> None:
    snapshot = realdata_snapshot()
    geo = tmp_path / "real.geo"
    started = time.perf_counter()
    export_geo(snapshot, "api-2024", geo)
    exported = time.perf_counter() - started
    port = free_port()
    http = geo_config(port, geo)
    seconds, _ = check_config(tmp_path / "check", http)
    # Reported, not asserted: the numbers docs/nginx.md quotes.
    print(
        f"\nreal-data geo export: {exported:.1f} s, {geo.stat().st_size:,} bytes; "
        f"nginx -t loads it in {seconds:.2f} s"
    )
    with run_nginx(tmp_path / "nginx", http, port):
        assert_actions(
            port,
            {
                "114.114.114.114": "block",  # CN
                "5.3.41.1": "block",  # Crimea
                "178.54.250.1": "block",  # Luhansk
                "8.8.8.8": "allow",
            },
        )
