"""Hot reload: new policy or snapshot files swap in atomically; broken ones are refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
from pathlib import Path

import aiohttp
import pytest

from regiongate.enforce.gate import Gate
from regiongate.errors import PolicyError, SnapshotError
from tests.enforce.servers import gateway_settings, serve_app, serve_gateway
from tests.enforce.upstreams import Control, controlled_upstream

ALLOW_CN = 'name = "open"\nversion = "1"\nunsupported = ["KP"]\n'
BLOCK_CN = 'name = "closed"\nversion = "2"\nsupported = ["US", "DE", "AU"]\n'


@pytest.fixture
def files(tmp_path: Path, tiny_snapshot_path: Path) -> tuple[Path, Path]:
    snap = tmp_path / "live.rgsnap"
    shutil.copy(tiny_snapshot_path, snap)
    policy = tmp_path / "policy.toml"
    policy.write_text(ALLOW_CN)
    return snap, policy


def _gate(snap: Path, policy: Path) -> Gate:
    return Gate.from_settings(gateway_settings(snap, 1, None, policy=str(policy)))


def test_policy_file_change_is_picked_up(files: tuple[Path, Path]) -> None:
    snap, policy = files
    gate = _gate(snap, policy)
    assert gate.check("4.0.0.1", []).decision.action == "allow"
    assert gate.reload() == []  # nothing changed
    policy.write_text(BLOCK_CN)
    os.utime(policy, ns=(1, 1))  # make sure the stamp differs even within one mtime tick
    assert gate.reload() == ["policy closed@2"]
    assert gate.check("4.0.0.1", []).decision.action == "block"


def test_broken_policy_is_refused_and_old_one_serves(files: tuple[Path, Path]) -> None:
    snap, policy = files
    gate = _gate(snap, policy)
    before = gate.state
    policy.write_text('name = "x"\nversion = "3"\nsupported = ["UA-34"]\n')
    with pytest.raises(PolicyError, match="did you mean UA-43"):
        gate.reload()
    assert gate.state is before
    assert gate.stats.reload_failures == {"policy": 1}
    assert gate.check("4.0.0.1", []).decision.policy == "open@1"


def test_snapshot_replacement_and_corrupt_snapshot(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    snap, policy = files
    gate = _gate(snap, policy)
    old_snapshot = gate.state.snapshot
    # An install renames a new file over the live one: a new inode.
    fresh = tmp_path / "fresh.rgsnap"
    shutil.copy(snap, fresh)
    os.replace(fresh, snap)
    assert gate.reload()[0].startswith("snapshot ")
    assert gate.state.snapshot is not old_snapshot
    # A corrupt one is refused; the previous keeps answering.
    current = gate.state
    data = bytearray(snap.read_bytes())
    data[-10] ^= 0xFF
    broken = tmp_path / "broken.rgsnap"
    broken.write_bytes(bytes(data))
    os.replace(broken, snap)
    with pytest.raises(SnapshotError, match="checksum"):
        gate.reload()
    assert gate.state is current
    assert gate.check("3.0.0.1", []).decision.territory == "US"


def test_reload_under_load_fails_no_request(files: tuple[Path, Path]) -> None:
    snap, policy = files
    control = Control()
    with (
        serve_app(controlled_upstream(control)) as up,
        serve_gateway(snap, f"http://127.0.0.1:{up}", policy=str(policy)) as (port, app),
    ):
        statuses: list[int] = []
        stop = threading.Event()

        def flip() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                text = BLOCK_CN if n % 2 else ALLOW_CN
                if n % 7 == 0:
                    text = "this is = not [valid toml"
                policy.write_text(text)
                os.utime(policy, ns=(n * 1000, n * 1000))
                app.reload()
                if n % 5 == 0:
                    app.reload(force=True)  # a snapshot reload too, under load

        async def load() -> None:
            async with aiohttp.ClientSession() as s:

                async def one(i: int) -> None:
                    ip = "4.0.0.1" if i % 2 else "3.0.0.1"
                    async with s.post(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        json={"model": "demo-1", "messages": [], "stream": i % 3 == 0},
                        headers={"X-Forwarded-For": ip},
                    ) as r:
                        await r.read()
                        statuses.append(r.status)

                for batch in range(30):
                    await asyncio.gather(*(one(batch * 10 + i) for i in range(10)))

        flipper = threading.Thread(target=flip)
        flipper.start()
        try:
            asyncio.run(load())
        finally:
            stop.set()
            flipper.join()
        assert len(statuses) == 300
        assert set(statuses) <= {200, 403}, sorted(set(statuses))
        assert 200 in statuses and 403 in statuses  # both policies were in force at times
        assert app.gate.stats.reload_failures.get("policy", 0) > 0


def test_sighup_reloads(files: tuple[Path, Path]) -> None:
    """SIGHUP is handled by the gateway's own event loop (main thread only)."""
    snap, policy = files
    from regiongate.enforce.app import GatewayApp

    settings = gateway_settings(snap, 1, None, policy=str(policy))
    app = GatewayApp(settings, Gate.from_settings(settings), watch_interval=0)

    async def go() -> str:
        messages = iter([{"type": "lifespan.startup"}])
        sent: list[dict[str, str]] = []
        started = asyncio.Event()

        async def receive() -> dict[str, str]:
            try:
                return next(messages)
            except StopIteration:
                await started.wait()
                await asyncio.sleep(3600)
                return {"type": "lifespan.shutdown"}

        async def send(m: dict[str, str]) -> None:
            sent.append(m)
            started.set()

        task = asyncio.ensure_future(app(dict(type="lifespan"), receive, send))
        await started.wait()
        policy.write_text(BLOCK_CN)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):
            await asyncio.sleep(0.05)
            if app.gate.state.policy.name == "closed":
                break
        task.cancel()
        return app.gate.state.policy.name

    assert asyncio.run(go()) == "closed"


