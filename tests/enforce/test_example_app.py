"""The documented example app (examples/starlette_app.py) works as its docstring says."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import httpx

from regiongate.intel.snapshot import Snapshot

EXAMPLE = Path(__file__).parents[2] / "examples" / "starlette_app.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("starlette_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_app_blocks_and_allows(tiny_snapshot_path: Path) -> None:
    example = load_example()
    app = example.create_app(snapshot=Snapshot(tiny_snapshot_path))

    async def go(xff: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
            return await c.get("/v1/whoami", headers={"X-Forwarded-For": xff})

    allowed = asyncio.run(go("3.0.0.1"))
    assert allowed.status_code == 200
    body = allowed.json()
    assert body["client"] == "3.0.0.1" and body["territory"] == "US"
    assert body["decision"] == "allow" and body["policy"].startswith("api-2024@")

    blocked = asyncio.run(go("4.0.0.1"))
    assert blocked.status_code == 403
    assert blocked.json()["error"]["code"] == "unsupported_country_region_territory"
    assert blocked.headers["x-regiongate-territory"] == "CN"
