"""The admin API as `regiongate serve` mounts it: tokens from `regiongate admin token`,
reachable from trusted networks only, never gated or proxied."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from regiongate.cli.app import app as cli
from regiongate.config import load_settings
from regiongate.enforce.server import build


def settings_for(home: Path, snapshot: Path) -> object:
    return load_settings(
        env={"REGIONGATE_HOME": str(home)},
        overrides={
            "policy": {"source": "api-2024", "watch": False},
            "data": {"snapshot": str(snapshot)},
            "store": {"url": f"sqlite:///{home / 'regiongate.db'}"},
            "accounts": {"spool_dir": str(home / "spool")},
        },
    )


def call(app: object, peer: str, method: str, path: str, token: str | None = None,
         **kw: object) -> httpx.Response:  # fmt: skip
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return await c.request(method, path, headers=headers, **kw)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_admin_api_mounted_with_cli_token(
    tmp_path: Path, tiny_snapshot_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGIONGATE_HOME", str(tmp_path))
    # No tokens yet: the admin API is off (404), the gateway still serves.
    gateway = build(settings_for(tmp_path, tiny_snapshot_path))  # type: ignore[arg-type]
    assert call(gateway, "127.0.0.1", "GET", "/admin/api/orgs").status_code == 404
    result = CliRunner().invoke(cli, ["admin", "token", "--name", "ops", "--role", "admin"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token not in (tmp_path / "admin-tokens.toml").read_text()
    assert (tmp_path / "admin-tokens.toml").stat().st_mode & 0o777 == 0o600
    again = CliRunner().invoke(cli, ["admin", "token", "--name", "ops"])
    assert again.exit_code != 0 and "already has a token" in again.output
    gateway = build(settings_for(tmp_path, tiny_snapshot_path))  # type: ignore[arg-type]
    assert call(gateway, "127.0.0.1", "GET", "/admin/api/orgs").status_code == 401
    assert call(gateway, "127.0.0.1", "GET", "/admin/api/orgs", "wrong").status_code == 401
    r = call(gateway, "127.0.0.1", "PUT", "/admin/api/orgs/org-1", token, json={"name": "One"})
    assert r.status_code == 201, r.text
    r = call(gateway, "127.0.0.1", "POST", "/admin/api/orgs/org-1/state", token,
             json={"state": "suspended", "reason": "test"})  # fmt: skip
    assert r.status_code == 200 and r.json()["state"] == "suspended", r.text
    listing = call(gateway, "127.0.0.1", "GET", "/admin/api/orgs", token).json()
    assert [o["id"] for o in listing["orgs"]] == ["org-1"]
    # From an untrusted network the admin API does not exist, token or not.
    assert call(gateway, "8.8.8.8", "GET", "/admin/api/orgs", token).status_code == 404