def test_granian_serves_the_gateway_and_picks_up_file_changes(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """`create_app` is the factory another ASGI server builds the gateway with; under granian
    a changed policy file is picked up by the file watch, a broken one refused."""
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from tests.enforce.servers import free_port

    pytest.importorskip("granian")
    snap, policy = files
    port = free_port()
    env = {**os.environ, "REGIONGATE_HOME": str(tmp_path / "home"),
           "REGIONGATE_DATA_SNAPSHOT": str(snap), "REGIONGATE_POLICY_SOURCE": str(policy),
           "REGIONGATE_ACCOUNTS_ENABLED": "false"}  # fmt: skip
    env.pop("REGIONGATE_CONFIG", None)
    log = tmp_path / "granian.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "granian", "--interface", "asgi", "--port", str(port),
             "--log-level", "warning", "--factory", "regiongate.enforce.server:create_app"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def decide(ip: str) -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/_regiongate/decide", headers={"X-Forwarded-For": ip}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def until(want: int, ip: str = "4.0.0.1") -> int:
        deadline = time.monotonic() + 30
        got = -1
        while time.monotonic() < deadline:
            try:
                got = decide(ip)
            except OSError:
                got = -1  # not listening yet
            if got == want or proc.poll() is not None:
                break
            time.sleep(0.1)
        return got

    try:
        assert until(204) == 204, log.read_text()
        assert decide("3.0.0.1") == 204  # US
        policy.write_text(BLOCK_CN)
        assert until(403) == 403  # CN now blocked: the watch swapped the policy in
        policy.write_text('name = "x"\nversion = "3"\nsupported = ["UA-34"]\n')
        os.utime(policy, ns=(2, 2))
        deadline = time.monotonic() + 30
        while "reload refused" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "did you mean UA-43" in log.read_text()  # refused, and the log says why
        assert decide("4.0.0.1") == 403 and decide("3.0.0.1") == 204  # the old one serves
        assert proc.poll() is None, log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
