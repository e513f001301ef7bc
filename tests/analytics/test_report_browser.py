"""The HTML impact report in a real browser: headless Chromium (Debian package) renders the
page from disk with no network and no scripts, and what a reader needs is on it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from regiongate.analytics.impact import replay
from regiongate.analytics.report import render_html
from regiongate.intel.snapshot import Snapshot
from regiongate.policy import load_policy
from tests.analytics.test_impact import CONFIG, LINES, write_jsonl

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def chromium(tmp_path: Path, *args: str) -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return result.stdout


def test_report_renders_in_chromium(tmp_path: Path, tiny_snapshot_path: Path) -> None:
    write_jsonl(tmp_path / "access.jsonl", [*LINES, ("2024-07-12T00:00:00Z", "4.0.0.3", None,
                                                     "<script>alert(1)</script>")])  # fmt: skip
    snap = Snapshot(tiny_snapshot_path)
    try:
        data = replay([str(tmp_path / "access.jsonl")], policy=load_policy("api-2024"),
                      snapshot=snap, client_ip=CONFIG).to_dict()  # fmt: skip
    finally:
        snap.close()
    page = tmp_path / "report.html"
    page.write_text(render_html(data), encoding="utf-8")
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert "Impact of api-2024@2024-07-09" in dom
    assert dom.count("<svg") == 2 and dom.count('class="block"') >= 1
    assert "org-cn" in dom and "CN 5" in dom
    assert "<script>" not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri())
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
